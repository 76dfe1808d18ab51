package supervisor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/batonsd/baton/internal/control"
	"golang.org/x/sys/unix"
)

// A rollout replaces every slot's worker with one of a new generation:
//
//	checking     the config is re-read and its --check runs; then the new
//	             generation is made
//	rolling      batches of --max-surge slots (all slots for blue-green):
//	             start the new workers, wait until all are ready, then send
//	             the old ones the stop signal (they drain in the background
//	             under their own deadline) and go on with the next batch
//	canary       after the first batch is ready, watch it for --canary
//	             before its old workers are stopped
//	rolling back a new worker failed: new workers not yet serving are
//	             stopped, slots already moved get a worker of the previous
//	             generation again, ready before the new one is stopped
//
// It ends ok or failed; systemd hears READY=1 either way. A request that
// arrives during a rollout is coalesced: when the rollout ends, one more
// runs (to the newest config and binary), and every caller waiting gets
// that final result.
type rollout struct {
	from, to *genSpec
	phase    string
	started  time.Time
	waiters  []chan<- rolloutResult
	again    bool    // another request arrived: roll out once more
	pending  int     // failures of new workers not yet handed to onFailure
	pos      int     // slots[:pos] have moved to the new generation
	batch    []*slot // slots whose new workers are starting
	canary   *time.Timer
	canaried bool
	err      error // why it is being rolled back
	// sameConfig: a new generation of the serving configuration, neither
	// re-read nor checked (the workers must be replaced, nothing deployed).
	sameConfig bool
}

type rolloutResult struct {
	r   control.Rollout
	err error
}

// Rollout phases, as `baton status` shows them.
const (
	phaseChecking    = "checking"
	phaseRolling     = "rolling"
	phaseCanary      = "canary"
	phaseRollingBack = "rolling back"
)

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
		s.rollout.waiters = append(s.rollout.waiters, reply)
		return
	case s.last != nil && time.Since(s.lastEnded) < 2*time.Second:
		var err error
		if s.last.Error != "" {
			err = errors.New(s.last.Error)
		}
		reply <- rolloutResult{r: *s.last, err: err}
		return
	}
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
	refuse := func(why string) {
		s.log.Warn("rollout refused", "reason", why)
		if reply != nil {
			reply <- rolloutResult{err: errors.New(why)}
		}
	}
	switch {
	case s.stopping:
		refuse("baton is stopping")
		return
	case !s.readySent:
		refuse("baton is still starting: a rollout needs every slot ready first")
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
	r := &rollout{from: s.serving, started: time.Now(), waiters: s.awaiting, sameConfig: replace}
	s.awaiting = nil
	if reply != nil {
		r.waiters = append(r.waiters, reply)
	}
	s.rollout = r
	s.tell(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	r.begin(s)
}

// begin re-reads the configuration (a bad one ends the rollout before
// anything changed), then runs its --check: the check that guards a deploy
// is the one that comes with it.
func (r *rollout) begin(s *Supervisor) {
	r.phase = phaseChecking
	s.extendTimeout()
	s.updateStatus()
	if r.sameConfig {
		r.roll(s, s.serving.cfg)
		return
	}
	cfg, err := s.reload()
	if err == nil {
		err = cfg.check()
	}
	if err != nil {
		r.finish(s, err) // it names the file, key or flag already
		return
	}
	if cfg.Workers != len(s.slots) {
		s.log.Warn("--workers changed: takes effect at the next restart", "now", len(s.slots), "configured", cfg.Workers)
		cfg.Workers = len(s.slots)
	}
	if !slices.Equal(specStrings(cfg), specStrings(s.cfg)) {
		s.log.Warn("--listen changed: sockets are kept until the next restart")
	}
	if cfg.Check == "" {
		r.roll(s, cfg)
		return
	}
	s.log.Info("running --check", "command", cfg.Check)
	s.runHelper([]string{"/bin/sh", "-c", cfg.Check}, cfg.ReadyTimeout, func(ok bool, reason string) {
		if s.rollout != r {
			return // ended meanwhile (baton is stopping)
		}
		if !ok {
			r.finish(s, fmt.Errorf("--check %q failed: %s", cfg.Check, reason))
			return
		}
		r.roll(s, cfg)
	})
}

// roll makes the new generation from cfg and starts the first batch.
func (r *rollout) roll(s *Supervisor, cfg Config) {
	s.cfg = cfg
	s.lastGen++
	r.to = &genSpec{gen: s.lastGen, cfg: cfg}
	r.phase = phaseRolling
	s.log.Info("rollout begun", "from", r.from.gen, "to", r.to.gen, "command", cfg.Command, "surge", r.surge(s))
	r.nextBatch(s)
}

func specStrings(c Config) []string {
	out := make([]string, len(c.Listen))
	for i, l := range c.Listen {
		out[i] = l.String()
	}
	return out
}

func (r *rollout) surge(s *Supervisor) int {
	if s.cfg.BlueGreen {
		return len(s.slots)
	}
	return s.cfg.MaxSurge
}

// nextBatch starts the new workers of the next batch, or ends the rollout
// when every slot has moved.
func (r *rollout) nextBatch(s *Supervisor) {
	if r.pos >= len(s.slots) {
		if r.pending == 0 {
			r.finish(s, nil)
		}
		return // else a new worker failed: its abort is on its way
	}
	r.batch = s.slots[r.pos:min(r.pos+r.surge(s), len(s.slots))]
	s.extendTimeout()
	for _, sl := range r.batch {
		w := s.startWorker(sl, r.to)
		if w == nil {
			r.abort(s, fmt.Errorf("worker %d of generation %d could not be started", sl.index, r.to.gen))
			return
		}
		sl.next = w
	}
	s.updateStatus()
}

// onReady is told of each new worker that became ready.
func (r *rollout) onReady(s *Supervisor, w *proc) {
	switch r.phase {
	case phaseRolling:
		if !r.batchReady() {
			return
		}
		if s.cfg.Canary > 0 && !r.canaried {
			r.canaried = true
			r.phase = phaseCanary
			s.log.Info("canary: watching the first batch", "gen", r.to.gen, "slots", len(r.batch), "for", s.cfg.Canary)
			s.extendTimeout()
			r.canary = s.after(s.cfg.Canary, func() {
				if s.rollout == r && r.phase == phaseCanary && r.batchReady() {
					r.phase = phaseRolling
					r.promote(s)
				}
				// Otherwise a canary failed and its abort is on its way.
			})
			s.updateStatus()
			return
		}
		r.promote(s)
	case phaseRollingBack:
		r.replace(s, w.slot, r.from)
		if r.rolledBack(s) {
			r.finish(s, r.err)
		}
	}
}

// batchReady reports whether every slot of the batch has a ready new
// worker.
func (r *rollout) batchReady() bool {
	for _, sl := range r.batch {
		if sl.next == nil || sl.next.state != stateReady {
			return false
		}
	}
	return true
}

// promote puts the batch's new workers in place and stops the old ones.
func (r *rollout) promote(s *Supervisor) {
	for _, sl := range r.batch {
		r.replace(s, sl, r.to)
	}
	r.pos += len(r.batch)
	r.batch = nil
	s.log.Info("rollout step", "gen", r.to.gen, "moved", r.pos, "of", len(s.slots))
	r.nextBatch(s)
}

// replace makes sl's incoming worker its serving one, of spec's generation,
// and sends the one it replaces the stop signal.
func (r *rollout) replace(s *Supervisor, sl *slot, spec *genSpec) {
	old := sl.w
	sl.w, sl.next, sl.spec = sl.next, nil, spec
	if sl.restart != nil {
		sl.restart.Stop()
		sl.restart = nil
	}
	if old != nil {
		s.drain(old)
	}
}

// onFailure is told of a worker of the new generation that exited or was
// killed for not being ready, or of a rollback worker that did.
func (r *rollout) onFailure(s *Supervisor, w *proc, reason string) {
	if r.phase != phaseRollingBack {
		msg := fmt.Sprintf("worker %d (pid %d, generation %d): %s", w.slot.index, w.p.PID, w.spec.gen, reason)
		if tail := w.p.Tail(); len(tail) > 0 {
			msg += "; last output: " + strings.Join(tail, " | ")
		}
		r.abort(s, errors.New(msg))
		return
	}
	// Rolling back already. A new-generation worker in a slot that is
	// being rolled back is simply gone; a slot left with no worker at all
	// is restarted in the previous generation as after any crash.
	sl := w.slot
	if w.spec == r.from {
		s.log.Error("rollback worker failed", "slot", sl.index, "pid", w.p.PID, "reason", reason)
	}
	if sl.w == nil && sl.next == nil {
		s.onCrash(sl, 0)
	}
	if r.rolledBack(s) {
		r.finish(s, r.err)
	}
}

// abort stops the new workers not yet serving and moves the slots that
// already moved back to the previous generation, ready before drain.
func (r *rollout) abort(s *Supervisor, err error) {
	r.err = err
	r.phase = phaseRollingBack
	r.batch = nil
	if r.canary != nil {
		r.canary.Stop()
	}
	s.log.Error("rollout aborted", "from", r.from.gen, "to", r.to.gen, "err", err)
	for _, sl := range s.slots {
		if sl.next != nil {
			n := sl.next
			sl.next = nil
			s.drain(n)
		}
	}
	for _, sl := range s.slots[:r.pos] {
		sl.spec = r.from // crash restarts from now on use the previous generation
		if sl.next = s.startWorker(sl, r.from); sl.next == nil && sl.w == nil {
			s.retryStart(sl)
		}
	}
	if r.rolledBack(s) {
		r.finish(s, err)
	}
	s.updateStatus()
}

// rolledBack reports whether no rollback worker is still coming up.
func (r *rollout) rolledBack(s *Supervisor) bool {
	for _, sl := range s.slots {
		if sl.next != nil {
			return false
		}
	}
	return true
}

// finish ends the rollout: err nil means the new generation serves in every
// slot. Unless another request came meanwhile, systemd hears READY=1, on
// every path, and every waiting caller gets the result.
func (r *rollout) finish(s *Supervisor, err error) {
	if r.canary != nil {
		r.canary.Stop()
	}
	if err == nil {
		s.serving = r.to
		if problems := s.checkListeners(); len(problems) > 0 {
			// Every slot moved, but nothing new can connect: not a success.
			err = fmt.Errorf("generation %d serves, but %s", r.to.gen, strings.Join(problems, "; "))
		}
	}
	res := r.describe(s)
	res.State = "ok"
	if err != nil {
		res.State = "failed"
		res.Error = err.Error()
	}
	s.last, s.lastEnded = &res, time.Now()
	s.rollout = nil
	if err != nil {
		s.log.Error("rollout failed", "from", res.From, "to", res.To, "err", err, "took", time.Since(r.started).Round(time.Millisecond))
	} else {
		s.log.Info("rollout done", "gen", res.To, "took", time.Since(r.started).Round(time.Millisecond))
	}
	if r.again && !s.stopping {
		next := &rollout{from: s.serving, started: time.Now(), waiters: r.waiters}
		s.rollout = next
		s.log.Info("rolling out once more for requests that came during the last rollout")
		next.begin(s)
		return
	}
	s.status = s.statusLine()
	s.tell("READY=1\nSTATUS=" + s.status)
	for _, w := range r.waiters {
		w <- rolloutResult{r: res, err: err}
	}
	s.runDeferredUpgrade()
}

func (r *rollout) describe(s *Supervisor) control.Rollout {
	res := control.Rollout{
		From:            r.from.gen,
		State:           r.phase,
		Moved:           r.pos,
		Slots:           len(s.slots),
		Started:         r.started,
		DurationSeconds: time.Since(r.started).Seconds(),
	}
	if r.to != nil {
		res.To = r.to.gen
	}
	if r.err != nil {
		res.Error = r.err.Error()
	}
	return res
}

// extendTimeout asks systemd for more time while a rollout progresses: a
// reload is bounded by TimeoutStartSec, and N slow workers may need more.
func (s *Supervisor) extendTimeout() {
	d := s.cfg.ReadyTimeout + s.cfg.Canary + 10*time.Second
	s.tell(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) // cannot fail for CLOCK_MONOTONIC
	return ts.Nano() / 1000
}
