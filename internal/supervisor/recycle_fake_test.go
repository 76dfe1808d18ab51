package supervisor

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// Recycling through the whole supervisor in a fake world: memory and ages
// are what the test says, time moves when it says. recycle_process_test.go
// drives real processes under load.

// tick moves time by one look at the workers and lets it finish.
func (ts *testSupervisor) tick() {
	ts.t.Helper()
	ts.fw.clock.advance(recycleEvery)
	ts.settle()
	if ts.sampling {
		ts.await("the memory figures")
	}
}

// serving is the pid of each slot's serving worker, checking that every
// slot has a ready one: recycling never lowers the number of ready workers.
func (ts *testSupervisor) serving() []int {
	ts.t.Helper()
	if n := ts.readyCount(); n != len(ts.slots) {
		ts.t.Fatalf("%d of %d slots have a ready worker", n, len(ts.slots))
	}
	return ts.pids()
}

func TestRecycleByMemory(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, RecycleMemory: 100, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	ts.armRecycleCheck()
	before := ts.serving()
	ts.fw.mem[before[0]], ts.fw.mem[before[1]] = 60, 60
	ts.tick()
	ts.fw.mem[before[0]] = 150 // slot 0 leaks
	for range 3 {              // above, but not yet for recycleConfirm
		ts.tick()
		if ts.rollout != nil {
			t.Fatal("recycled before the memory stayed above the ceiling for the confirmation window")
		}
	}
	ts.tick()
	if ts.rollout == nil || ts.rollout.recycle != control.RecycleMemory {
		t.Fatal("no recycle of the worker above the ceiling")
	}
	successor := ts.incoming(0)
	if got := ts.serving(); !slices.Equal(got, before) {
		t.Fatalf("serving %v while the successor starts, want %v", got, before)
	}
	old := ts.slots[0].w
	ts.ready(successor)
	if got := ts.serving(); got[0] != successor.pid || got[1] != before[1] {
		t.Fatalf("serving %v after the recycle", got)
	}
	if old.State != stateDraining || !slices.Equal(ts.fw.procs[old.pid].signals, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("the recycled worker is %s, got %v", old.State, ts.fw.procs[old.pid].signals)
	}
	if ts.Last.Kind != "recycle" || ts.Last.Reason != "memory" || len(ts.Last.Replaced) != 1 ||
		ts.Last.Replaced[0] != (control.Replacement{Slot: 0, PID: before[0], Successor: successor.pid}) {
		t.Errorf("last rollout %+v", ts.Last)
	}
	if ts.Totals.Recycles[control.RecycleMemory] != 1 || ts.slots[0].Recycles != 1 || len(ts.Totals.Crashes) != 0 || ts.LastGen != 1 {
		t.Errorf("totals %+v, slot recycles %d, generation %d", ts.Totals, ts.slots[0].Recycles, ts.LastGen)
	}
}

// TestRecycleBornAboveCeiling: when a worker recycled by memory is
// replaced by one above the ceiling at its first look, recycling does not
// help: the successor is reported and its slot backs off, 30 s, then
// 60 s, instead of recycling in a loop.
func TestRecycleBornAboveCeiling(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1, RecycleMemory: 100})
	ts.armRecycleCheck()
	var recycledAt []time.Duration
	start := ts.fw.clock.now
	for range 150 {
		for _, pid := range ts.serving() {
			ts.fw.mem[pid] = 500 // every worker, from its start
		}
		ts.tick()
		if ts.rollout != nil {
			recycledAt = append(recycledAt, ts.fw.clock.now.Sub(start))
			ts.ready(ts.incoming(0))
		}
	}
	// Once at first (a fast leak looks the same), then after each back-off.
	if len(recycledAt) != 3 || recycledAt[1]-recycledAt[0] < 30*time.Second || recycledAt[2]-recycledAt[1] < 60*time.Second {
		t.Fatalf("recycled at %v in 150 s, want 3 times, 30 s and then 60 s apart at least", recycledAt)
	}
	if w := ts.snapshot().Workers[0]; !w.AboveCeiling || w.MemoryBytes != 500 {
		t.Errorf("status of the worker: %+v", w)
	}
}

func TestRecycleByAgeOneAtATime(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 3, RecycleAfter: time.Minute})
	ts.armRecycleCheck()
	before := ts.serving()
	for range 59 {
		ts.tick()
	}
	if ts.rollout != nil && ts.rollout.recycle == "" {
		t.Fatal("a rollout that is not a recycle")
	}
	// Each in turn, in the order of their jittered limits.
	done := map[int]bool{}
	for range 3 {
		for ts.rollout == nil {
			ts.tick()
		}
		if len(ts.rollout.targets) != 1 || done[ts.rollout.targets[0].Index] {
			t.Fatalf("recycle of %d slots, slot %d again", len(ts.rollout.targets), ts.rollout.targets[0].Index)
		}
		i := ts.rollout.targets[0].Index
		done[i] = true
		ts.serving()
		ts.ready(ts.incoming(i))
	}
	if got := ts.serving(); slices.ContainsFunc(got, func(p int) bool { return slices.Contains(before, p) }) {
		t.Errorf("serving %v, some of %v not recycled", got, before)
	}
	if ts.Totals.Recycles[control.RecycleAge] != 3 {
		t.Errorf("totals %+v", ts.Totals)
	}
}

// TestRecycleWaitsForRollout: a recycle asked for during a rollout begins
// when the rollout has ended, in the generation it left serving.
func TestRecycleWaitsForRollout(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1})
	reload, recycle := make(chan rolloutResult, 1), make(chan rolloutResult, 1)
	ts.requestRollout(reload)
	ts.requestRecycle(0, false, recycle)
	if ts.rollout.recycle != "" {
		t.Fatal("the recycle did not wait for the rollout")
	}
	ts.ready(ts.incoming(0))
	if res := ts.result(reload); res.err != nil || res.r.To != 2 {
		t.Fatalf("reload %+v %v", res.r, res.err)
	}
	if ts.rollout == nil || ts.rollout.recycle != control.RecycleManual || ts.incoming(0).spec.gen != 2 {
		t.Fatal("the recycle did not follow the rollout in generation 2")
	}
	ts.ready(ts.incoming(0))
	if res := ts.result(recycle); res.err != nil || res.r.Kind != "recycle" || res.r.To != 2 {
		t.Fatalf("recycle %+v %v", res.r, res.err)
	}
}

// TestRecycleSuccessorFails: a successor that exits before it is ready
// leaves the old worker serving, says why, counts no crash, and holds the
// slot back from automatic recycling for a while.
func TestRecycleSuccessorFails(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1, RecycleAfter: time.Minute})
	ts.armRecycleCheck()
	old := ts.serving()[0]
	for ts.rollout == nil {
		ts.tick()
	}
	ts.exit(ts.incoming(0), 1)
	ts.fw.clock.advance(tailGrace)
	ts.await("the failed successor's output")
	if ts.Last == nil || ts.Last.State != "failed" || ts.Last.Kind != "recycle" {
		t.Fatalf("last %+v", ts.Last)
	}
	if got := ts.serving(); got[0] != old {
		t.Fatalf("serving %v, want the old %d", got, old)
	}
	if len(ts.Totals.Crashes) != 0 || ts.Totals.NewWorkerFailures[control.CauseExit] != 1 || ts.Totals.Recycles != nil {
		t.Errorf("totals %+v", ts.Totals)
	}
	for range 20 {
		ts.tick()
		if ts.rollout != nil {
			t.Fatal("the slot was recycled again at once")
		}
	}
	for range 15 {
		ts.tick()
	}
	if ts.rollout == nil {
		t.Fatal("the slot was never recycled again")
	}
	// A manual recycle of a slot that does not exist is refused.
	reply := make(chan rolloutResult, 1)
	ts.requestRecycle(5, false, reply)
	if res := ts.result(reply); res.err == nil || res.err.Error() != "recycle slot 5: there are slots 0 to 0" {
		t.Errorf("recycle of slot 5: %v", res.err)
	}
}

// TestStopDuringRecycle: a stop during a recycle ends it as it ends a
// rollout (every worker drains), answers its caller and one queued behind
// it, and counts nothing as recycled.
func TestStopDuringRecycle(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	first, queued := make(chan rolloutResult, 1), make(chan rolloutResult, 1)
	ts.requestRecycle(0, false, first)
	ts.requestRecycle(1, false, queued)
	successor := ts.incoming(0)
	ts.beginStop()
	ts.settle()
	if res := ts.result(first); res.err == nil || res.err.Error() != "baton is stopping" {
		t.Errorf("the recycle's caller heard %v", res.err)
	}
	if res := ts.result(queued); res.err == nil {
		t.Error("the queued recycle's caller heard no error")
	}
	for _, w := range ts.workers {
		if w.State != stateDraining {
			t.Errorf("worker %d (the successor: %v) is %s while stopping", w.pid, w == successor, w.State)
		}
	}
	if ts.Totals.Recycles != nil {
		t.Errorf("recycles counted: %v", ts.Totals.Recycles)
	}
}

// TestRecycleOldWorkerCrashes: the worker being recycled crashes while its
// successor starts, the slot's restart comes due meanwhile, and then the
// successor fails too: the slot still gets a worker.
func TestRecycleOldWorkerCrashes(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1})
	reply := make(chan rolloutResult, 1)
	ts.requestRecycle(0, false, reply)
	successor := ts.incoming(0)
	ts.exit(ts.slots[0].w, 1)        // the old worker crashes: a restart after 100ms
	ts.fw.clock.advance(time.Second) // it comes due while the successor starts
	ts.settle()
	ts.exit(successor, 1)
	ts.fw.clock.advance(tailGrace)
	for len(reply) == 0 { // the slot's restart may come first
		ts.await("the failed successor's output")
	}
	if res := ts.result(reply); res.err == nil {
		t.Fatal("the recycle did not fail")
	}
	for range 5 {
		ts.fw.clock.advance(time.Second)
		ts.settle()
	}
	if ts.slots[0].w == nil {
		t.Fatal("the slot was left without a worker")
	}
	ts.ready(ts.slots[0].w)
	if ts.readyCount() != 1 {
		t.Errorf("%d ready", ts.readyCount())
	}
}

// warmingApp drives a fake world whose workers grow after they are ready,
// as apps that fill caches, compile and open pools after READY=1 do: a
// worker's tree holds 7 MB until crossAt(w, n) after it was ready, then
// 35 MB (n counts the workers started in its slot before it; crossAt < 0:
// never). A ceiling of 20 MB is crossed. Successors and crash restarts are
// ready at once; the driver notes when each recycle began.
type warmingApp struct {
	ts       *testSupervisor
	crossAt  func(w *proc, n int) time.Duration
	nth      map[int]int // pid: its n
	count    map[int]int // slot: workers seen
	recycles map[int][]time.Time
	journal  *bytes.Buffer
	last     *rollout
	start    time.Time
}

const warmLow, warmHigh, warmCeiling = 7 << 20, 35 << 20, 20 << 20

func newWarmingApp(t *testing.T, workers int, crossAt func(w *proc, n int) time.Duration) *warmingApp {
	ts := newTestSupervisor(t, Config{Workers: workers, RecycleMemory: warmCeiling})
	a := &warmingApp{ts: ts, crossAt: crossAt, nth: map[int]int{}, count: map[int]int{}, recycles: map[int][]time.Time{}, journal: new(bytes.Buffer)}
	ts.log = slog.New(slog.NewTextHandler(a.journal, nil))
	ts.armRecycleCheck()
	a.start = ts.fw.clock.now
	return a
}

func (a *warmingApp) number(w *proc) {
	if _, ok := a.nth[w.pid]; !ok {
		a.nth[w.pid] = a.count[w.slot.Index]
		a.count[w.slot.Index]++
	}
}

// step sets each worker's memory for the next look, takes it, and runs
// the recycles it begins to their end.
func (a *warmingApp) step() {
	ts := a.ts
	at := ts.fw.clock.now.Add(recycleEvery)
	for _, sl := range ts.slots {
		w := sl.w
		if w == nil {
			continue
		}
		a.number(w)
		if w.State == stateStarting { // a crash restart
			ts.ready(w)
		}
		ts.fw.mem[w.pid] = warmLow
		if d := a.crossAt(w, a.nth[w.pid]); d >= 0 && at.Sub(w.ReadyAt) >= d {
			ts.fw.mem[w.pid] = warmHigh
		}
	}
	ts.tick()
	a.finishRecycles()
}

// finishRecycles makes the successor of each recycle under way ready.
func (a *warmingApp) finishRecycles() {
	ts := a.ts
	for r := ts.rollout; r != nil && r.recycle != "" && r != a.last; r = ts.rollout {
		a.last = r
		for _, sl := range r.targets {
			a.recycles[sl.Index] = append(a.recycles[sl.Index], ts.fw.clock.now)
			n := ts.incoming(sl.Index)
			a.number(n)
			ts.ready(n)
		}
		ts.drainedOut()
	}
}

func (a *warmingApp) run(d time.Duration) {
	for end := a.ts.fw.clock.now.Add(d); a.ts.fw.clock.now.Before(end); {
		a.step()
	}
}

// since is each of at from the start.
func (a *warmingApp) since(at []time.Time) []time.Duration {
	var d []time.Duration
	for _, t := range at {
		d = append(d, t.Sub(a.start))
	}
	return d
}

// tail is the end of a journal, for a failure's message.
func tail(j string) string {
	if len(j) > 2000 {
		return "..." + j[len(j)-2000:]
	}
	return j
}

// mostInAnHour is the most recycles of slot i that began within one hour.
func (a *warmingApp) mostInAnHour(i int) int {
	most, at := 0, a.recycles[i]
	for j := range at {
		n := 0
		for _, t := range at[j:] {
			if t.Sub(at[j]) < time.Hour {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// TestRecycleWarmUpBacksOff: workers that cross --recycle-memory after
// they are ready, within a minute: the first workers are recycled (a fast
// leak looks the same); each successor crosses as well, so recycling does
// not help: the slot backs off, 30 s, 60 s, ... as for a worker born above
// the ceiling, and says why in the journal and in status, instead of
// recycling every few seconds.
func TestRecycleWarmUpBacksOff(t *testing.T) {
	for _, c := range []struct {
		name    string
		crossAt func(w *proc, n int) time.Duration
		seen    string // when the look sees the first successor above it
	}{
		{"at 1.5s", func(*proc, int) time.Duration { return 1500 * time.Millisecond }, "2s"},
		{"at 10s", func(*proc, int) time.Duration { return 10 * time.Second }, "10s"},
		{"at 45s", func(*proc, int) time.Duration { return 45 * time.Second }, "45s"},
		{"5s later each time", func(_ *proc, n int) time.Duration { return 1500*time.Millisecond + time.Duration(n)*5*time.Second }, "7s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newWarmingApp(t, 2, c.crossAt)
			a.run(time.Hour)
			for i := range 2 {
				at := a.recycles[i]
				t.Logf("slot %d recycled at %v", i, a.since(at[:min(len(at), 10)]))
				// The first worker, then one successor after each back-off:
				// 30 s, 60 s, ... 960 s fit in an hour, with their warm-ups.
				if len(at) < 2 || len(at) > 7 {
					t.Fatalf("slot %d recycled %d times in an hour, want 2 to 7 (a back-off after each successor)", i, len(at))
				}
				for k := 2; k < len(at); k++ {
					if gap, want := at[k].Sub(at[k-1]), recycleRetry<<(k-2); gap < want {
						t.Errorf("slot %d: recycle %d came %s after the one before, want %s at least (back-offs %v)", i, k, gap, want, at)
					}
				}
			}
			want := "successor crossed the ceiling " + c.seen + " after ready; raise --recycle-memory"
			if j := a.journal.String(); !strings.Contains(j, "recycling by memory held back: "+want) {
				t.Errorf("the journal does not say %q:\n%s", want, tail(j))
			}
			st := a.ts.snapshot()
			for _, w := range st.Workers {
				if !strings.HasPrefix(w.RecycleHeld, "successor crossed the ceiling ") || !strings.HasSuffix(w.RecycleHeld, "; raise --recycle-memory") ||
					w.RecycleHeldUntil == nil || !w.AboveCeiling {
					t.Errorf("status of slot %d: held %q until %v, above the ceiling %v", w.Slot, w.RecycleHeld, w.RecycleHeldUntil, w.AboveCeiling)
				}
			}
		})
	}
}

// TestRecycleHourlyBound: whatever the app does, a slot is recycled by
// memory at most recycleHourly times in any hour. Workers that cross the
// ceiling just after their warm-up are recycled each time (each recycle
// bought a minute below it) until the bound holds the slot back, saying
// so; then, an hour after the first, recycling goes on. Workers that cross
// at random times and crash at random are held to it as well.
func TestRecycleHourlyBound(t *testing.T) {
	t.Run("65s after ready each time", func(t *testing.T) {
		a := newWarmingApp(t, 2, func(*proc, int) time.Duration { return 65 * time.Second })
		var held control.Worker
		for end := a.ts.fw.clock.now.Add(150 * time.Minute); a.ts.fw.clock.now.Before(end); {
			a.step()
			if why, _, _ := a.ts.slots[0].held(a.ts.fw.clock.now); held.RecycleHeld == "" && why != "" {
				held = a.ts.snapshot().Workers[0]
			}
		}
		for i := range 2 {
			t.Logf("slot %d recycled at %v", i, a.since(a.recycles[i][:min(len(a.recycles[i]), 14)]))
			if most := a.mostInAnHour(i); most != recycleHourly {
				t.Errorf("slot %d: %d recycles in one hour, want the bound, %d", i, most, recycleHourly)
			}
			if n := len(a.recycles[i]); n < 2*recycleHourly+1 {
				t.Errorf("slot %d: %d recycles in 150 minutes: recycling did not go on after the hour", i, n)
			}
		}
		const why = "12 recycles by memory in the last hour; raise --recycle-memory"
		if held.RecycleHeld != why || held.RecycleHeldUntil == nil {
			t.Errorf("status of slot 0 when first held: %q until %v, want %q", held.RecycleHeld, held.RecycleHeldUntil, why)
		}
		if j := a.journal.String(); !strings.Contains(j, "recycling by memory held back: "+why) {
			t.Errorf("the journal does not say %q:\n%s", why, tail(j))
		}
	})
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("at random, seed %d", seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, seed))
			crossAt := map[int]time.Duration{}
			a := newWarmingApp(t, 3, func(w *proc, _ int) time.Duration {
				d, ok := crossAt[w.pid]
				if !ok {
					d = time.Duration(rnd.Int64N(int64(3*recycleWarmup))) - recycleWarmup/2 // a quarter never cross
					crossAt[w.pid] = d
				}
				return d
			})
			for end := a.ts.fw.clock.now.Add(2 * time.Hour); a.ts.fw.clock.now.Before(end); {
				a.step()
				if rnd.IntN(300) == 0 {
					if w := a.ts.slots[rnd.IntN(3)].w; w != nil && w.State == stateReady && a.ts.rollout == nil {
						a.ts.exit(w, 1)
					}
				}
			}
			for i := range 3 {
				t.Logf("slot %d: at most %d recycles in an hour, %d in all", i, a.mostInAnHour(i), len(a.recycles[i]))
				if most := a.mostInAnHour(i); most > recycleHourly || len(a.recycles[i]) < 2 {
					t.Errorf("slot %d: %d recycles in one hour (bound %d), %d in all: %v", i, most, recycleHourly, len(a.recycles[i]), a.since(a.recycles[i]))
				}
			}
		})
	}
}

// TestRecycleWarmUpDeployClears: a deploy (reload) of a release that no
// longer crosses the ceiling ends the back-off at once: status shows no
// hold and its workers serve on. A later release that crosses again starts
// over: its first workers are recycled, then the back-off is 30 s again,
// not the doubled one the earlier release had reached.
func TestRecycleWarmUpDeployClears(t *testing.T) {
	crossAt := map[int]time.Duration{1: 1500 * time.Millisecond, 2: -1, 3: 1500 * time.Millisecond}
	a := newWarmingApp(t, 2, func(w *proc, _ int) time.Duration { return crossAt[w.spec.gen] })
	ts := a.ts
	for ts.slots[0].MemBackoff < 4*recycleRetry {
		if ts.fw.clock.now.Sub(a.start) > time.Hour {
			t.Fatalf("slot 0 backs off %s after an hour, recycled %d times", ts.slots[0].MemBackoff, len(a.recycles[0]))
		}
		a.step()
	}
	if w := ts.snapshot().Workers[0]; w.RecycleHeld == "" {
		t.Fatalf("slot 0 backs off %s but status shows no hold: %+v", ts.slots[0].MemBackoff, w)
	}
	if res := ts.rollAll(false); res.err != nil || res.r.To != 2 {
		t.Fatalf("deploy of the fixed release: %+v %v", res.r, res.err)
	}
	for _, w := range ts.snapshot().Workers {
		if w.RecycleHeld != "" || ts.slots[w.Slot].MemBackoff != 0 {
			t.Errorf("after the deploy, slot %d: held %q, back-off %s", w.Slot, w.RecycleHeld, ts.slots[w.Slot].MemBackoff)
		}
	}
	if !strings.Contains(a.journal.String(), "recycling no longer held back: a new generation serves") {
		t.Errorf("the journal does not say the deploy ended the hold:\n%s", tail(a.journal.String()))
	}
	before := len(a.recycles[0])
	a.run(10 * time.Minute)
	if n := len(a.recycles[0]) - before; n != 0 {
		t.Fatalf("the fixed release was recycled %d times", n)
	}
	if res := ts.rollAll(false); res.err != nil || res.r.To != 3 {
		t.Fatalf("deploy of a release that crosses again: %+v %v", res.r, res.err)
	}
	deployed := ts.fw.clock.now
	for ts.slots[0].MemBackoff == 0 {
		if ts.fw.clock.now.Sub(deployed) > 10*time.Minute {
			t.Fatalf("generation 3 never backed off: recycled at %v", a.since(a.recycles[0][before:]))
		}
		a.step()
	}
	if at := a.recycles[0][before:]; len(at) != 1 || ts.slots[0].MemBackoff != recycleRetry || ts.slots[0].MemHold.Sub(ts.fw.clock.now) != recycleRetry {
		t.Errorf("after the deploy of generation 3 at %s: recycled at %v, back-off %s, held until %s",
			deployed.Sub(a.start), a.since(at), ts.slots[0].MemBackoff, ts.slots[0].MemHold.Sub(a.start))
	}
}

// TestRecycleByHandWhileHeld: `baton recycle` works on a slot whose
// automatic recycles are held back, and leaves the hold in place: its
// successor is of the same release.
func TestRecycleByHandWhileHeld(t *testing.T) {
	a := newWarmingApp(t, 1, func(*proc, int) time.Duration { return 1500 * time.Millisecond })
	ts := a.ts
	for ts.snapshot().Workers[0].RecycleHeld == "" {
		if ts.fw.clock.now.Sub(a.start) > 10*time.Minute {
			t.Fatalf("never held in 10 minutes:\n%s", tail(a.journal.String()))
		}
		a.step()
	}
	held := ts.snapshot().Workers[0]
	old := ts.slots[0].w.pid
	reply := make(chan rolloutResult, 1)
	ts.requestRecycle(0, false, reply)
	if ts.rollout == nil || ts.rollout.recycle != control.RecycleManual {
		t.Fatal("the recycle by hand did not begin")
	}
	a.finishRecycles()
	res := ts.result(reply)
	if res.err != nil || len(res.r.Replaced) != 1 || res.r.Replaced[0].PID != old {
		t.Fatalf("recycle by hand while held: %+v %v", res.r, res.err)
	}
	if w := ts.snapshot().Workers[0]; w.RecycleHeld != held.RecycleHeld || !w.RecycleHeldUntil.Equal(*held.RecycleHeldUntil) {
		t.Errorf("after the recycle by hand: held %q until %v, was %q until %v", w.RecycleHeld, w.RecycleHeldUntil, held.RecycleHeld, held.RecycleHeldUntil)
	}
}

// TestRecycleAgeGoesOnWhileMemoryHeld: --recycle-after is a promise about
// age, so a slot whose recycles by memory are held back (its successors
// cross the ceiling within their warm-up, or the hourly bound is reached)
// is still recycled by age: no worker serves much past the limit. The
// memory holds still hold: recycles by memory stay as few as without
// --recycle-after.
func TestRecycleAgeGoesOnWhileMemoryHeld(t *testing.T) {
	const after = 2 * time.Minute
	for _, c := range []struct {
		name    string
		crossAt time.Duration
		held    string // the memory hold that must have been seen
		most    uint64 // recycles by memory of both slots in the hour, at most
	}{
		{"warm-up back-off", 1500 * time.Millisecond, "successor crossed the ceiling ", 2 * 7},
		{"hourly bound", 65 * time.Second, "12 recycles by memory in the last hour", 2 * recycleHourly},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newWarmingApp(t, 2, func(*proc, int) time.Duration { return c.crossAt })
			a.ts.cfg.RecycleAfter = after
			seen := false
			for end := a.ts.fw.clock.now.Add(time.Hour); a.ts.fw.clock.now.Before(end); {
				a.step()
				for _, w := range a.ts.snapshot().Workers {
					if strings.HasPrefix(w.RecycleHeld, c.held) && w.RecycleHeldMemoryOnly {
						seen = true
					}
				}
			}
			if !seen {
				t.Fatalf("no slot's recycles by memory were held back for %q in an hour: the test shows nothing:\n%s", c.held, tail(a.journal.String()))
			}
			for i := range 2 {
				at := a.recycles[i]
				prev, longest := a.start, time.Duration(0)
				for _, r := range append(slices.Clone(at), a.ts.fw.clock.now) {
					longest, prev = max(longest, r.Sub(prev)), r
				}
				// The limit, less its jitter, then the next look.
				if longest > after+recycleEvery {
					t.Errorf("slot %d: a worker served %s unrecycled, past --recycle-after %s (recycles at %v)", i, longest, after, a.since(at))
				}
			}
			if n, age := a.ts.Totals.Recycles[control.RecycleMemory], a.ts.Totals.Recycles[control.RecycleAge]; n > c.most || age == 0 {
				t.Errorf("%d recycles by memory in an hour (at most %d), %d by age", n, c.most, age)
			}
		})
	}
}

// TestRecycleAboveCeilingClears: status says a worker is above the
// ceiling (above_ceiling, what a client before recycle_held shows) while
// its slot backs off for it and it is above the ceiling; once its memory
// drops below, it no longer says so, though the hold stays (the recycle
// did not help all the same).
func TestRecycleAboveCeilingClears(t *testing.T) {
	high := true
	a := newWarmingApp(t, 1, func(*proc, int) time.Duration {
		if !high {
			return -1
		}
		return 1500 * time.Millisecond
	})
	ts := a.ts
	for !ts.snapshot().Workers[0].AboveCeiling {
		if ts.fw.clock.now.Sub(a.start) > 10*time.Minute {
			t.Fatalf("never above the ceiling and held in 10 minutes:\n%s", tail(a.journal.String()))
		}
		a.step()
	}
	held := ts.snapshot().Workers[0]
	high = false
	a.step()
	a.step()
	w := ts.snapshot().Workers[0]
	if w.PID != held.PID || w.MemoryBytes != warmLow || w.RecycleHeld != held.RecycleHeld {
		t.Fatalf("after the memory dropped: %+v; was %+v", w, held)
	}
	if w.AboveCeiling {
		t.Errorf("status says the worker is above the ceiling at %d bytes (ceiling %d)", w.MemoryBytes, uint64(warmCeiling))
	}
	if ts.slots[0].MemBackoff != recycleRetry {
		t.Errorf("back-off %s after the memory dropped, want still %s", ts.slots[0].MemBackoff, recycleRetry)
	}
}
