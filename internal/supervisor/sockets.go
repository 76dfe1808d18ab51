package supervisor

// Watching the shared sockets. Every copy of a listener is the same socket,
// so what one worker does to its copy, every worker and systemd see:
//
//   - shutdown() stops it listening, and every new connection is refused
//     while status used to say 4/4 ready. baton checks SO_ACCEPTCONN every
//     listenCheck and at the end of each rollout; a TCP socket is put back
//     with listen() (it keeps its address) and every worker is replaced, in
//     a rollout of the serving configuration (a worker's accept loop may
//     have ended when the socket went), and one that cannot
//     be is reported in status, STATUS= and the journal, and fails the
//     rollout that would otherwise claim success.
//   - O_NONBLOCK set by a Go, Node or asyncio worker stays set for the next
//     generation, whose blocking accept() would then fail with EAGAIN (and
//     spin, or crash). baton cannot own that flag, but it reports it in
//     status --json and logs when it changes.
//   - A worker's own listen() on its copy sets the accept queue for
//     everyone: hypercorn's listen(100) shrinks the 4096 systemd made. The
//     sockets are also checked each time a worker becomes ready, so that a
//     shrunk queue or a flipped flag is named with the worker that was
//     just started (the hygiene guard), in the journal and in status.

import (
	"fmt"
	"slices"
	"time"

	"github.com/batonsd/baton/activation"
)

// listenCheck is how often the listeners are checked.
const listenCheck = time.Second

// sockState is what baton last saw of a listener.
type sockState struct {
	activation.SocketState
	err     string   // why it does not listen and could not be put back
	changes []string // what workers did to it, the last maxChanges
}

// maxChanges bounds what status keeps of a listener's changes.
const maxChanges = 8

// checkListeners reads every listener's state, puts back those that stopped
// listening, and logs what changed. It returns the problems left.
func (s *Supervisor) checkListeners() []string { return s.checkListenersAfter(nil) }

// checkListenersAfter is checkListeners right after w became ready: a
// change is then told with w's name.
func (s *Supervisor) checkListenersAfter(w *proc) []string {
	var problems []string
	for _, l := range s.listeners {
		st, err := l.State()
		if err != nil {
			continue // a socket that cannot be asked is left to the workers' errors
		}
		prev, seen := s.sockets[l]
		next := sockState{SocketState: st, changes: prev.changes}
		if seen {
			next.changes = s.noteChanges(l, prev.SocketState, st, w, next.changes)
		}
		if !st.Listening {
			s.log.Error("listener stopped listening (did a worker call shutdown() on it?): listening again", "name", l.Name, "addr", l.Addr())
			if err := l.Relisten(); err != nil {
				next.err = err.Error()
				if prev.err == "" {
					s.log.Error("listener cannot listen again: new connections are refused", "name", l.Name, "err", err)
				}
			} else {
				next.Listening = true
				s.log.Info("listener listening again", "name", l.Name, "addr", l.Addr())
				// The workers' accept loops met the shut-down socket and
				// may have ended (a Go http.Server's Serve returns): new
				// workers, ready before the old ones drain, accept again.
				s.soon(func() { s.requestReplace("listener " + l.Name + " was shut down under the workers") })
			}
		}
		if next.err != "" {
			problems = append(problems, fmt.Sprintf("listener %s does not listen: %s", l.Name, next.err))
		}
		s.sockets[l] = next
	}
	if !slices.Equal(problems, s.socketProblems) {
		s.socketProblems = problems
		s.updateStatus()
	}
	return problems
}

// noteChanges logs what changed on l between was and now, naming w (the
// worker that just became ready) when there is one, and returns changes
// with them added.
func (s *Supervisor) noteChanges(l *activation.Listener, was, now activation.SocketState, w *proc, changes []string) []string {
	who := "a worker"
	var whom []any
	if w != nil {
		who = fmt.Sprintf("worker %d (pid %d, generation %d)", w.slot.Index, w.pid, w.spec.gen)
		whom = []any{"slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen}
	}
	note := func(what string) {
		changes = append(changes, fmt.Sprintf("%s: %s, after %s became ready", s.now().Format(time.RFC3339), what, who))
		if len(changes) > maxChanges {
			changes = changes[len(changes)-maxChanges:]
		}
	}
	if now.Backlog > 0 && was.Backlog > 0 && now.Backlog != was.Backlog {
		what := fmt.Sprintf("accept queue %d, was %d", now.Backlog, was.Backlog)
		note(what)
		args := append([]any{"name", l.Name, "backlog", now.Backlog, "was", was.Backlog}, whom...)
		if now.Backlog < was.Backlog {
			s.log.Warn("a worker shrank the accept queue of the socket all share (its own listen() on it): connections beyond it are refused or dropped under load", args...)
		} else {
			s.log.Info("the accept queue of the socket all share changed (a worker's own listen() on it)", args...)
		}
	}
	if now.NonBlocking != was.NonBlocking {
		args := append([]any{"name", l.Name}, whom...)
		if now.NonBlocking {
			note("set non-blocking")
			// Info, not a warning: every Go, Node or asyncio worker does it,
			// and it matters only to a later blocking-accept server.
			s.log.Info("listener is now in non-blocking mode, set by a worker on the socket all share: a worker that accepts in blocking mode would get EAGAIN", args...)
		} else {
			note("set blocking")
			s.log.Info("listener is back in blocking mode", args...)
		}
	}
	return changes
}
