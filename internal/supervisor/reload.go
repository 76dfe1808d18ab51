package supervisor

// Rollouts as the supervisor asks for them and hosts them: the requests
// (reload, await-reload, a signal, a replacement), coalescing, and the
// effects a rollout has through its host (rollout.go).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/batonsd/baton/internal/control"
	"golang.org/x/sys/unix"
)

type rolloutResult struct {
	r   control.Rollout
	err error
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
		s.rollout.waiters = append(s.rollout.waiters, reply)
		return
	case s.last != nil && s.now().Sub(s.lastEnded) < 2*time.Second:
		s.log.Info("reload awaited: the rollout just ended")
		var err error
		if s.last.Error != "" {
			err = errors.New(s.last.Error)
		}
		reply <- rolloutResult{r: *s.last, err: err}
		return
	}
	s.log.Info("reload awaited before its signal: waiting for the rollout")
	s.awaiting = append(s.awaiting, reply)
	s.after(awaitSignalled, func() {
		if i := slices.Index(s.awaiting, reply); i >= 0 {
			s.awaiting = slices.Delete(s.awaiting, i, i+1)
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
	if r := s.rollout; r != nil {
		if reply != nil {
			r.waiters = append(r.waiters, reply)
		}
		r.again = true
		s.log.Info("rollout requested during a rollout: one more follows when this one ends")
		return
	}
	waiters := s.awaiting
	s.awaiting = nil
	if reply != nil {
		waiters = append(waiters, reply)
	}
	s.tell(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	s.beginRollout(waiters, replace)
}

// rolloutRefused says why no rollout (or scale) can begin now, if none can.
func (s *Supervisor) rolloutRefused() string {
	switch {
	case s.leaving():
		return "baton is stopping"
	case !s.readySent:
		return "baton is still starting: a rollout needs every slot ready first"
	}
	return ""
}

// beginRollout begins a rollout of the configuration (replace: of the
// serving one, not re-read) or, with neither that nor a reload asked
// (scaleOnly), a scale. A scale asked for (wantSize) is carried out by the
// rollout that begins, whichever it is.
func (s *Supervisor) beginRollout(waiters []chan<- rolloutResult, replace bool) {
	var given *Config
	if replace {
		given = &s.serving.cfg
	}
	r := newRollout(s, s.serving, s.slots, given)
	r.size, s.wantSize = s.wantSize, 0
	r.waiters = waiters
	s.rollout = r
	r.begin()
}

// beginScale begins a rollout that only changes the number of slots.
func (s *Supervisor) beginScale(waiters []chan<- rolloutResult) {
	r := newRollout(s, s.serving, nil, nil)
	r.scaleOnly = true
	r.size, s.wantSize = s.wantSize, 0
	r.waiters = waiters
	s.rollout = r
	r.begin()
}

// ended is the rollout's report (rolloutHost): the result is kept for
// status, and unless another request came meanwhile, systemd hears
// READY=1, on every path, and every waiting caller gets the result.
func (s *Supervisor) ended(r *rollout, res control.Rollout, err error) {
	if next := r.serving(); next != s.serving {
		// What `baton rollback` rolls out again: the last generation that
		// ran something else (a reload that changed only workers, or one
		// more rollout of the same release, keeps the one before).
		if !reflect.DeepEqual(next.cfg.GenSettings, s.serving.cfg.GenSettings) {
			s.previous = s.serving
		}
		s.serving = next
	}
	s.last, s.lastEnded = &res, s.now()
	s.rollout = nil
	elapsed := s.now().Sub(r.started)
	took := elapsed.Round(time.Millisecond)
	s.totals.CountRollout(cmp.Or(res.Kind, "reload"), res.State, elapsed.Seconds())
	if err != nil {
		s.log.Error("rollout failed", "from", res.From, "to", res.To, "err", err, "took", took)
	} else {
		s.log.Info("rollout done", "gen", res.To, "took", took)
	}
	// Who asked for this rollout itself (a rollback) hears its result, even
	// when another rollout follows for requests that came meanwhile.
	for _, w := range r.own {
		w <- rolloutResult{r: res, err: err}
	}
	if r.recycle != "" {
		s.recycled(r, err)
	}
	if err == nil && !r.scaleOnly && r.given == nil && r.recycle == "" {
		s.configuredWorkers = s.pendingConfigured // applied: a reload scales again only when it changes
	}
	switch {
	case s.leaving(): // no rollout follows: baton stops
	case r.again:
		s.log.Info("rolling out once more for requests that came during the last rollout")
		s.soon(func() { s.beginRollout(r.waiters, false) })
		return
	case s.wantSize > 0:
		s.log.Info("scaling, as asked during the last rollout", "workers", s.wantSize)
		s.soon(func() { s.beginScale(r.waiters) })
		return
	}
	s.status = s.statusLine()
	s.tell("READY=1\nSTATUS=" + s.status)
	for _, w := range r.waiters {
		w <- rolloutResult{r: res, err: err}
	}
	s.runDeferredUpgrade()
	s.soon(s.nextRecycle) // recycles asked for meanwhile waited
}

// load re-reads the configuration for a rollout (rolloutHost).
func (s *Supervisor) load() (Config, error) {
	cfg, err := s.reload()
	if err == nil {
		err = cfg.check()
	}
	if err != nil {
		return cfg, err
	}
	if err := s.sizeFor(&cfg); err != nil {
		return cfg, err
	}
	if err := s.world.pin(&cfg, s.startDir); err != nil {
		return cfg, err
	}
	if !slices.Equal(specStrings(cfg), specStrings(s.cfg)) {
		s.log.Warn("--listen changed: sockets are kept until the next restart")
	}
	return cfg, nil
}

func specStrings(c Config) []string {
	out := make([]string, len(c.Listen))
	for i, l := range c.Listen {
		out[i] = l.String()
	}
	return out
}

// runCheck runs cfg's --check (rolloutHost): the check that guards a
// deploy is the one that comes with it.
func (s *Supervisor) runCheck(cfg Config, done func(error)) {
	if cfg.Check == "" {
		done(nil)
		return
	}
	s.log.Info("running --check", "command", cfg.Check)
	// In the generation's directory, with its environment: the check of a
	// release is made where and as its workers will run.
	s.runHelper([]string{"/bin/sh", "-c", cfg.Check}, cfg.Directory, workerEnv(s.baseEnv, cfg), cfg.ReadyTimeout, func(ok bool, reason string) {
		if !ok {
			done(fmt.Errorf("--check %q failed: %s", cfg.Check, reason))
			return
		}
		done(nil)
	})
}

// newGen makes the next generation of cfg, the newest configuration from
// now on (rolloutHost).
func (s *Supervisor) newGen(cfg Config) *genSpec {
	s.cfg = cfg
	s.lastGen++
	return &genSpec{gen: s.lastGen, cfg: cfg}
}

// restartSlot restarts an empty slot as after a crash (rolloutHost).
func (s *Supervisor) restartSlot(sl *slot) { s.onCrash(sl, 0) }

// afterOutput calls f on the loop once w's output is read to its end, or
// after tailGrace (rolloutHost): the reason of a failure quotes the
// worker's last lines, which may still be in the pipe when its exit is
// reaped.
func (s *Supervisor) afterOutput(w *proc, f func()) {
	expired := make(chan struct{})
	t := s.world.afterFunc(tailGrace, func() { close(expired) })
	go func() {
		select {
		case <-w.p.Done():
			t.Stop()
		case <-expired:
		}
		s.post(f)
	}()
}

// listenerProblems checks the listeners now (rolloutHost).
func (s *Supervisor) listenerProblems() []string { return s.checkListeners() }

// progressed asks systemd for more time and updates the status
// (rolloutHost): a reload is bounded by TimeoutStartSec, and N slow
// workers may need more.
func (s *Supervisor) progressed() {
	d := s.cfg.ReadyTimeout + s.cfg.Canary + 10*time.Second
	s.tell(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
	s.updateStatus()
}

func (s *Supervisor) logger() *slog.Logger { return s.log }

func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return ts.Nano() / 1000
}
