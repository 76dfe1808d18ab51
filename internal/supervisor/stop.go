package supervisor

// Stopping: at once, or after a lame duck (--lame-duck) during which baton
// reports that it stops while every worker keeps serving.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// Stop answers the control socket's stop request (`baton stop`, the
// ExecStop= of the units baton writes) as a first SIGTERM is answered, and
// says what the stop does. Under systemd this is how a stop keeps its
// order: systemd signals the unit's whole cgroup only once ExecStop= has
// returned, so the workers serve through the lame duck and get their own
// stop signal from baton, not systemd's SIGTERM with baton's.
//
// A stop under way is joined, not hurried: ExecStop= after a stop that
// began otherwise (a SIGTERM, STOPPING=1 of the crash limit) must not cut
// the lame duck short or kill the workers. Signals hurry it.
func (s *Supervisor) Stop(ctx context.Context) (control.Stopping, error) {
	st, err := ask(ctx, s, s.stopRequest)
	if errors.Is(err, ErrShuttingDown) {
		// The loop has ended: the workers are gone and baton exits.
		return control.Stopping{PID: os.Getpid(), Doing: "exiting"}, nil
	}
	return st, err
}

// stopRequest is a stop request on the loop.
func (s *Supervisor) stopRequest(reply chan<- control.Stopping) {
	by := slog.String("by", "baton stop")
	if s.leaving() {
		s.log.Info("stop requested: joins the stop under way", by)
	} else {
		s.stopAsked(by)
	}
	reply <- control.Stopping{PID: os.Getpid(), Doing: s.stopDoing()}
}

// stopAsked answers a stop request, a signal's or baton stop's: the first
// stops (after the lame duck, if set), one during the lame duck cuts it
// short, and one more kills every worker.
func (s *Supervisor) stopAsked(by slog.Attr) {
	s.stopSigs++
	switch {
	case s.lameDuck != nil:
		s.log.Warn("second stop request: the lame duck is cut short, workers drain now", by)
		s.beginStop()
	case s.stopSigs > 1:
		s.log.Warn("second stop request: killing all workers", by)
		for _, w := range s.workers {
			w.p.Kill()
		}
	default:
		s.log.Info("stop requested", by)
		s.requestStop()
	}
}

// stopDoing says what the stop under way does.
func (s *Supervisor) stopDoing() string {
	switch {
	case s.lameDuck != nil:
		return fmt.Sprintf("lame duck for %s while %d workers serve, then they drain (drain timeout %s)",
			s.lameDuckEnds.Sub(s.now()).Round(time.Millisecond), len(s.workers), s.cfg.DrainTimeout)
	case len(s.workers) == 0:
		return "exiting"
	}
	return fmt.Sprintf("%d workers drain (drain timeout %s)", len(s.workers), s.cfg.DrainTimeout)
}

// leaving reports whether a stop was asked for: draining, or in the lame
// duck. Nothing new begins then (rollouts, scales, recycles, upgrades).
func (s *Supervisor) leaving() bool { return s.stopping || s.lameDuck != nil }

// requestStop stops baton: at once, or with --lame-duck after that long
// reporting that it stops while every worker keeps serving, so that a load
// balancer checking /healthz sees the host leave before it stops serving.
func (s *Supervisor) requestStop() {
	d := s.cfg.LameDuck
	if d <= 0 || s.leaving() || !s.ReadySent {
		s.beginStop()
		return
	}
	s.lameDuckEnds = s.now().Add(d)
	s.lameDuck = s.after(d, s.beginStop)
	if s.rollout != nil {
		s.rollout.stop()
	}
	// New workers the stopped rollout left coming up are not needed: they
	// drain now rather than fail later as crashes of the serving generation.
	for _, sl := range s.slots {
		if w := sl.next; w != nil {
			sl.next = nil
			s.drain(w)
		}
	}
	s.dropRecycles()
	s.tell("STOPPING=1")
	s.log.Info("stopping: lame duck, every worker serves on while /healthz and status --check report the stop",
		"for", d, "workers", len(s.workers))
	s.updateStatus()
}

// dropRecycles answers the recycles asked for and not begun: baton stops.
func (s *Supervisor) dropRecycles() {
	for _, q := range s.recycles {
		if q.reply != nil {
			q.reply <- rolloutResult{err: errors.New("baton is stopping")}
		}
	}
	s.recycles = nil
}

// beginStop asks every worker to drain; the loop ends when all have exited.
func (s *Supervisor) beginStop() {
	if s.stopping {
		return
	}
	stopTimer(&s.lameDuck)
	s.stopping = true
	s.toStart = nil
	s.dropRecycles()
	if s.rollout != nil {
		s.rollout.stop()
	}
	s.tell("STOPPING=1")
	s.log.Info("stopping", "workers", len(s.workers), "drain_timeout", s.cfg.DrainTimeout)
	for _, sl := range s.slots {
		stopTimer(&sl.restart)
	}
	for _, w := range s.workers {
		s.drain(w)
	}
	for _, h := range s.helpers {
		s.killHelper(h)
	}
	s.updateStatus()
}
