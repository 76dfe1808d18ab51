// Package control is baton's control socket: a unix stream socket, mode
// 0600, that accepts only root and baton's own uid (SO_PEERCRED). Each
// connection carries one request and one response, each a single line of
// JSON; a request may keep its connection open while the work it asked for
// runs, and the response comes when it ends.
//
// Protocol 2: a request that says "protocol": 2 is greeted, as soon as it
// is read, with a line carrying the server's pid and protocol (Hello);
// while the work it asked for runs, a line saying "working" comes every
// HeartbeatInterval (but for an upgrade, whose connection the new image
// answers); then the response. Every line a protocol 2 server sends carries
// its pid, so a client checks that the process serving the socket
// (SO_PEERCRED) is the one that answered. A request without "protocol" (an
// older client's) gets the response line alone, as protocol 1 had it; an
// older server refuses the field as unknown, without acting on the request.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MaxLine bounds a request or response line.
const MaxLine = 1 << 20

// Protocol is the version of the control protocol this package speaks.
const Protocol = 2

// HeartbeatInterval is how often a protocol 2 server says it is still
// working on a request.
const HeartbeatInterval = 5 * time.Second

// Commands a client may send.
const (
	CmdStatus = "status"
	// CmdReload asks for a rollout; the response comes when it has ended,
	// with Error set when it was aborted.
	CmdReload = "reload"
	// CmdAwaitReload waits for the rollout a reload signal (SIGHUP) started,
	// or for the next one, without asking for one: ExecReload= of a
	// Type=notify-reload unit, which systemd runs right after the signal.
	CmdAwaitReload = "await-reload"
	// CmdScale asks for a number of workers (Request.Workers): a rollout
	// that adds or removes slots; the response comes when it has ended.
	CmdScale = "scale"
	// CmdRecycle asks for one worker (Request.Slot) or every one in turn
	// (Request.All) to be replaced gracefully in the serving generation;
	// the response comes when it has ended.
	CmdRecycle = "recycle"
	// CmdRollback asks for a rollout of the previous generation's pinned
	// settings; the response comes when it has ended.
	CmdRollback = "rollback"
	// CmdUpgrade asks baton to re-execute its binary in place. The
	// connection is handed to the new image, which answers on it.
	CmdUpgrade = "upgrade"
	// CmdStop asks baton to stop as SIGTERM does: STOPPING=1, the lame
	// duck if set, then the drain; one during the lame duck cuts it short,
	// one more kills every worker. The response (Stopping) comes at once: a
	// process cannot answer once it has exited, so the client waits for
	// that itself (Stop in client.go).
	CmdStop = "stop"
)

// Request is what a client asks.
type Request struct {
	Command string `json:"command"`
	// Protocol is the client's protocol version; 0 (absent) is protocol 1.
	Protocol int  `json:"protocol,omitempty"`
	Workers  int  `json:"workers,omitempty"` // CmdScale: how many
	Slot     int  `json:"slot,omitempty"`    // CmdRecycle: which slot, unless All
	All      bool `json:"all,omitempty"`     // CmdRecycle: every slot, one at a time
}

// ErrBusy marks a refusal that will pass: baton is starting, rolling out
// or already upgrading. A client may ask again later (Response.Busy).
var ErrBusy = errors.New("busy, try again later")

// Response is one line from the server: the greeting (Hello), a heartbeat
// (Working) or the answer. In the answer, Error is set when the request
// failed, and Busy when it was refused only for now (ErrBusy).
type Response struct {
	// PID is the server's pid, on every line since protocol 2.
	PID      int       `json:"pid,omitempty"`
	Hello    *Hello    `json:"hello,omitempty"`
	Working  bool      `json:"working,omitempty"`
	Error    string    `json:"error,omitempty"`
	Busy     bool      `json:"busy,omitempty"`
	Status   *Status   `json:"status,omitempty"`
	Rollout  *Rollout  `json:"rollout,omitempty"`
	Upgrade  *Upgrade  `json:"upgrade,omitempty"`
	Stopping *Stopping `json:"stopping,omitempty"`
}

// Hello greets a protocol 2 request as soon as the server has read it.
type Hello struct {
	Protocol int `json:"protocol"` // the server's protocol version
}

// Stopping is baton's answer to a stop request.
type Stopping struct {
	PID int `json:"pid"`
	// Doing says what the stop does now: "lame duck for 10s while 4
	// workers serve, then they drain", "4 workers drain (drain timeout
	// 30s)", "killing 4 workers".
	Doing string `json:"doing"`
}

// Upgrade is the result of an in-place upgrade, told by the new image.
type Upgrade struct {
	PID             int    `json:"pid"`
	Exe             string `json:"exe"`
	Version         string `json:"version"`
	HandoffProtocol int    `json:"handoff_protocol"`
	Workers         int    `json:"workers"` // adopted
}

// Rollout is a rollout in progress or ended.
type Rollout struct {
	// Kind is "reload" (a new generation, perhaps of another size),
	// "scale" (only the number of workers changes), "rollback" (a new
	// generation of the previous one's settings, RollbackOf) or "recycle"
	// (workers replaced in the serving generation, for Reason).
	Kind       string `json:"kind"`
	RollbackOf int    `json:"rollback_of,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Replaced lists, for a recycle, each worker replaced and its successor.
	Replaced []Replacement `json:"replaced,omitempty"`
	From     int           `json:"from"` // the generation serving when it began
	To       int           `json:"to"`   // the generation rolled out; 0 if none was made
	// State is checking, rolling, canary or rolling back while it runs,
	// then ok, failed, or RolloutStopped.
	State string `json:"state"`
	Moved int    `json:"moved"` // slots moved to the new generation
	Slots int    `json:"slots"` // slots it moves
	// Workers is the number of slots it ends with when ok, WorkersFrom the
	// number it began with (0 until it began rolling).
	Workers     int    `json:"workers"`
	WorkersFrom int    `json:"workers_from"`
	Error       string `json:"error,omitempty"`
	// Changes says what the new generation's pinned settings change
	// (directory, command, environment keys; never a value).
	Changes         []string  `json:"changes,omitempty"`
	Started         time.Time `json:"started"`
	DurationSeconds float64   `json:"duration_seconds"`
}

// RolloutStopped is the State of a rollout that baton's stop ended before
// it could: the slots it had moved serve the new generation until every
// worker drains, the others the old one. Neither generation "still serves".
const RolloutStopped = "stopped"

// Status is the supervisor's state as `baton status --json` prints it.
type Status struct {
	PID     int       `json:"pid"`
	Exe     string    `json:"exe"`     // the binary this image runs
	Version string    `json:"version"` // baton's version
	Started time.Time `json:"started"` // when this image started (a re-exec starts a new one)
	// ProcessStarted is when baton's process started, before any in-place
	// upgrade: what its CPU time is counted from.
	ProcessStarted time.Time `json:"process_started"`
	// ExeReplaced: the binary this image runs was replaced or removed on
	// disk since it started (a package upgrade): `baton upgrade` runs the
	// new one in place.
	ExeReplaced bool `json:"exe_replaced"`
	// SignalRelay is how this image carries the signals sent while it
	// re-executes itself in place, as its build allows (package sigrelay).
	SignalRelay SignalRelay `json:"signal_relay"`
	State       string      `json:"state"` // starting, ready, stopping
	// LameDuckSeconds is, while stopping with --lame-duck, how long every
	// worker still serves before they drain.
	LameDuckSeconds float64 `json:"lame_duck_seconds,omitempty"`
	Generation      int     `json:"generation"`
	Slots           int     `json:"slots"`
	Ready           int     `json:"ready"`
	// Workers holds one entry per slot, in slot order; a slot waiting for a
	// crash restart has PID 0 and state "restarting".
	Workers   []Worker   `json:"workers"`
	Draining  []Worker   `json:"draining"`
	Incoming  []Worker   `json:"incoming"` // new workers a rollout is bringing up
	Listeners []Listener `json:"listeners"`
	// Generations are the pinned settings of the serving generation
	// (first), of the previous one (what `baton rollback` rolls out) and
	// of any other that still has workers (draining, incoming).
	Generations []Generation `json:"generations"`
	Crashes     int          `json:"crashes"` // within the crash-limit window
	// RecycleMemoryBytes is --recycle-memory (0: off), RecycleAfterSeconds
	// --recycle-after (0: off).
	RecycleMemoryBytes  uint64  `json:"recycle_memory_bytes"`
	RecycleAfterSeconds float64 `json:"recycle_after_seconds"`
	// What baton itself costs, as for a worker (its own process only).
	CPUPercent float64 `json:"cpu_percent"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSBytes   uint64  `json:"rss_bytes"`
	// Totals count what happened since the service started.
	Totals Totals `json:"totals"`
	// Rollout is the rollout in progress; LastRollout the last one ended.
	Rollout     *Rollout `json:"rollout,omitempty"`
	LastRollout *Rollout `json:"last_rollout,omitempty"`
}

// SignalRelay is what the signal relay covers in the running image.
type SignalRelay struct {
	Mode string `json:"mode"`
	// Protected: no signal sent during an in-place upgrade kills baton;
	// when false, Mode says which can.
	Protected bool `json:"protected"`
}

// Worker is one worker process.
type Worker struct {
	Slot          int     `json:"slot"`
	PID           int     `json:"pid"`
	Generation    int     `json:"generation"`
	State         string  `json:"state"` // starting, ready, draining, restarting
	UptimeSeconds float64 `json:"uptime_seconds"`
	Restarts      int     `json:"restarts"`
	Status        string  `json:"status,omitempty"` // the worker's own STATUS=
	// Error is why baton could not start a worker in this slot (a fork or
	// pipe failure of its own, such as EMFILE), while it waits to retry.
	Error    string     `json:"error,omitempty"`
	Deadline *time.Time `json:"deadline,omitempty"` // when a draining worker is killed
	// Recycles counts the workers of this slot replaced by recycling.
	Recycles int `json:"recycles"`
	// MemoryBytes is the worker's tree's memory as --recycle-memory last
	// measured it (0: not measured): its PSS, or, while its RSS (never
	// less) is below the ceiling, that RSS. AboveCeiling: it replaced a
	// worker recycled by memory and crossed the ceiling within its warm-up
	// (a minute after ready), so recycling does not help: it is above the
	// ceiling and its slot backs off.
	MemoryBytes  uint64 `json:"memory_bytes,omitempty"`
	AboveCeiling bool   `json:"above_ceiling,omitempty"`
	// RecycleHeld is why the slot is not recycled automatically before
	// RecycleHeldUntil, by memory only when RecycleHeldMemoryOnly (its
	// recycles by age go on), else by memory or age; empty when it is not
	// held.
	RecycleHeld           string     `json:"recycle_held,omitempty"`
	RecycleHeldUntil      *time.Time `json:"recycle_held_until,omitempty"`
	RecycleHeldMemoryOnly bool       `json:"recycle_held_memory_only,omitempty"`
	// What it costs, read from /proc: CPU in percent of one core since an
	// earlier status (at least 1 s before; at first since it started), of
	// the worker and every process it started; resident memory of the
	// worker itself and of that whole tree (a pre-fork server's master and
	// its children), and how many processes the tree has. CPUSeconds is
	// the CPU time the tree's live processes have used (a counter).
	CPUPercent   float64 `json:"cpu_percent"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	RSSBytes     uint64  `json:"rss_bytes"`
	TreeRSSBytes uint64  `json:"tree_rss_bytes"`
	Processes    int     `json:"processes"`
}

// Replacement is a worker a recycle replaced: PID by Successor in Slot.
type Replacement struct {
	Slot      int `json:"slot"`
	PID       int `json:"pid"`
	Successor int `json:"successor"`
}

// Generation is what a generation's workers are started with, as pinned
// when it was made. The environment shows as its keys and a digest, never
// its values.
type Generation struct {
	Generation int `json:"generation"`
	// Role is serving, previous, incoming or draining.
	Role      string   `json:"role"`
	Directory string   `json:"directory"`
	Command   []string `json:"command"`
	// EnvDigest is a digest of the KEY=VALUE pairs baton adds (empty:
	// none): equal digests, equal environments.
	EnvDigest string   `json:"env_digest"`
	EnvKeys   []string `json:"env_keys"`
}

// Listener is one listening socket that workers get.
type Listener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Source is "systemd" for a socket from a .socket unit, "fd store" for
	// one baton opened earlier and got back from systemd's FD store, and
	// "listen" for one this baton opened for --listen.
	Source string `json:"source"`
	// Listening is SO_ACCEPTCONN as baton last checked it; Error says why
	// a listener that stopped could not listen again.
	Listening bool   `json:"listening"`
	Error     string `json:"error,omitempty"`
	// NonBlocking is O_NONBLOCK on the socket's open file description,
	// which every worker shares: Go, Node and asyncio servers set it.
	NonBlocking bool `json:"nonblocking"`
	// Backlog is a TCP listener's accept queue (0: not known); Changes
	// says what workers did to the socket (its queue, its blocking mode),
	// naming the worker that had just become ready, the last few.
	Backlog int      `json:"backlog,omitempty"`
	Changes []string `json:"changes,omitempty"`
}

// ParseRequest decodes one request line. Unknown fields are rejected so
// that a newer client's request is never half-understood.
func ParseRequest(line []byte) (Request, error) {
	var r Request
	if err := decodeStrict(line, &r); err != nil {
		return Request{}, fmt.Errorf("control request: %w", err)
	}
	switch {
	case r.Command == "":
		return Request{}, errors.New("control request: no command")
	case r.Protocol < 0:
		return Request{}, fmt.Errorf("control request: protocol %d: want 1 or more", r.Protocol)
	case r.Command == CmdScale && r.Workers < 1:
		return Request{}, fmt.Errorf("control request: scale to %d workers: want 1 or more", r.Workers)
	case r.Command != CmdScale && r.Workers != 0:
		return Request{}, fmt.Errorf("control request: workers is for %q only, not %q", CmdScale, r.Command)
	case r.Command != CmdRecycle && (r.Slot != 0 || r.All):
		return Request{}, fmt.Errorf("control request: slot and all are for %q only, not %q", CmdRecycle, r.Command)
	case r.Slot < 0 || r.All && r.Slot != 0:
		return Request{}, fmt.Errorf("control request: recycle slot %d (all: %v): want a slot (0 or more) or all", r.Slot, r.All)
	}
	return r, nil
}

func decodeStrict(line []byte, v any) error {
	if len(line) > MaxLine {
		return fmt.Errorf("line of %d bytes: more than %d", len(line), MaxLine)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
