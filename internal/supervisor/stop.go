package supervisor

// Stopping: at once, or after a lame duck (--lame-duck) during which baton
// reports that it stops while every worker keeps serving.

import "errors"

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
		h.kill()
	}
	s.updateStatus()
}
