package supervisor

import (
	"slices"
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
