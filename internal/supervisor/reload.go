package supervisor

// Rollouts as the supervisor asks for them: the requests (reload,
// await-reload, a signal, a replacement), the callers waiting on them and
// coalescing. What a rollout does through its host is in host.go.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/batonsd/baton/internal/control"
	"golang.org/x/sys/unix"
)

type rolloutResult struct {
	r   control.Rollout
	err error
}

// rolloutRequests are the callers waiting on rollouts, kept by the host:
// a rollout knows nothing of who asked for it.
type rolloutRequests struct {
	// awaiting are await-reload callers waiting for the next rollout to
	// begin (the reload signal is on its way).
	awaiting []chan<- rolloutResult
	// waiters get the result of the running rollout or, when more follow
	// it, of the last; own get the running rollout's own (a rollback's, a
	// recycle's), even when another follows.
	waiters, own []chan<- rolloutResult
	// again: a reload was asked for during the running rollout; one more
	// follows it.
	again bool
}

// begin announces a rollout to systemd and begins it.
func (s *Supervisor) begin(r *rollout) {
	s.tell(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	s.rollout = r
	r.begin()
}

// followNext makes r, which follows the rollout that just ended, the
// running rollout at once (systemd, not told READY=1, still waits for the
// end of the reload), and begins it once the ended rollout has returned
// from its last phase entry. Whatever runs in between (a replace the same
// event asked for, a stop) finds r running: a request waits its turn, a
// stop ends r before it began. When r became the running rollout only as
// it began, a replace asked for in between began a rollout of its own,
// and r, begun over it, took its slots.
func (s *Supervisor) followNext(r *rollout) {
	s.rollout = r
	s.soon(func() {
		if s.rollout == r && r.phase == phaseNew {
			r.begin()
		}
	})
}

// sendReady tells systemd the service is ready (the start, or a rollout's
// end) with the status line.
func (s *Supervisor) sendReady() {
	s.status = s.statusLine()
	s.tell("READY=1\nSTATUS=" + s.status)
}

// Reload answers the control socket's reload request: it runs a rollout and
// returns when it has ended.
func (s *Supervisor) Reload(ctx context.Context) (control.Rollout, error) {
	return s.rolloutResult(ctx, s.requestRollout)
}

// rolloutResult runs ask on the loop with a reply channel and waits for
// the rollout result it delivers.
func (s *Supervisor) rolloutResult(ctx context.Context, f func(chan<- rolloutResult)) (control.Rollout, error) {
	res, err := ask(ctx, s, f)
	return res.r, cmp.Or(err, res.err)
}

// awaitSignalled is how long AwaitReload waits for a rollout to begin, and
// how recently one may have ended to count as the one it waits for.
const awaitSignalled = 10 * time.Second

// AwaitReload answers the control socket's await-reload request: the
// result of the rollout a reload signal started. systemd runs ExecReload=
// right after sending the signal, so the rollout is running, or about to
// begin (the signal is still on its way through the loop), or, if it failed
// at once, has just ended.
func (s *Supervisor) AwaitReload(ctx context.Context) (control.Rollout, error) {
	return s.rolloutResult(ctx, s.awaitRollout)
}

func (s *Supervisor) awaitRollout(reply chan<- rolloutResult) {
	switch {
	case s.rollout != nil:
		s.log.Info("reload awaited: joins the running rollout")
		s.requests.waiters = append(s.requests.waiters, reply)
		return
	case s.Last != nil && s.now().Sub(s.LastEnded) < 2*time.Second:
		s.log.Info("reload awaited: the rollout just ended")
		var err error
		if s.Last.Error != "" {
			err = errors.New(s.Last.Error)
		}
		reply <- rolloutResult{r: *s.Last, err: err}
		return
	}
	s.log.Info("reload awaited before its signal: waiting for the rollout")
	q := &s.requests
	q.awaiting = append(q.awaiting, reply)
	s.after(awaitSignalled, func() {
		if i := slices.Index(q.awaiting, reply); i >= 0 {
			q.awaiting = slices.Delete(q.awaiting, i, i+1)
			reply <- rolloutResult{err: fmt.Errorf("no rollout began within %s: was the reload signal sent?", awaitSignalled)}
		}
	})
}

// requestRollout starts a rollout, or joins the running one. reply, if not
// nil, gets the result.
func (s *Supervisor) requestRollout(reply chan<- rolloutResult) { s.startRollout(reply, false) }

// requestReplace rolls every worker over to a new generation of the
// serving configuration, as a rollout does (new ready before old drains),
// without re-reading the configuration: for workers that cannot be trusted
// any more (their listener was shut down under them).
func (s *Supervisor) requestReplace(why string) {
	s.log.Warn("replacing every worker", "reason", why)
	s.startRollout(nil, true)
}

func (s *Supervisor) startRollout(reply chan<- rolloutResult, replace bool) {
	if why := s.rolloutRefused(); why != "" {
		s.log.Warn("rollout refused", "reason", why)
		if reply != nil {
			reply <- rolloutResult{err: errors.New(why)}
		}
		return
	}
	q := &s.requests
	if reply != nil {
		q.waiters = append(q.waiters, reply)
	}
	if s.rollout != nil {
		q.again = true
		s.log.Info("rollout requested during a rollout: one more follows when this one ends")
		return
	}
	q.waiters = append(q.waiters, q.awaiting...)
	q.awaiting = nil
	var given *Config
	if replace {
		given = &s.serving.cfg
	}
	s.begin(s.sized(newRollout(s, s.serving, s.slots, given)))
}

// rolloutRefused says why no rollout (or scale) can begin now, if none can.
func (s *Supervisor) rolloutRefused() string {
	switch {
	case s.leaving():
		return "baton is stopping"
	case !s.ReadySent:
		return "baton is still starting: a rollout needs every slot ready first"
	}
	return ""
}

// sized gives a reload or a scale the size a `baton scale` asked for
// (wantSize), if one did: the rollout that begins carries it out,
// whichever it is.
func (s *Supervisor) sized(r *rollout) *rollout {
	r.size, s.wantSize = s.wantSize, 0
	return r
}

// scaleOnly is a rollout that only changes the number of slots.
func (s *Supervisor) scaleOnly() *rollout {
	r := newRollout(s, s.serving, nil, nil)
	r.scaleOnly = true
	return s.sized(r)
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return ts.Nano() / 1000
}
