package supervisor

// `baton rollback`: a rollout of the previous generation's pinned settings
// (directory, command, environment, readiness and stop settings), whatever
// the `current` symlink, the environment files or the config say now. It
// makes a new generation, as any rollout does, so a second rollback rolls
// out the settings the first one replaced: rollback toggles between the
// last two generations, like `cd -`. Going further back is a deploy (move
// the symlink, reload).

import (
	"context"
	"errors"
	"fmt"

	"github.com/batonsd/baton/internal/control"
)

// Rollback answers the control socket's rollback request: it runs the
// rollback and returns when it has ended.
func (s *Supervisor) Rollback(ctx context.Context) (control.Rollout, error) {
	return s.rolloutResult(ctx, s.requestRollback)
}

func (s *Supervisor) requestRollback(reply chan<- rolloutResult) {
	why := s.rolloutRefused()
	var err error
	switch {
	case why != "":
		err = errors.New(why)
	case s.rollout != nil:
		// The rollout in progress may be the bad deploy: if it fails, it
		// rolls back by itself; if it ends ok, a rollback then undoes it.
		err = fmt.Errorf("a %s is in progress: roll back when it has ended (%w)", s.rollout.describe().Kind, control.ErrBusy)
	case s.previous == nil:
		err = fmt.Errorf("no previous generation to roll back to: nothing but what generation %d runs has served since the service started", s.serving.gen)
	default:
		if gone := s.world.stillThere(s.previous.cfg.GenSettings); gone != nil {
			err = fmt.Errorf("generation %d cannot run again: %w", s.previous.gen, gone)
		}
	}
	if err != nil {
		s.log.Warn("rollback refused", "err", err)
		reply <- rolloutResult{err: err}
		return
	}
	cfg := s.cfg // this baton's process settings, the previous generation's own
	cfg.GenSettings = s.previous.cfg.GenSettings
	r := newRollout(s, s.serving, s.slots, &cfg)
	r.rollbackOf = s.previous.gen
	s.requests.own = []chan<- rolloutResult{reply}
	s.begin(r)
}
