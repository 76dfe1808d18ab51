package supervisor

// Scaling: `baton scale N`, and a changed `workers` in the configuration at
// a reload. Both are rollouts (rollout.go) that add or remove slots: added
// slots must be ready before they count, removed ones (the highest) drain
// like old workers once the rollout has ended ok, and a failed one leaves
// the old size serving.

import (
	"context"
	"fmt"

	"github.com/batonsd/baton/internal/control"
)

// Scale answers the control socket's scale request: it runs a rollout to n
// workers and returns when it has ended.
func (s *Supervisor) Scale(ctx context.Context, n int) (control.Rollout, error) {
	return s.rolloutResult(ctx, func(reply chan<- rolloutResult) { s.requestScale(n, reply) })
}

// requestScale scales to n now, or after the rollout in progress: a reload
// and a scale asked together end in one rollout's consistent state.
func (s *Supervisor) requestScale(n int, reply chan<- rolloutResult) {
	if err := s.checkSize(n); err != nil {
		s.log.Warn("scale refused", "workers", n, "err", err)
		reply <- rolloutResult{err: err}
		return
	}
	if why := s.rolloutRefused(); why != "" {
		s.log.Warn("scale refused", "workers", n, "reason", why)
		reply <- rolloutResult{err: fmt.Errorf("scale to %d workers: %s", n, why)}
		return
	}
	s.wantSize = n
	s.requests.waiters = append(s.requests.waiters, reply)
	if s.rollout != nil {
		s.log.Info("scale requested during a rollout: it follows when this one ends", "workers", n)
		return
	}
	s.begin(s.scaleOnly())
}

// checkSize says why n workers cannot run, if they cannot.
func (s *Supervisor) checkSize(n int) error {
	if n < 1 || n > MaxWorkers {
		return fmt.Errorf("scale to %d workers: want 1 to %d", n, MaxWorkers)
	}
	cfg := s.cfg
	cfg.Workers = n
	if err := checkFDLimit(cfg, len(s.listeners), s.fdLimit); err != nil {
		return fmt.Errorf("scale to %d workers: %w", n, err)
	}
	return nil
}

// sizeFor sets the number of workers a reload of cfg rolls out: the
// configuration's workers when they changed since the last reload that
// ended ok (or the start), else the number serving now, so a `baton scale`
// outlives deploys that do not touch workers.
func (s *Supervisor) sizeFor(cfg *Config) error {
	s.pendingConfigured = cfg.Workers
	if cfg.Workers == s.ConfiguredWorkers {
		cfg.Workers = len(s.slots)
		return nil
	}
	s.log.Info("workers changed in the configuration: the rollout scales", "workers", cfg.Workers, "now", len(s.slots))
	return checkFDLimit(*cfg, len(s.listeners), s.fdLimit)
}
