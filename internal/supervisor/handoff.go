package supervisor

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/fds"
	"github.com/batonsd/baton/internal/worker"
	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/internal/sigrelay"
)

// An in-place upgrade (SIGUSR2, `baton upgrade`) re-executes the binary now
// on disk in this same process: the pid stays, so systemd sees nothing and
// the workers stay our children. The state goes to the new image as JSON in
// a memfd named by BATON_HANDOFF_FD; every fd it names (listeners, each
// worker's notify socket and output pipes, the upgrade caller's connection)
// is a duplicate made without close-on-exec, so nothing else crosses.

// handoffEnv names the memfd holding the state in the new image's
// environment.
const handoffEnv = "BATON_HANDOFF_FD"

// HandoffProtocol is the version of the state a running baton hands to a
// re-executed one (handoffState). Any change to the state's shape bumps it:
// TestHandoffShapeIsTheProtocol fails otherwise.
//
// 2 added the control socket's listener and the signals caught during the
// exec. 3 hands over every slot and worker field that must survive (the
// *Kept structs, whole), the removed slots whose workers still drain, the
// CPU looks and the metrics listener. 4 adds to each slot why its automatic
// recycles are held back and its recycles by memory of the last hour. 5
// adds to each slot a hold of its recycles by memory alone, and why.
const HandoffProtocol = 5

// HandoffReads is the range of protocols this image reads. Both sides check
// it the same way: the running image asks the binary on disk for its range
// (`baton version`) before the exec, the new image checks the state's
// protocol against its own range after it. An older state is this one
// without some slot fields, read as olderSlots says.
var HandoffReads = ProtocolRange{Oldest: 3, Newest: HandoffProtocol}

// ProtocolRange is a range of handoff protocols, both ends included.
type ProtocolRange struct{ Oldest, Newest int }

// Reads says whether a state of protocol p can be read.
func (r ProtocolRange) Reads(p int) bool { return r.Oldest <= p && p <= r.Newest }

func (r ProtocolRange) String() string { return fmt.Sprintf("%d-%d", r.Oldest, r.Newest) }

// handoffState is everything that crosses an in-place upgrade. The
// Supervisor's, slots' and workers' own state travels whole (the *Kept
// structs); what is here besides is how they refer to each other and the
// fds. A decoder refuses unknown fields: a state it cannot read whole is
// not read at all.
type handoffState struct {
	Protocol int `json:"protocol"`
	supervisorKept
	Costs     costLooks         `json:"costs"`
	Listeners []handoffListener `json:"listeners"`
	Serving   int               `json:"serving"`
	// Previous is the generation `baton rollback` rolls out (0: none).
	Previous int          `json:"previous,omitempty"`
	Gens     []handoffGen `json:"gens"`
	// Slots are the serving slots in order, then the slots a scale down
	// removed whose workers still drain.
	Slots     []handoffSlot      `json:"slots"`
	Workers   []handoffWorker    `json:"workers"`
	ReplyFD   int                `json:"reply_fd"`   // the upgrade caller's connection, or -1
	ControlFD int                `json:"control_fd"` // the control socket's listener, or -1
	MetricsFD int                `json:"metrics_fd"` // the metrics endpoint's listener, or -1
	NotifyDir string             `json:"notify_dir"`
	Old       handoffPredecessor `json:"old"`
}

type handoffPredecessor struct {
	Exe     string `json:"exe"`
	Version string `json:"version"`
}

type handoffListener struct {
	FD     int    `json:"fd"`
	Name   string `json:"name"`
	Source string `json:"source"`
}

// handoffGen is a generation and what its workers were started with.
type handoffGen struct {
	Gen int `json:"gen"`
	GenSettings
}

type handoffSlot struct {
	slotKept
	Gen int `json:"gen"`
	PID int `json:"pid"` // its serving worker, 0 if waiting for a restart
}

type handoffWorker struct {
	worker.Handoff
	procKept
	SlotAt int `json:"slot_at"` // its slot's place in handoffState.Slots
}

// Upgrade answers the control socket's upgrade request.
func (s *Supervisor) Upgrade(ctx context.Context, conn *net.UnixConn) error {
	err, askErr := ask(ctx, s, func(reply chan<- error) { s.requestUpgrade(conn, reply) })
	return cmp.Or(askErr, err)
}

// requestUpgrade checks the binary on disk speaks our handoff protocol,
// then re-executes it. reply, if not nil, gets why it did not happen.
func (s *Supervisor) requestUpgrade(conn *net.UnixConn, reply chan<- error) {
	fail := func(err error) {
		s.upgrading = false
		s.log.Error("upgrade refused", "err", err)
		if reply != nil {
			reply <- err
		}
		s.soon(s.convergeSlots)
		s.soon(s.nextRecycle) // recycles asked for meanwhile waited for it
	}
	// blocked fails the upgrade if something is in its way; one a signal
	// asked for, which has nobody to tell "try later", waits for the rollout
	// (or the start) to end instead.
	blocked := func() bool {
		err := s.upgradeBlocker()
		switch {
		case err == nil:
			return false
		case reply == nil && !s.leaving():
			s.upgrading = false
			s.log.Info("upgrade deferred until the rollout or start has ended", "reason", err)
			s.upgradeDeferred = true
		default:
			fail(err)
		}
		return true
	}
	if s.upgrading {
		// The one on its way execs the binary on disk, as this one would.
		if reply != nil {
			reply <- fmt.Errorf("an upgrade is already in progress (%w)", control.ErrBusy)
		}
		s.log.Info("upgrade requested while one is in progress: joined it")
		return
	}
	if blocked() {
		return
	}
	s.upgrading = true
	s.log.Info("upgrade requested: asking the binary on disk for its handoff protocol", "exe", s.exe)
	s.runHelper([]string{s.exe, "version"}, "/", s.baseEnv, 10*time.Second, func(ok bool, out string) {
		if !ok {
			fail(fmt.Errorf("%s version: %s", s.exe, out))
			return
		}
		proto, reads, err := parseHandoffProtocol(out)
		switch {
		case err != nil:
			fail(fmt.Errorf("%s version: %w", s.exe, err))
			return
		case !reads.Reads(HandoffProtocol):
			fail(fmt.Errorf("%s speaks state-handoff protocol %d (reads %s), this baton hands over %d: it cannot take over in place; "+
				"run systemctl restart instead (the FD store keeps the sockets)", s.exe, proto, reads, HandoffProtocol))
			return
		}
		// Workers reaped, their output not read to its end: their pipes
		// close at the exec, so give them outputGrace first.
		s.afterOutputOf(slices.Clone(s.exited), func() {
			if blocked() { // things may have moved meanwhile
				return
			}
			fail(s.reexec(conn))
		})
	})
}

// runDeferredUpgrade runs an upgrade a signal asked for while a rollout or
// the start was in progress, once that has ended.
func (s *Supervisor) runDeferredUpgrade() {
	if s.upgradeDeferred && s.upgradeBlocker() == nil {
		s.upgradeDeferred = false
		s.soon(func() { s.requestUpgrade(nil, nil) })
	}
}

func (s *Supervisor) upgradeBlocker() error {
	switch {
	case s.leaving():
		return errors.New("baton is stopping")
	case s.rollout != nil:
		return fmt.Errorf("a rollout is in progress: upgrade when it has ended (%w)", control.ErrBusy)
	case !s.ReadySent:
		return fmt.Errorf("baton is still starting (%w)", control.ErrBusy)
	}
	return nil
}

// afterOutputOf calls f on the loop once the output of every process in ps
// is read to its end or, at the latest, after outputGrace; then the output
// of those not done is closed (its lines cut).
func (s *Supervisor) afterOutputOf(ps []process, f func()) {
	dones := make([]<-chan struct{}, len(ps))
	for i, p := range ps {
		dones[i] = p.Done()
	}
	s.world.watch(dones, outputGrace, func(expired bool) {
		s.post(func() {
			if expired {
				for _, p := range ps {
					p.CloseOutput()
				}
			}
			f()
		})
	})
}

// parseHandoffProtocol reads `baton version`'s handoff lines: the protocol
// the binary speaks and the range it reads ("handoff-reads 3-3"; without
// that line, as before protocol 3, just the protocol).
func parseHandoffProtocol(out string) (int, ProtocolRange, error) {
	proto, reads := 0, ProtocolRange{}
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "handoff-protocol "); ok {
			p, err := strconv.Atoi(v)
			if err != nil {
				return 0, reads, fmt.Errorf("handoff-protocol %q: %w", v, err)
			}
			proto = p
		}
		if v, ok := strings.CutPrefix(line, "handoff-reads "); ok {
			if _, err := fmt.Sscanf(v, "%d-%d", &reads.Oldest, &reads.Newest); err != nil {
				return 0, reads, fmt.Errorf("handoff-reads %q: %w", v, err)
			}
		}
	}
	switch {
	case proto == 0:
		return 0, reads, fmt.Errorf("no handoff-protocol line in %q", out)
	case reads == ProtocolRange{}:
		reads = ProtocolRange{proto, proto}
	}
	return proto, reads, nil
}

// reexec hands the state over and execs; it returns only on failure, having
// closed what it made, and the old image goes on as before.
func (s *Supervisor) reexec(conn *net.UnixConn) error {
	st, made, err := s.handoffState(conn)
	if err == nil {
		err = s.world.exec(s, st)
	}
	for _, fd := range made {
		unix.Close(fd)
	}
	return err
}

// execState is the real world's exec: the state goes into a memfd named in
// the new image's environment, the signals into the relay, and the binary
// on disk is exec'd in place. It returns only when the exec failed.
func (s *Supervisor) execState(st handoffState) error {
	mfd, err := unix.MemfdCreate("baton-handoff", 0)
	if err != nil {
		return fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(mfd), "handoff")
	defer f.Close() // reached only when the exec failed
	environ := s.world.environ()
	env := make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		// The sockets come in the state now; a stale LISTEN_FDS would name fds
		// that are gone.
		if !strings.HasPrefix(kv, "LISTEN_") && !strings.HasPrefix(kv, handoffEnv+"=") && !strings.HasPrefix(kv, sigrelay.Env+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, fmt.Sprintf("%s=%d", handoffEnv, mfd))
	s.pingSystemd() // before and after: the exec must not look like a hang
	s.log.Info("re-executing in place", "exe", s.exe, "workers", len(st.Workers))
	if err := writeState(f, st); err != nil {
		return err
	}
	// Last, the signals: from here on they go to the relay (signals.go).
	relay, err := sigrelay.Open()
	if err != nil {
		return err
	}
	s.holdSignals(relay)
	env = append(env, relay.Export())
	// This runs on the loop's thread, the main thread: the workers' parent-
	// death signal is tied to the thread that forked them, and execve keeps
	// the calling thread.
	err = syscall.Exec(s.exe, os.Args, env)
	s.releaseSignals(relay)
	return fmt.Errorf("exec %s: %w; the running baton goes on", s.exe, err)
}

func writeState(f *os.File, st handoffState) error {
	if err := json.NewEncoder(f).Encode(st); err != nil {
		return fmt.Errorf("write handoff state: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("write handoff state: %w", err)
	}
	return nil
}

// handoffState builds the state and duplicates the fds it names.
func (s *Supervisor) handoffState(conn *net.UnixConn) (handoffState, []int, error) {
	var made []int
	st := handoffState{
		Protocol: HandoffProtocol, supervisorKept: s.supervisorKept, Costs: s.costs.handOver(),
		Serving: s.serving.gen, NotifyDir: s.notifyDir, ReplyFD: -1, ControlFD: -1, MetricsFD: -1,
		Old: handoffPredecessor{Exe: s.exe, Version: s.cfg.Version},
	}
	// keep records each fd made, for closing them if the exec fails.
	keep := func(fd int, err error) (int, error) {
		if err == nil {
			made = append(made, fd)
		}
		return fd, err
	}
	for _, l := range s.listeners {
		fd, err := keep(fds.Dup(l.FD()))
		if err != nil {
			return st, made, fmt.Errorf("hand off listener %s: %w", l.Name, err)
		}
		st.Listeners = append(st.Listeners, handoffListener{FD: fd, Name: l.Name, Source: s.source[l]})
	}
	gens := map[int]*genSpec{s.serving.gen: s.serving}
	if s.previous != nil {
		gens[s.previous.gen] = s.previous
		st.Previous = s.previous.gen
	}
	at := map[*slot]int{}
	addSlot := func(sl *slot) {
		if _, ok := at[sl]; ok {
			return
		}
		at[sl] = len(st.Slots)
		gens[sl.spec.gen] = sl.spec
		pid := 0
		if sl.w != nil {
			pid = sl.w.pid
		}
		st.Slots = append(st.Slots, handoffSlot{slotKept: sl.slotKept, Gen: sl.spec.gen, PID: pid})
	}
	for _, sl := range s.slots {
		addSlot(sl)
	}
	for _, w := range s.workers {
		addSlot(w.slot) // a removed slot whose worker drains
		gens[w.spec.gen] = w.spec
		h, err := w.p.Handoff()
		if err != nil {
			return st, made, err
		}
		made = append(made, h.NotifyFD)
		made = append(made, h.OutputFDs...)
		st.Workers = append(st.Workers, handoffWorker{Handoff: h, procKept: w.procKept, SlotAt: at[w.slot]})
	}
	for _, g := range gens {
		st.Gens = append(st.Gens, handoffGen{Gen: g.gen, GenSettings: g.cfg.GenSettings})
	}
	if s.ctl != nil {
		fd, err := s.ctl.Dup()
		if err != nil {
			return st, made, fmt.Errorf("hand off the control socket: %w", err)
		}
		made = append(made, fd)
		st.ControlFD = fd
	}
	if s.metricsLn != nil {
		var err error
		if st.MetricsFD, err = keep(fds.DupConn(s.metricsLn)); err != nil {
			return st, made, fmt.Errorf("hand off the metrics listener: %w", err)
		}
	}
	if conn != nil {
		var err error
		if st.ReplyFD, err = keep(fds.DupConn(conn)); err != nil {
			return st, made, fmt.Errorf("hand off the caller's connection: %w", err)
		}
	}
	return st, made, nil
}

// readHandoff reads the state a previous image left, if this image is the
// result of an in-place upgrade.
func readHandoff(getenv func(string) string) (*handoffState, error) {
	v := getenv(handoffEnv)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(handoffEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: not an fd", handoffEnv, v)
	}
	f := os.NewFile(uintptr(fd), "handoff")
	defer f.Close()
	return decodeState(bufio.NewReader(f))
}

// decodeState reads a state whole: an unknown field, a protocol outside
// HandoffReads or trailing data is an error, not a partial adoption.
func decodeState(r io.Reader) (*handoffState, error) {
	var st handoffState
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("read handoff state: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("read handoff state: more after the state")
	}
	if !HandoffReads.Reads(st.Protocol) {
		return nil, fmt.Errorf("handoff state of protocol %d, this baton reads %s", st.Protocol, HandoffReads)
	}
	st.olderSlots(time.Now())
	return &st, nil
}

// heldBeforeUpgrade is the reason status gives for a hold a protocol-3
// image set, which did not say why.
const heldBeforeUpgrade = "held back before the upgrade (the baton before it did not say why)"

// olderSlots reads the slots of a state older than protocol 5 as this
// image keeps them. A protocol-3 state says no reason for a hold, and
// counts no recycle by memory in the last hour: a hold still to come is
// given heldBeforeUpgrade as its reason, so that status shows it and its
// end is logged. Before protocol 5 one hold held recycles by memory and
// by age alike: a hold while no recycle of the slot has failed since its
// last one (RecycleRetry 0) was held by memory, and becomes a hold of
// recycles by memory alone; any other is kept as it was.
func (st *handoffState) olderSlots(now time.Time) {
	if st.Protocol >= 5 {
		return
	}
	for i := range st.Slots {
		sl := &st.Slots[i]
		if !now.Before(sl.RecycleHold) {
			continue
		}
		if sl.HoldWhy == "" {
			sl.HoldWhy = heldBeforeUpgrade
		}
		if sl.RecycleRetry == 0 {
			sl.MemHold, sl.MemHoldWhy = sl.RecycleHold, sl.HoldWhy
			sl.RecycleHold, sl.HoldWhy = time.Time{}, ""
		}
	}
}

// adopt rebuilds the supervisor from a previous image's state: listeners,
// generations, slots and workers, with their timers re-armed.
func (s *Supervisor) adopt(st *handoffState) error {
	for _, hl := range st.Listeners {
		l, err := activation.NewListener(hl.FD, hl.Name)
		if err != nil {
			return fmt.Errorf("adopt listener %s: %w", hl.Name, err)
		}
		s.listeners = append(s.listeners, l)
		s.source[l] = hl.Source
	}
	gens := map[int]*genSpec{}
	for _, g := range st.Gens {
		cfg := s.cfg // this image's process settings, the generation's own
		cfg.GenSettings = g.GenSettings
		gens[g.Gen] = &genSpec{gen: g.Gen, cfg: cfg}
	}
	s.serving, s.previous = gens[st.Serving], gens[st.Previous]
	s.supervisorKept = st.supervisorKept
	s.costs.costLooks = st.Costs
	all := make([]*slot, len(st.Slots))
	for i, hs := range st.Slots {
		all[i] = &slot{slotKept: hs.slotKept, spec: gens[hs.Gen]}
		if !hs.Removed {
			s.slots = append(s.slots, all[i])
		}
	}
	for _, hw := range st.Workers {
		sl, spec := all[hw.SlotAt], gens[hw.Generation]
		p, err := s.world.adoptWorker(hw.Handoff, worker.Spec{Output: s.cfg.Output, OnNotify: s.onNotifyFunc(), Logger: s.log})
		if err != nil {
			// A worker we cannot watch must not run unsupervised.
			s.log.Error("cannot adopt worker: killing it", "slot", hw.Slot, "pid", hw.PID, "err", err)
			s.world.kill(-hw.PID, unix.SIGKILL) // its exit is reaped and handled as a crash
			continue
		}
		w := newProc(p, sl, spec)
		w.procKept = hw.procKept
		s.workers[w.pid] = w
		if st.Slots[hw.SlotAt].PID == hw.PID {
			sl.w = w
		}
		if w.PendingSig != 0 {
			s.signal(w, w.PendingSig) // the old image was waiting for its exec, long done
		}
		switch w.State {
		case stateStarting:
			s.awaitReady(w)
		case stateReady:
			s.armWatchdog(w) // the interval starts over from the re-exec
		case stateDraining:
			s.armDrainDeadline(w)
		}
	}
	for _, sl := range s.slots {
		if sl.w == nil {
			// Its restart was waiting in the old image, which doubled the
			// backoff already.
			backoff := sl.Backoff
			s.scheduleStart(sl)
			sl.Backoff = backoff
		}
	}
	s.log.Info("re-executed in place: workers adopted", "exe", s.exe, "version", s.cfg.Version,
		"from_exe", st.Old.Exe, "from_version", st.Old.Version, "workers", len(s.workers), "gen", s.serving.gen)
	if st.ReplyFD >= 0 {
		s.answerUpgrade(st.ReplyFD)
	}
	sigs, err := s.world.relayed()
	if err != nil {
		s.log.Warn("signals sent during the re-exec may be lost", "err", err)
	}
	s.actOn(sigs)
	s.soon(s.convergeSlots) // a slot the old image had still to bring back
	return nil
}

// answerUpgrade tells the `baton upgrade` caller, on the connection the old
// image handed over, that this image has taken over.
func (s *Supervisor) answerUpgrade(fd int) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "upgrade-caller")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		s.log.Warn("upgrade caller's connection", "err", err)
		return
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	resp := control.Response{PID: os.Getpid(), Upgrade: &control.Upgrade{PID: os.Getpid(), Exe: s.exe, Version: s.cfg.Version,
		HandoffProtocol: HandoffProtocol, Workers: len(s.workers)}}
	if err := json.NewEncoder(c).Encode(resp); err != nil {
		s.log.Warn("upgrade caller gone before the answer", "err", err)
	}
}
