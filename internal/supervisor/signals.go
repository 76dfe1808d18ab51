package supervisor

// Signals across an in-place re-exec. execve resets every handled signal to
// its default action, and for SIGHUP, SIGINT, SIGTERM and SIGUSR2 that
// action is to die: a `systemctl reload` or `stop` a few milliseconds after
// an upgrade took the whole service down. The old image blocks the held
// signals on the exec thread and hands what arrives from then on to the new
// image through package sigrelay (a pipe both images hold and a recorder
// that runs before the Go runtime starts, see there for what is left); what
// its Go handlers caught before goes in the same pipe (collectSignals). The
// new image asks for the signals in a package init, hands them back to the
// Go runtime, and acts on what the relay carried once it has adopted the
// workers.
//
// The units baton writes for notify-reload still make systemd reload with
// SIGUSR1, never fatal even to a Go binary built without cgo (the runtime
// keeps it blocked through its start-up); ExecReload= on systemd 252 and
// `baton reload` use the control socket, whose listening socket is handed
// over too, so a connection made during the exec waits in its backlog.

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/internal/sigrelay"
)

// handledSignals are what the event loop receives. SIGWINCH is only the
// marker of collectSignals.
var handledSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGCHLD, unix.SIGWINCH}

// heldSignals are blocked across a re-exec.
var heldSignals = func() *unix.Sigset_t {
	var set unix.Sigset_t
	for _, sig := range sigrelay.Held {
		set.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	return &set
}()

// earlySignals is the loop's signal channel when this image is the result
// of a re-exec: made in init, as early as Go code runs, so that the window
// in which a signal finds no handler is as short as the runtime allows.
var earlySignals chan os.Signal

func init() {
	if os.Getenv(handoffEnv) != "" || sigrelay.Inherited() {
		earlySignals = signalChannel()
		sigrelay.HandBack()
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

// holdSignals blocks the held signals on this (the exec) thread, has the
// relay record those sent from now on, and adds to it those the Go runtime
// caught before.
func (s *Supervisor) holdSignals(relay *sigrelay.Relay) {
	unix.PthreadSigmask(unix.SIG_BLOCK, heldSignals, nil) // cannot fail for a valid set
	if err := relay.Catch(); err != nil {
		s.log.Warn("signals sent during the re-exec may be lost", "err", err)
	}
	relay.Add(s.collectSignals())
}

// collectSignals returns the signals the Go runtime caught and the loop has
// not received yet. A signal's handler may have run on another thread with
// its delivery to the channel still on its way; the marker, sent after,
// comes out of the channel after it (the runtime delivers a batch in
// signal-number order, and SIGWINCH's is above every held one).
func (s *Supervisor) collectSignals() []int {
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

// releaseSignals undoes holdSignals when the exec failed: the Go runtime
// has the signals again, and those the relay holds are acted on.
func (s *Supervisor) releaseSignals(relay *sigrelay.Relay) {
	got := relay.Abort()
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
