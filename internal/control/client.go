package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrRefused is returned when baton answered with an error (one that is not
// shown to be baton's is ErrNotBaton instead).
var ErrRefused = errors.New("refused by baton")

// ErrNotBaton: what serves the control socket did not answer as baton does
// (no greeting in time, a line that is not baton's, or another pid than
// the socket's server), or the path is not a socket at all.
var ErrNotBaton = errors.New("not baton")

// ErrNotRunning: nothing serves the control socket, so no baton runs with
// it: it has stopped already, or never ran with this --control.
var ErrNotRunning = errors.New("no baton serves this control socket")

// How long a client waits. The greeting comes as soon as baton has read the
// request, from the connection's own goroutine; a rollout's answer comes
// when it ends, however long that is (each new worker has --ready-timeout),
// so it is bounded by baton's heartbeats instead: silence for that long
// means baton is gone or stuck. An older baton (protocol 1) sends neither,
// so its rollouts have a long deadline.
var limits = struct {
	greeting  time.Duration // the greeting, after the request is sent
	silence   time.Duration // between lines while a rollout runs
	status    time.Duration // the answer to status, after the greeting
	stop      time.Duration // the answer to stop (not the exit it waits for)
	upgrade   time.Duration // the new image's answer to upgrade
	rolloutV1 time.Duration // a rollout's answer from an older baton
}{
	greeting:  10 * time.Second,
	silence:   6 * HeartbeatInterval,
	status:    10 * time.Second,
	stop:      10 * time.Second,
	upgrade:   time.Minute,
	rolloutV1: time.Hour,
}

// UpgradeLimit is the longest Call waits for an upgrade: the greeting,
// then the new image's answer. An upgrade is never sent twice, so a caller
// that bounds the call must allow at least this.
func UpgradeLimit() time.Duration { return limits.greeting + limits.upgrade }

// answerTimeout is how long the answer to a request may take after the
// greeting (after the request, from an older baton); 0: as long as
// heartbeats come.
func answerTimeout(req Request) time.Duration {
	switch req.Command {
	case CmdStatus:
		return limits.status
	case CmdStop:
		return limits.stop
	case CmdUpgrade:
		return limits.upgrade
	}
	if req.Protocol < 2 {
		return limits.rolloutV1
	}
	return 0
}

// Call sends req to the control socket at path and returns baton's answer.
// ctx bounds the whole exchange; within it each request has the deadlines
// of limits, and the answer counts only from the process that serves the
// socket, greeted as baton with its own pid.
//
// A connection that baton closes before answering was accepted by an image
// that then re-executed (baton upgrade): the request was never acted on,
// since the loop that would act on it was busy with the exec, so it is sent
// again, to the new image, a few times, and only while the socket's server
// has the pid that greeted it (a re-exec keeps the pid; a baton restarted
// after a crash does not). Never a request baton said it works on, which its
// loop had; and never the upgrade request itself, which is handed over to
// the new image.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	resp, _, err := callOn(ctx, path, req, nil)
	return resp, err
}

// callOn is Call, with opened called with the server's pid on each
// connection before the request is sent. It returns the pid of the last
// server that proved to be baton (0: none did).
func callOn(ctx context.Context, path string, req Request, opened func(pid int) error) (Response, int, error) {
	if err := checkSocket(path); err != nil {
		return Response{}, 0, err
	}
	req.Protocol = Protocol
	resp, baton, err := retrying(ctx, path, req, opened)
	if !errors.Is(err, errOlder) {
		return resp, baton, err
	}
	// An older baton refused the protocol field and did nothing: ask as
	// protocol 1. Its answers to status, stop and upgrade carry its pid.
	req.Protocol = 0
	if !rollout(req.Command) {
		return retrying(ctx, path, req, opened)
	}
	// Its rollouts' answers do not: a status proves it baton first, and the
	// rollout's connection must be served by that same pid.
	_, want, err := retrying(ctx, path, Request{Command: CmdStatus}, nil)
	if err != nil {
		return Response{}, 0, fmt.Errorf("control socket %s speaks protocol 1 (an older baton?), and its status: %w", path, err)
	}
	same := func(pid int) error {
		if pid != want {
			return fmt.Errorf("served by pid %d, not by baton pid %d that answered the status: %w", pid, want, ErrNotBaton)
		}
		if opened != nil {
			return opened(pid)
		}
		return nil
	}
	resp, _, err = retrying(ctx, path, req, same)
	return resp, want, err
}

// retrying runs the exchange again while baton closes the connection
// unanswered, a few times; but never an upgrade, never a request baton
// said it works on (a "working" line: its loop had it, and may have acted
// on it), and, once baton greeted, only to that same pid: a re-exec keeps
// the pid, and a new process (baton restarted after a crash) never gets a
// request that its predecessor had, nor answers for it.
func retrying(ctx context.Context, path string, req Request, opened func(int) error) (Response, int, error) {
	baton, greeted := 0, 0
	same := func(pid int) error {
		if greeted != 0 && pid != greeted {
			return fmt.Errorf("baton pid %d went away before answering; pid %d serves the socket now, and was not asked", greeted, pid)
		}
		if opened != nil {
			return opened(pid)
		}
		return nil
	}
	for attempt := 1; ; attempt++ {
		resp, x, err := exchange(ctx, path, req, same)
		if x.baton {
			baton, greeted = x.pid, x.pid
		}
		if errors.Is(err, errUnanswered) && x.working {
			return resp, baton, fmt.Errorf("control socket %s: baton pid %d went away before answering %s: %w", path, x.pid, req.Command, errUnanswered)
		}
		if !errors.Is(err, errUnanswered) || req.Command == CmdUpgrade || attempt == 5 {
			switch {
			case errors.Is(err, errUnanswered) && baton == 0 && attempt > 1:
				err = fmt.Errorf("%w (%d times): %w", err, attempt, ErrNotBaton)
			case errors.Is(err, errUnanswered) && baton == 0:
				err = fmt.Errorf("%w: %w", err, ErrNotBaton)
			}
			return resp, baton, err
		}
		select {
		case <-time.After(20 * time.Millisecond * time.Duration(attempt)):
		case <-ctx.Done():
			return Response{}, baton, ctx.Err()
		}
	}
}

// errUnanswered: the connection closed before the answer: baton
// re-executing, or gone; or whatever serves the socket is not baton.
var errUnanswered = errors.New("closed the connection without an answer")

// errOlder: the first line answered a protocol 2 request with an error and
// no pid, as an older baton refuses the unknown field.
var errOlder = errors.New("an error without a pid: an older baton (protocol 1)?")

// peer is what one connection told of its server.
type peer struct {
	pid     int  // by SO_PEERCRED: the process that listens on the socket
	baton   bool // it greeted or answered as baton, with that pid
	working bool // it said it works on the request
}

// exchange sends req on one connection and reads the answer.
func exchange(ctx context.Context, path string, req Request, opened func(int) error) (Response, peer, error) {
	var x peer
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, x, fmt.Errorf("control socket %s: %w (is baton running with this --control?)", path, err)
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	cred, err := peerCred(c)
	if err != nil {
		return Response{}, x, fmt.Errorf("control socket %s: %w", path, err)
	}
	x.pid = int(cred.Pid)
	if opened != nil {
		if err := opened(x.pid); err != nil {
			return Response{}, x, fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// answerBy, once set, is when the answer must have come.
	var answerBy time.Time
	if req.Protocol < 2 {
		answerBy = time.Now().Add(answerTimeout(req))
		c.SetDeadline(answerBy)
	} else {
		c.SetDeadline(time.Now().Add(limits.greeting))
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		if ctx.Err() != nil {
			return Response{}, x, ctx.Err()
		}
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			err = errUnanswered // closed before it could even read the request
		}
		return Response{}, x, fmt.Errorf("control socket %s: pid %d: send: %w", path, x.pid, err)
	}
	br := bufio.NewReader(c)
	for {
		line, err := readLine(br)
		if err != nil {
			return Response{}, x, x.readErr(ctx, path, req, line, answerBy, err)
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			return Response{}, x, fmt.Errorf("control socket %s: pid %d answered %s, not as baton does: %w", path, x.pid, lineStart(line), ErrNotBaton)
		}
		if req.Protocol < 2 {
			resp, err := x.answerV1(path, req, resp, line)
			return resp, x, err
		}
		switch {
		case resp.PID == 0 && !x.baton && resp.Error != "" && resp.Hello == nil:
			return resp, x, errOlder
		case resp.PID == 0:
			return Response{}, x, fmt.Errorf("control socket %s: pid %d answered %s, without the pid baton sends: %w", path, x.pid, lineStart(line), ErrNotBaton)
		case !samePID(x.pid, resp.PID):
			return Response{}, x, fmt.Errorf("control socket %s: served by pid %d, answered by pid %d: %w", path, x.pid, resp.PID, ErrNotBaton)
		case resp.Hello != nil:
			x.baton = true
			if t := answerTimeout(req); t > 0 {
				answerBy = time.Now().Add(t)
			}
		case resp.Working:
			if !x.baton {
				return Response{}, x, fmt.Errorf("control socket %s: pid %d said it works before it greeted: %w", path, x.pid, ErrNotBaton)
			}
			x.working = true
		default:
			// The answer; baton refuses before its greeting a request it
			// cannot read, with its pid.
			x.baton = true
			resp, err := answered(resp)
			return resp, x, err
		}
		if answerBy.IsZero() {
			c.SetDeadline(time.Now().Add(limits.silence))
		} else {
			c.SetDeadline(answerBy)
		}
	}
}

// answerV1 checks a protocol 1 answer: the pid it carries, if any, must be
// the server's. An error carries none: it is believed as baton's only for a
// rollout, whose server callOn showed to be the pid that answered a status;
// else it is told as unverified (ErrNotBaton, not ErrRefused).
func (x *peer) answerV1(path string, req Request, resp Response, line []byte) (Response, error) {
	if resp.Error != "" {
		if rollout(req.Command) {
			return answered(resp)
		}
		return resp, refusal{msg: resp.Error, busy: resp.Busy, unverified: x.pid}
	}
	pid := 0
	switch {
	case resp.Status != nil:
		pid = resp.Status.PID
	case resp.Stopping != nil:
		pid = resp.Stopping.PID
	case resp.Upgrade != nil:
		pid = resp.Upgrade.PID
	case resp.Rollout != nil:
		return resp, nil // callOn checked the server's pid by a status
	default:
		return Response{}, fmt.Errorf("control socket %s: pid %d answered %s, not as baton does: %w", path, x.pid, lineStart(line), ErrNotBaton)
	}
	if !samePID(x.pid, pid) {
		return Response{}, fmt.Errorf("control socket %s: served by pid %d, answered by pid %d: %w", path, x.pid, pid, ErrNotBaton)
	}
	x.baton = true
	return resp, nil
}

// rollout reports whether command runs a rollout.
func rollout(command string) bool {
	switch command {
	case CmdStatus, CmdStop, CmdUpgrade:
		return false
	}
	return true
}

// readErr says why reading a line failed.
func (x peer) readErr(ctx context.Context, path string, req Request, line []byte, answerBy time.Time, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded) && !x.baton && req.Protocol >= 2:
		return fmt.Errorf("control socket %s: no greeting from pid %d in %s: %w", path, x.pid, limits.greeting, ErrNotBaton)
	case errors.Is(err, os.ErrDeadlineExceeded) && answerBy.IsZero():
		return fmt.Errorf("control socket %s: baton pid %d silent for %s while working on %s", path, x.pid, limits.silence, req.Command)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("control socket %s: no answer to %s from pid %d in %s", path, req.Command, x.pid, answerTimeout(req))
	case len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)):
		return fmt.Errorf("control socket %s: pid %d %w", path, x.pid, errUnanswered)
	}
	return fmt.Errorf("control socket %s: pid %d: %w", path, x.pid, err)
}

// answered turns an answer that holds an error into ErrRefused.
func answered(resp Response) (Response, error) {
	if resp.Error != "" {
		return resp, refusal{msg: resp.Error, busy: resp.Busy}
	}
	return resp, nil
}

// refusal is baton's refusal: ErrRefused, and ErrBusy too when it said so.
// Its text is baton's, which names ErrBusy already when busy; it is told
// through Printable, as every text the server sends. A refusal by pid
// unverified, one that did not show itself to be baton (a protocol 1
// answer), says so and is ErrNotBaton instead of ErrRefused (ErrBusy still,
// so that an older baton busy is asked again).
type refusal struct {
	msg        string
	busy       bool
	unverified int
}

func (r refusal) Error() string {
	if r.unverified != 0 {
		return fmt.Sprintf("refused by pid %d (an older baton? its answer is not verified): %s", r.unverified, Printable(r.msg))
	}
	return ErrRefused.Error() + ": " + Printable(r.msg)
}

func (r refusal) Is(target error) bool {
	if r.unverified != 0 {
		return target == ErrNotBaton || r.busy && target == ErrBusy
	}
	return target == ErrRefused || r.busy && target == ErrBusy
}

// lineStart is the start of a line a stranger sent, quoted, through
// Printable.
func lineStart(line []byte) string {
	const most = 64
	s := strings.TrimSuffix(string(line), "\n")
	if len(s) > most {
		return `"` + Printable(s[:most]) + `"...`
	}
	return `"` + Printable(s) + `"`
}

// checkSocket refuses a path that exists and is not a socket: connecting to
// one fails as to a socket nobody serves (ECONNREFUSED), which a stop would
// take for "stopped already". A path that does not exist is left to the
// connect, which says so.
func checkSocket(path string) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() == os.ModeSocket {
		return nil
	}
	return fmt.Errorf("control socket %s is %s, not a socket: %w", path, fileKind(fi.Mode()), ErrNotBaton)
}

// samePID reports whether answered, a pid the server gave in its own pid
// namespace, is peer, the pid SO_PEERCRED gave in this one: the same, or
// peer's innermost pid (its /proc status's NSpid) for a server in a
// container.
func samePID(peer, answered int) bool {
	if peer == answered {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(peer) + "/status")
	if err != nil {
		return false // gone, or not ours to see: not shown to be the same
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			return len(f) > 1 && f[len(f)-1] == strconv.Itoa(answered)
		}
	}
	return false
}

// Stop asks the baton serving path to stop (CmdStop) and returns once its
// process has exited, passing its answer, what the stop does, to told as
// soon as it comes. That is what ExecStop= must do: systemd signals what is
// left in the unit's cgroup as soon as ExecStop= returns, and under
// KillMode=control-group that is every worker, lame duck or not. A socket
// nobody serves is ErrNotRunning; a process that does not prove to be baton
// is an error, told nothing and never waited for.
func Stop(ctx context.Context, path string, told func(Stopping)) error {
	pid, pidfd := 0, -1
	defer func() {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	opened := func(p int) error {
		// Taken before the request goes: until then baton has no reason to
		// exit, so the pid names it and no process that came after it.
		if pidfd >= 0 {
			unix.Close(pidfd) // an earlier attempt's; the pid is the same across a re-exec
		}
		pid, pidfd = p, -1
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("%w: pid %d serving it has exited", ErrNotRunning, pid)
			}
			return fmt.Errorf("pidfd_open of pid %d: %w", pid, err)
		}
		pidfd = fd
		return nil
	}
	resp, baton, err := callOn(ctx, path, Request{Command: CmdStop}, opened)
	switch {
	case err != nil && baton != 0 && baton == pid && pidfd >= 0 && (errors.Is(err, errUnanswered) || gone(err)):
		// Baton greeted and went without answering: it is exiting (the
		// control socket closes first). Its exit is what was asked for.
		told(Stopping{PID: pid, Doing: "exiting"})
		return waitExit(ctx, pidfd)
	case gone(err):
		return fmt.Errorf("%w: %s", ErrNotRunning, path)
	case err != nil:
		return err
	case resp.Stopping == nil:
		return fmt.Errorf("control socket %s: no answer to stop: %w", path, ErrNotBaton)
	case !samePID(pid, resp.Stopping.PID):
		// The pidfd would name another process than the one stopping.
		return fmt.Errorf("control socket %s: served by pid %d, answered by pid %d: %w", path, pid, resp.Stopping.PID, ErrNotBaton)
	}
	told(*resp.Stopping)
	return waitExit(ctx, pidfd)
}

// gone reports whether err says nothing serves the control socket.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, ErrNotRunning)
}

// waitExit waits until the process of pidfd has exited: the pidfd polls
// readable then, for a process that is not our child too.
func waitExit(ctx context.Context, pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 100) // ms: how soon a cancel is seen
		switch {
		case err != nil && !errors.Is(err, unix.EINTR):
			return fmt.Errorf("poll pidfd: %w", err)
		case n > 0:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
}
