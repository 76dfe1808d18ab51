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
	err string // why it does not listen and could not be put back
}

// checkListeners reads every listener's state, puts back those that stopped
// listening, and logs what changed. It returns the problems left.
func (s *Supervisor) checkListeners() []string {
	var problems []string
	for _, l := range s.listeners {
		st, err := l.State()
		if err != nil {
			continue // a socket that cannot be asked is left to the workers' errors
		}
		prev, seen := s.sockets[l]
		next := sockState{SocketState: st}
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
		if seen && st.NonBlocking != prev.NonBlocking {
			if st.NonBlocking {
				// Info, not a warning: every Go, Node or asyncio worker does
				// it, and it matters only to a later blocking-accept server.
				s.log.Info("listener is now in non-blocking mode, set by a worker on the socket all share: a worker that accepts in blocking mode would get EAGAIN",
					"name", l.Name)
			} else {
				s.log.Info("listener is back in blocking mode", "name", l.Name)
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
