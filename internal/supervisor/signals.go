package supervisor

// Signals across an in-place re-exec. execve resets every handled signal to
// its default action, and for SIGHUP, SIGINT, SIGTERM and SIGUSR2 that
// action is to die: a `systemctl reload` (SIGHUP) a few milliseconds after
// an upgrade (SIGUSR2) took the whole service down. What baton does:
//
//   - The old image blocks the signals it acts on (heldSignals) on the
//     exec thread, then collects what its Go handlers already caught (a
//     marker signal flushes the runtime's queue, see collectSignals) and
//     hands those over in its environment (signalsEnv); the new image acts
//     on them after it has adopted the workers.
//   - Signals arriving after that stay pending across execve (the blocked
//     mask and pending signals survive it). The new image installs its
//     handlers in a package init, before main, and only then unblocks them.
//
// What the Go runtime does not allow (found by experiment, see
// runtime.blockableSig): it unblocks SIGHUP, SIGINT and SIGTERM on every
// thread in its own start-up, before any Go code runs and before it
// installs its handlers, so one of those pending across execve, or sent in
// the first milliseconds of the new image, still kills it. SIGUSR1 and
// SIGUSR2 stay blocked through the runtime's start and are delivered once
// the handlers are in place: never fatal, and lost only when another thread
// of the old image catches one between collectSignals and execve (no API
// blocks a signal on every thread of a cgo binary: AllThreadsSyscall
// refuses). That is why SIGUSR1
// is a rollout signal like SIGHUP, and why the units baton writes for
// notify-reload make systemd send SIGUSR1 (ReloadSignal=); ExecReload= on
// systemd 252 and `baton reload` use the control socket, whose listening
// socket is handed over too, so a connection made during the exec waits in
// its backlog.

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// handledSignals are what the event loop receives. SIGWINCH is only the
// marker of collectSignals.
var handledSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGCHLD, unix.SIGWINCH}

// heldSignals are blocked across a re-exec.
var heldSignals = func() *unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2} {
		set.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	return &set
}()

// earlySignals is the loop's signal channel when this image is the result
// of a re-exec: made in init, as early as Go code runs, so that the window
// in which a signal finds no handler is as short as the runtime allows.
var earlySignals chan os.Signal

func init() {
	if os.Getenv(handoffEnv) != "" {
		earlySignals = signalChannel()
	}
}

func signalChannel() chan os.Signal {
	c := make(chan os.Signal, 64)
	signal.Notify(c, handledSignals...)
	return c
}

// signals returns the loop's signal channel and unblocks the held signals
// on this thread (those a previous image blocked, now that the handlers are
// in place). The workers are forked from this thread and get its mask: a
// signal left blocked here would be blocked in every worker.
func signals() chan os.Signal {
	c := earlySignals
	if c == nil {
		c = signalChannel()
	}
	unix.PthreadSigmask(unix.SIG_UNBLOCK, heldSignals, nil) // cannot fail for a valid set
	return c
}

// markerWait bounds the wait for collectSignals' marker.
const markerWait = 200 * time.Millisecond

// collectSignals blocks the held signals on this (the exec) thread and
// returns those the Go runtime already caught, for the new image. A
// signal's handler may have run on another thread with its delivery to the
// channel still on its way; the marker, sent after, comes out of the
// channel after it (the runtime delivers a batch in signal-number order,
// and SIGWINCH's is above every held one).
func (s *Supervisor) collectSignals() []int {
	unix.PthreadSigmask(unix.SIG_BLOCK, heldSignals, nil) // cannot fail for a valid set
	if err := unix.Kill(os.Getpid(), unix.SIGWINCH); err != nil {
		return s.drainSignals(nil)
	}
	var got []int
	timeout := time.After(markerWait)
	for {
		select {
		case sig := <-s.sigs:
			if sig == unix.SIGWINCH {
				return s.drainSignals(got)
			}
			got = append(got, int(sig.(syscall.Signal)))
		case <-timeout:
			return s.drainSignals(got)
		}
	}
}

// drainSignals adds what is in the channel now.
func (s *Supervisor) drainSignals(got []int) []int {
	for {
		select {
		case sig := <-s.sigs:
			if sig != unix.SIGWINCH {
				got = append(got, int(sig.(syscall.Signal)))
			}
		default:
			return got
		}
	}
}

// releaseSignals undoes collectSignals when the exec failed: the signals
// are unblocked and those collected acted on.
func (s *Supervisor) releaseSignals(got []int) {
	unix.PthreadSigmask(unix.SIG_UNBLOCK, heldSignals, nil)
	s.actOn(got)
}

// actOn acts on signals handed over (or kept back by a failed exec) once
// the current event is handled. SIGCHLD needs no replay: the loop reaps
// after adoption anyway.
func (s *Supervisor) actOn(sigs []int) {
	for _, sig := range sigs {
		if sig := syscall.Signal(sig); sig != unix.SIGCHLD {
			s.log.Info("acting on a signal received during the re-exec", "sig", sig.String())
			s.soon(func() { s.onSignal(sig) })
		}
	}
}
