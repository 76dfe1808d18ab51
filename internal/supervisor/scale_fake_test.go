package supervisor

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Scaling through the whole supervisor in a fake world: the slots a scale
// adds and removes, what it leaves serving when it fails, and how it meets
// rollouts and crashes. scale.txtar and TestScaleUnderLoad drive real
// processes.

func (ts *testSupervisor) pids() []int {
	var p []int
	for _, sl := range ts.slots {
		if sl.w == nil {
			p = append(p, 0)
			continue
		}
		p = append(p, sl.w.pid)
	}
	return p
}

func TestScaleUpThenDown(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	before := ts.pids()
	reply := make(chan rolloutResult, 1)
	ts.requestScale(4, reply)
	if len(ts.slots) != 4 {
		t.Fatalf("%d slots while scaling to 4", len(ts.slots))
	}
	ts.ready(ts.incoming(2))
	if len(reply) != 0 {
		t.Fatal("the scale ended before every added slot was ready")
	}
	if st := ts.readyCount(); st != 3 {
		t.Errorf("%d workers ready in the middle of the scale, want 3 (an added slot counts once ready)", st)
	}
	ts.ready(ts.incoming(3))
	res := ts.result(reply)
	if res.err != nil || res.r.Workers != 4 || res.r.WorkersFrom != 2 || res.r.To != 1 {
		t.Fatalf("scale to 4: %+v, %v", res.r, res.err)
	}
	if got := ts.pids()[:2]; got[0] != before[0] || got[1] != before[1] {
		t.Errorf("the serving workers were replaced by a scale: %v, were %v", got, before)
	}
	if ts.status != "4/4 ready, generation 1, last scale ok" {
		t.Errorf("STATUS=%q after the scale", ts.status)
	}

	gone := []*proc{ts.slots[1].w, ts.slots[2].w, ts.slots[3].w}
	ts.requestScale(1, reply)
	res = ts.result(reply)
	if res.err != nil || res.r.Workers != 1 || len(ts.slots) != 1 {
		t.Fatalf("scale to 1: %+v, %v; %d slots", res.r, res.err, len(ts.slots))
	}
	for _, w := range gone {
		if w.State != stateDraining {
			t.Errorf("worker %d of a removed slot is %s, want draining", w.pid, w.State)
		}
	}
	ts.drainedOut()
	if len(ts.workers) != 1 || ts.slots[0].w.pid != before[0] {
		t.Errorf("after scaling down: workers %v, slot 0 pid %d (was %d)", ts.workers, ts.slots[0].w.pid, before[0])
	}
	for _, w := range gone {
		if w.slot.restart != nil {
			t.Errorf("removed slot %d is to restart", w.slot.Index)
		}
	}
}

// TestScaleFailureKeepsSize: an added slot's worker exits before it is
// ready; the scale fails with its reason, the slots it added go (their
// ready workers drained too), and the old number serves.
func TestScaleFailureKeepsSize(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestScale(4, reply)
	added := ts.incoming(2)
	ts.ready(added)
	failed := ts.incoming(3)
	failed.p.(*fakeProcess).tail = []string{"no room"}
	ts.exit(failed, 1)
	failed.p.(*fakeProcess).outputEnds()
	ts.await("the failed worker's output")
	res := ts.result(reply)
	if res.err == nil || !strings.Contains(res.err.Error(), "worker 3") || !strings.Contains(res.err.Error(), "no room") {
		t.Fatalf("the failed scale says %v", res.err)
	}
	if len(ts.slots) != 2 || ts.readyCount() != 2 {
		t.Errorf("after the failed scale: %d slots, %d ready; want the 2 serving before", len(ts.slots), ts.readyCount())
	}
	if added.State != stateDraining {
		t.Errorf("the added slot's ready worker is %s, want draining", added.State)
	}
	if len(ts.Crashes) != 0 {
		t.Errorf("a new slot's failure counted as %d crashes of the serving generation", len(ts.Crashes))
	}
}

// TestScaleDuringRollout: a scale asked while a reload rolls out follows it
// and uses the new generation; both callers get the final result, and no
// slot is left in another generation.
func TestScaleDuringRollout(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reload, scale := make(chan rolloutResult, 1), make(chan rolloutResult, 1)
	ts.requestRollout(reload)
	ts.ready(ts.incoming(0))
	ts.requestScale(3, scale)
	if len(ts.slots) != 2 {
		t.Fatalf("the scale changed the slots (%d) in the middle of a rollout", len(ts.slots))
	}
	ts.ready(ts.incoming(1))
	if len(reload) != 0 {
		t.Fatal("the reload's caller was answered before the scale that followed it ended")
	}
	w := ts.incoming(2)
	if w.spec.gen != 2 {
		t.Errorf("the added slot starts generation %d, want the one just rolled out (2)", w.spec.gen)
	}
	ts.ready(w)
	for _, c := range []chan rolloutResult{reload, scale} {
		if res := ts.result(c); res.err != nil || res.r.Workers != 3 {
			t.Errorf("result %+v, %v; want 3 workers", res.r, res.err)
		}
	}
	if g := ts.gens(); len(g) != 3 || g[0] != 2 || g[1] != 2 || g[2] != 2 {
		t.Errorf("generations %v, want [2 2 2]", g)
	}
}

// TestReloadDuringScale: SIGHUP during a scale rolls out once it has ended,
// over every slot, the added ones included.
func TestReloadDuringScale(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1})
	scale := make(chan rolloutResult, 1)
	ts.requestScale(2, scale)
	ts.onSignal(unix.SIGHUP)
	ts.ready(ts.incoming(1))
	if ts.rollout == nil || ts.rollout.scaleOnly {
		t.Fatalf("no rollout followed the scale: %+v", ts.rollout)
	}
	for i := range 2 {
		ts.ready(ts.incoming(i))
	}
	res := ts.result(scale)
	if res.err != nil || res.r.To != 2 || res.r.Slots != 2 {
		t.Fatalf("result %+v, %v; want generation 2 in both slots", res.r, res.err)
	}
}

// TestCrashDuringScale: a serving worker that crashes while a scale runs
// is a crash, restarted in its slot; it does not fail the scale.
func TestCrashDuringScale(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestScale(3, reply)
	ts.exit(ts.slots[0].w, 1)
	if ts.rollout == nil || ts.rollout.phase != phaseRolling {
		t.Fatalf("a serving worker's crash moved the scale to %v", ts.rollout)
	}
	ts.ready(ts.incoming(2))
	if res := ts.result(reply); res.err != nil {
		t.Fatalf("the scale failed: %v", res.err)
	}
	if ts.slots[0].restart == nil {
		t.Fatal("the crashed slot is not restarting")
	}
	ts.fw.clock.advance(time.Second)
	ts.settle()
	if ts.slots[0].w == nil {
		t.Fatal("the crashed slot was not restarted")
	}
}

// TestScaleRefused: numbers out of bounds are refused naming the bound,
// and nothing changes.
func TestScaleRefused(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestScale(MaxWorkers+1, reply)
	if res := ts.result(reply); res.err == nil || !strings.Contains(res.err.Error(), "want 1 to 4096") {
		t.Errorf("scale to %d: %v", MaxWorkers+1, res.err)
	}
	if len(ts.slots) != 2 || ts.rollout != nil {
		t.Errorf("a refused scale changed things: %d slots, rollout %v", len(ts.slots), ts.rollout)
	}
}
