package supervisor

// The supervisor as a rollout's host (rolloutHost, rollout.go): what a
// rollout does to the world goes through these, and a fake host plays the
// same rollout in the tests (rolloutmachine_test.go). startWorker and drain
// (slots.go), after and now (supervisor.go) are the supervisor's own, used
// by the host as by the rest.

import (
	"cmp"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/batonsd/baton/internal/control"
)

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
	s.Last, s.LastEnded = &res, s.now()
	s.rollout = nil
	elapsed := s.now().Sub(r.started)
	took := elapsed.Round(time.Millisecond)
	s.Totals.CountRollout(cmp.Or(res.Kind, "reload"), res.State, elapsed.Seconds())
	switch {
	case res.State == control.RolloutStopped:
		s.log.Warn("rollout cut short by the stop", "from", res.From, "to", res.To, "moved", res.Moved, "of", res.Slots, "took", took)
	case err != nil:
		s.log.Error("rollout failed", "from", res.From, "to", res.To, "err", err, "took", took)
	default:
		s.log.Info("rollout done", "gen", res.To, "took", took)
	}
	// Who asked for this rollout itself (a rollback) hears its result, even
	// when another rollout follows for requests that came meanwhile.
	q := &s.requests
	for _, w := range q.own {
		w <- rolloutResult{r: res, err: err}
	}
	q.own = nil
	if r.recycle != "" {
		s.recycled(r, err)
	} else if err == nil && !r.scaleOnly {
		s.deployed(r)
	}
	if err == nil && !r.scaleOnly && r.given == nil && r.recycle == "" {
		s.ConfiguredWorkers = s.pendingConfigured // applied: a reload scales again only when it changes
	}
	var converge *rollout
	if !s.leaving() && (q.again || s.wantSize > 0) {
		converge = s.convergence()
	}
	switch {
	case s.leaving(): // no rollout follows: baton stops
	case converge != nil:
		// The slots come back to their generation first; what follows
		// waits for that recycle's end, and so do its callers.
		s.followNext(converge)
		return
	case q.again:
		s.log.Info("rolling out once more for requests that came during the last rollout")
		q.again = false
		s.followNext(s.sized(newRollout(s, s.serving, s.slots, nil)))
		return
	case s.wantSize > 0:
		s.log.Info("scaling, as asked during the last rollout", "workers", s.wantSize)
		s.followNext(s.scaleOnly())
		return
	}
	s.sendReady()
	for _, w := range q.waiters {
		w <- rolloutResult{r: res, err: err}
	}
	q.waiters = nil
	s.soon(s.convergeSlots) // before the upgrade that may be waiting, which a recycle defers
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
	if err := s.world.pin(&cfg, s.StartDir); err != nil {
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
	s.LastGen++
	return &genSpec{gen: s.LastGen, cfg: cfg}
}

// restartSlot starts a worker in a slot a rollout left empty, after the
// slot's backoff (rolloutHost). What emptied it is the rollout's own (a new
// generation's worker failed, a rollback's could not be started), never a
// crash of the serving generation, which was counted at its exit: nothing
// counts against --crash-limit here.
func (s *Supervisor) restartSlot(sl *slot) { s.scheduleStart(sl) }

// afterOutput calls f on the loop once w's output is read to its end, or
// after tailGrace (rolloutHost): the reason of a failure quotes the
// worker's last lines, which may still be in the pipe when its exit is
// reaped.
func (s *Supervisor) afterOutput(w *proc, f func()) {
	s.afterDone(w.p.Done(), tailGrace, func(bool) { f() })
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

// slotCount is the number of slots (rolloutHost).
func (s *Supervisor) slotCount() int { return len(s.slots) }

// addSlots appends n empty slots of spec (rolloutHost).
func (s *Supervisor) addSlots(n int, spec *genSpec) []*slot {
	added := make([]*slot, n)
	for i := range added {
		added[i] = &slot{slotKept: slotKept{Index: len(s.slots), Backoff: s.cfg.RestartBackoff.Min}, spec: spec}
		s.slots = append(s.slots, added[i])
	}
	return added
}

// removeSlots drains the workers of the slots from index keep on, cancels
// their restarts and removes them (rolloutHost).
func (s *Supervisor) removeSlots(keep int) {
	for _, sl := range s.slots[keep:] {
		sl.Removed = true
		stopTimer(&sl.restart)
		for _, w := range []*proc{sl.next, sl.w} {
			if w != nil {
				s.drain(w)
			}
		}
		sl.w, sl.next = nil, nil
	}
	clear(s.slots[keep:])
	s.slots = s.slots[:keep]
}

// convergeSlots begins, when nothing else runs, a recycle of the slots
// whose serving worker is not of the slot's generation: a failed rollout
// whose rollback could not bring the previous generation's worker back up
// in a target it had moved leaves the new generation's serving there (the
// floor comes first). Each successor, of the serving generation, is ready
// before the worker it replaces drains; a slot whose recycle failed is
// tried again after its hold (RecycleRetry, doubling).
func (s *Supervisor) convergeSlots() {
	if s.rollout != nil || s.leaving() || !s.ReadySent {
		return // the end of what runs calls again
	}
	if r := s.convergence(); r != nil {
		s.begin(r)
	}
}

// convergence is the recycle convergeSlots begins, or nil when no slot
// needs one now; a slot held after a failed one is looked at again when
// its hold ends.
func (s *Supervisor) convergence() *rollout {
	var targets []*slot
	var why []string
	for _, sl := range s.slots {
		w := sl.w
		if w == nil || w.spec == sl.spec || w.State != stateReady {
			continue
		}
		if wait := sl.RecycleHold.Sub(s.now()); wait > 0 {
			s.after(wait, s.convergeSlots)
			continue
		}
		s.log.Warn("slot serves a worker of another generation than its own: recycling it", "slot", sl.Index, "pid", w.pid,
			"gen", w.spec.gen, "slot_gen", sl.spec.gen)
		targets = append(targets, sl)
		why = append(why, fmt.Sprintf("slot %d's worker is of generation %d", sl.Index, w.spec.gen))
	}
	if len(targets) == 0 {
		return nil
	}
	r := newRollout(s, s.serving, targets, nil)
	r.recycle, r.recycleWhy = control.RecycleGeneration, strings.Join(why, "; ")
	return r
}
