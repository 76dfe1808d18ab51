package supervisor

// Recycling: a worker is replaced without a deploy, gracefully, when its
// memory stays above --recycle-memory, when it is older than
// --recycle-after, or when `baton recycle` asks. A recycle is a rollout of
// the serving generation (rollout.go) whose targets are the slots to
// recycle, one at a time: the successor starts first and must be ready
// before the old worker drains, so the number of ready workers never drops
// below the configured one, and a successor that fails leaves the old
// worker serving. Recycles wait while a rollout or a scale runs, and run
// one at a time.
//
// The memory figure is the proportional set size (PSS) of the worker's
// whole process tree: a pre-fork server's children share the master's
// pages, which RSS counts once per process (internal/proctree's figures).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/batonsd/baton/internal/control"
)

const (
	// recycleEvery is how often ages and memory are looked at.
	recycleEvery = time.Second
	// recycleConfirm is how long a worker's memory must stay above the
	// ceiling before it is recycled: a spike (a large request) is not a
	// leak.
	recycleConfirm = 3 * time.Second
	// recycleJitter is the share of --recycle-after taken off at random
	// for each worker, so that workers started together are not recycled
	// together.
	recycleJitter = 0.1
	// recycleRetry is how long a slot whose recycle failed waits before it
	// is recycled automatically (by memory or age) again, doubling up to
	// recycleRetryMax; a slot whose successor crossed the ceiling within its
	// warm-up waits as long before it is recycled by memory again (its
	// recycles by age go on).
	recycleRetry, recycleRetryMax = 30 * time.Second, time.Hour
	// recycleWarmup is a worker's warm-up: the successor of a recycle by
	// memory that crosses the ceiling within it (born above it, or grown
	// past it as it fills caches, compiles, opens pools after READY=1)
	// shows that the recycle did not help; one that stays below it for
	// that long shows that it did.
	recycleWarmup = time.Minute
	// recycleHourly bounds the automatic recycles by memory begun in one
	// slot in any hour, whatever the app does.
	recycleHourly = 12
)

// recycleReq is a recycle asked for and not begun yet.
type recycleReq struct {
	slots  []*slot
	reason string // control.Recycle*
	why    string // what the journal says of it: the figure, the age
	reply  chan<- rolloutResult
	// pid is the worker an automatic recycle is for: if another serves
	// the slot by the time it could begin (a rollout or a crash replaced
	// it), it is dropped.
	pid int
}

// Recycle answers the control socket's recycle request.
func (s *Supervisor) Recycle(ctx context.Context, index int, all bool) (control.Rollout, error) {
	return s.rolloutResult(ctx, func(reply chan<- rolloutResult) { s.requestRecycle(index, all, reply) })
}

// requestRecycle queues a recycle of one slot, or of every slot one at a
// time, asked by hand.
func (s *Supervisor) requestRecycle(index int, all bool, reply chan<- rolloutResult) {
	var err error
	switch why := s.rolloutRefused(); {
	case why != "":
		err = errors.New(why)
	case !all && (index < 0 || index >= len(s.slots)):
		err = fmt.Errorf("recycle slot %d: there are slots 0 to %d", index, len(s.slots)-1)
	}
	if err != nil {
		s.log.Warn("recycle refused", "err", err)
		reply <- rolloutResult{err: err}
		return
	}
	req := recycleReq{reason: control.RecycleManual, why: "asked by hand", reply: reply}
	if all {
		req.slots = slices.Clone(s.slots)
	} else {
		req.slots = []*slot{s.slots[index]}
	}
	if s.rollout != nil {
		s.log.Info("recycle asked during a rollout: it follows when the rollout has ended", "slots", len(req.slots))
	}
	s.recycles = append(s.recycles, req)
	s.nextRecycle()
}

// queueRecycle queues an automatic recycle of sl, unless one of it is
// queued or running already.
func (s *Supervisor) queueRecycle(sl *slot, reason, why string) {
	if r := s.rollout; r != nil && r.recycle != "" && slices.Contains(r.targets, sl) {
		return
	}
	for _, q := range s.recycles {
		if slices.Contains(q.slots, sl) {
			return
		}
	}
	s.recycles = append(s.recycles, recycleReq{slots: []*slot{sl}, reason: reason, why: why, pid: sl.w.pid})
	s.nextRecycle()
}

// nextRecycle begins the first queued recycle when nothing else runs (an
// upgrade waiting for its turn goes first).
func (s *Supervisor) nextRecycle() {
	for len(s.recycles) > 0 && s.rollout == nil && !s.leaving() && s.ReadySent && !s.upgrading && !s.upgradeDeferred {
		req := s.recycles[0]
		s.recycles = s.recycles[1:]
		if sl := req.slots[0]; req.pid != 0 && (sl.w == nil || sl.w.pid != req.pid) {
			continue // that worker is gone already
		}
		// Slots removed by a scale since are not recycled.
		targets := slices.DeleteFunc(slices.Clone(req.slots), func(sl *slot) bool { return sl.Removed })
		if len(targets) == 0 {
			if req.reply != nil {
				req.reply <- rolloutResult{err: errors.New("recycle: the slot was removed by a scale meanwhile")}
			}
			continue
		}
		if req.reason == control.RecycleMemory {
			now := s.now()
			for _, sl := range targets {
				sl.MemRecycles = append(sl.recentMemRecycles(now), now)
			}
		}
		r := newRollout(s, s.serving, targets, nil)
		r.recycle, r.recycleWhy = req.reason, req.why
		if req.reply != nil {
			s.requests.own = []chan<- rolloutResult{req.reply}
		}
		s.begin(r)
	}
}

// recycled is told of a recycle that ended: it counts the workers it
// replaced and holds back slots whose automatic recycle failed.
func (s *Supervisor) recycled(r *rollout, err error) {
	for _, rp := range r.replaced {
		sl := s.slots[rp.Slot]
		sl.Recycles++
		sl.RecycleRetry = 0
		s.Totals.CountRecycle(r.recycle)
		if sl.w != nil {
			sl.w.MemSuccessor = r.recycle == control.RecycleMemory
		}
	}
	if err == nil || r.recycle == control.RecycleManual || s.leaving() {
		return
	}
	for _, sl := range r.targets {
		if !slices.Contains(r.moved, sl) {
			sl.RecycleRetry = min(max(2*sl.RecycleRetry, recycleRetry), recycleRetryMax)
			sl.hold(s.now().Add(sl.RecycleRetry), "its last recycle failed: "+shorten(err.Error(), 100))
			s.log.Warn("recycle failed: the old worker serves on; recycling this slot again later", "slot", sl.Index,
				"in", sl.RecycleRetry, "err", err)
		}
	}
}

// deployed is told of a rollout to a new generation that ended ok: the
// slots it moved run another release, or the same one again by the
// operator's hand, so what held their automatic recycles back is
// forgotten. The hourly bound is not: it holds whatever is deployed.
func (s *Supervisor) deployed(r *rollout) {
	now := s.now()
	for _, sl := range r.moved {
		for _, h := range []struct {
			why   string
			until time.Time
		}{{sl.HoldWhy, sl.RecycleHold}, {sl.MemHoldWhy, sl.MemHold}} {
			if h.why != "" && now.Before(h.until) {
				s.log.Info("recycling no longer held back: a new generation serves", "slot", sl.Index, "gen", r.to.gen, "was", h.why)
			}
		}
		sl.RecycleHold, sl.HoldWhy, sl.RecycleRetry = time.Time{}, "", 0
		sl.MemHold, sl.MemHoldWhy, sl.MemBackoff = time.Time{}, "", 0
	}
}

// hold holds back the slot's automatic recycles, by memory and by age,
// until t, for why, unless they are held back longer already.
func (sl *slot) hold(t time.Time, why string) {
	if t.After(sl.RecycleHold) {
		sl.RecycleHold, sl.HoldWhy = t, why
	}
}

// holdMemory holds back the slot's automatic recycles by memory, not those
// by age, until t, for why, unless they are held back longer already.
func (sl *slot) holdMemory(t time.Time, why string) {
	if t.After(sl.MemHold) {
		sl.MemHold, sl.MemHoldWhy = t, why
	}
}

// memoryHeld says whether the slot's recycles by memory are held back at
// now (by either hold).
func (sl *slot) memoryHeld(now time.Time) bool {
	return now.Before(sl.RecycleHold) || now.Before(sl.MemHold)
}

// held is why the slot's automatic recycles are held back at now, if they
// are, until when, and whether by memory only (recycles by age go on). A
// hold of all of them is said first: it is the one in force.
func (sl *slot) held(now time.Time) (why string, until time.Time, memoryOnly bool) {
	switch {
	case sl.HoldWhy != "" && now.Before(sl.RecycleHold):
		return sl.HoldWhy, sl.RecycleHold, false
	case sl.MemHoldWhy != "" && now.Before(sl.MemHold):
		return sl.MemHoldWhy, sl.MemHold, true
	}
	return "", time.Time{}, false
}

// recentMemRecycles drops the slot's automatic recycles by memory begun an
// hour or more before now, and returns those left, oldest first.
func (sl *slot) recentMemRecycles(now time.Time) []time.Time {
	sl.MemRecycles = slices.DeleteFunc(sl.MemRecycles, func(at time.Time) bool { return !at.After(now.Add(-time.Hour)) })
	return sl.MemRecycles
}

// armRecycleCheck looks at the workers' ages and memory every
// recycleEvery, for as long as baton runs.
func (s *Supervisor) armRecycleCheck() {
	s.after(recycleEvery, func() {
		s.checkRecycle()
		s.armRecycleCheck()
	})
}

// checkRecycle queues the recycles ages call for, and reads the serving
// workers' memory off the loop when a ceiling is set.
func (s *Supervisor) checkRecycle() {
	if s.leaving() || !s.ReadySent {
		return
	}
	now := s.now()
	var pids []int
	for _, sl := range s.slots {
		w := sl.w
		if w == nil || w.State != stateReady {
			continue
		}
		// Only a failed recycle holds a recycle by age: a hold of the
		// recycles by memory (MemHold) does not, --recycle-after being a
		// promise about age.
		if s.cfg.RecycleAfter > 0 && !now.Before(sl.RecycleHold) {
			// Age counts from readiness: a successor is young however
			// long it took to start (counted from its start, one slower
			// than a short limit would be recycled again at once).
			limit := time.Duration(float64(s.cfg.RecycleAfter) * (1 - recycleJitter*w.Jitter))
			born := w.ReadyAt
			if born.IsZero() {
				born = w.started // adopted across an upgrade
			}
			if age := now.Sub(born); age >= limit {
				s.queueRecycle(sl, control.RecycleAge, fmt.Sprintf("up %s, --recycle-after %s", age.Round(time.Second), s.cfg.RecycleAfter))
			}
		}
		if s.cfg.RecycleMemory > 0 {
			pids = append(pids, w.pid)
		}
	}
	if len(pids) == 0 || s.sampling {
		return
	}
	s.sampling = true
	ceiling := s.cfg.RecycleMemory // the loop's: a reload may change it meanwhile
	s.world.background(func() {
		figures := make(map[int]uint64, len(pids))
		errs := map[int]error{}
		for _, pid := range pids {
			m, err := s.world.memory(pid, ceiling)
			if err != nil {
				errs[pid] = err
				continue
			}
			figures[pid] = m
		}
		s.post(func() {
			s.sampling = false
			for pid, err := range errs {
				// Said once a worker: a figure baton cannot read is a
				// ceiling that never acts (a kernel before 4.14 has no
				// smaps_rollup; a setuid process in the tree hides its own).
				if w := s.workers[pid]; w != nil && !w.MemErr {
					w.MemErr = true
					s.log.Warn("cannot read a worker's memory: --recycle-memory cannot act on it", "slot", w.slot.Index, "pid", pid, "err", err)
				}
			}
			s.onMemory(figures, ceiling, s.now())
		})
	})
}

// onMemory takes the memory of the workers' trees, by pid, read at now.
//
// A worker above the ceiling for recycleConfirm is recycled, unless
// recycling does not help: the successor of a recycle by memory that
// crossed the ceiling within its warm-up (recycleWarmup after it was
// ready: born above it, or grown past it as it warmed up) needs what the
// ceiling does not give, as the worker it replaced did. It is reported,
// once, and its slot is not recycled by memory for 30 s, doubling up to an
// hour, instead of in a loop (its recycles by age go on); a successor that stays below the
// ceiling through its warm-up ends the doubling. The first workers, and
// those of a deploy or a crash restart, get no such benefit of the doubt:
// a worker that crossed the ceiling quickly under load is a fast leak, and
// is recycled. Whatever the app does, a slot is recycled by memory at most
// recycleHourly times in any hour: past that, it is not recycled by
// memory until the oldest of those is an hour old (by age, it is).
func (s *Supervisor) onMemory(figures map[int]uint64, ceiling uint64, now time.Time) {
	for pid, m := range figures {
		w := s.workers[pid]
		if w == nil || w.State != stateReady || w.slot.w != w {
			continue
		}
		sl := w.slot
		w.Memory = m
		if ceiling == 0 || m <= ceiling {
			w.OverSince = time.Time{}
			if w.MemSuccessor && !w.CrossedInWarmup && sl.MemBackoff > 0 && now.Sub(w.ReadyAt) >= recycleWarmup {
				sl.MemBackoff = 0 // the recycle helped
			}
			continue
		}
		if w.OverSince.IsZero() {
			w.OverSince = now
		}
		above := now.Sub(w.OverSince)
		if above < recycleConfirm {
			continue // a spike (a large request) is not a leak
		}
		recent := sl.recentMemRecycles(now)
		switch crossed := w.OverSince.Sub(w.ReadyAt); {
		case w.MemSuccessor && !w.CrossedInWarmup && crossed < recycleWarmup:
			w.CrossedInWarmup = true
			sl.MemBackoff = min(max(2*sl.MemBackoff, recycleRetry), recycleRetryMax)
			why := fmt.Sprintf("successor crossed the ceiling %s after ready; raise --recycle-memory", crossed.Round(100*time.Millisecond))
			sl.holdMemory(now.Add(sl.MemBackoff), why)
			s.log.Warn("recycling by memory held back: "+why, "slot", sl.Index, "pid", pid,
				"memory", control.IEC(m), "ceiling", control.IEC(ceiling), "for", sl.MemBackoff)
		case sl.memoryHeld(now):
		case len(recent) >= recycleHourly:
			why := fmt.Sprintf("%d recycles by memory in the last hour; raise --recycle-memory", len(recent))
			sl.holdMemory(recent[len(recent)-recycleHourly].Add(time.Hour), why)
			s.log.Warn("recycling by memory held back: "+why, "slot", sl.Index, "pid", pid,
				"memory", control.IEC(m), "ceiling", control.IEC(ceiling), "for", sl.MemHold.Sub(now).Round(time.Second))
		default:
			s.queueRecycle(sl, control.RecycleMemory, fmt.Sprintf("memory %s above --recycle-memory %s for %s",
				control.IEC(m), control.IEC(ceiling), above.Round(time.Second)))
		}
	}
}

// newJitter is a worker's share of recycleJitter, in [0, 1).
func newJitter() float64 { return rand.Float64() }
