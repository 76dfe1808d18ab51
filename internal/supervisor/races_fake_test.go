package supervisor

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
)

// The whole supervisor in a fake world: workers and helper commands are
// fakes, time moves when the test says, and the test is the event loop
// (what Run's select would run, it runs in the order the race needs).

type testSupervisor struct {
	*Supervisor
	t  *testing.T
	fw *fakeWorld
}

// newTestSupervisor starts cfg's slots in a fake world and makes them
// ready: generation 1 serves, READY=1 was sent.
func newTestSupervisor(t *testing.T, cfg Config) *testSupervisor {
	fw := &fakeWorld{clock: fakeClock{now: time.Unix(1e9, 0)}, pid: 1000, procs: map[int]*fakeProcess{}, mem: map[int]uint64{}}
	cfg.Command = []string{"worker"}
	cfg.ShimPath, cfg.ShimArgv = "/bin/true", []string{"shim"}
	cfg.ReadyTimeout, cfg.DrainTimeout = time.Minute, 10*time.Second
	cfg.MaxSurge = max(cfg.MaxSurge, 1)
	cfg.RestartBackoff = Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	cfg.CrashLimit = CrashLimit{N: 10, Per: time.Minute}
	s, err := newIn(fw.world(), func() (Config, error) { return cfg, nil })
	if err != nil {
		t.Fatal(err)
	}
	ts := &testSupervisor{Supervisor: s, t: t, fw: fw}
	ts.makeSlots()
	ts.startQueued()
	for _, sl := range ts.slots {
		ts.ready(sl.w)
	}
	if !ts.ReadySent {
		t.Fatal("the fake workers' READY=1 did not make the service ready")
	}
	return ts
}

// settle runs the loop's step until no event is ready: what Run's loop
// would run next, without waiting for anything.
func (ts *testSupervisor) settle() {
	in := &loopIn{idle: closedChan}
	for {
		switch ts.step(in) {
		case stepEnded:
			return
		case stepIdle:
			if len(ts.later) == 0 && len(ts.events) == 0 && (len(ts.toStart) == 0 || ts.stopping) {
				return
			}
		}
	}
}

// await lets the next thing off the loop happen (output that has ended or
// whose grace has passed, a memory reading), then settles.
func (ts *testSupervisor) await(what string) {
	ts.t.Helper()
	if !ts.fw.offLoop() {
		ts.t.Fatalf("%s never reached the loop", what)
	}
	ts.settle()
}

func (ts *testSupervisor) ready(w *proc) {
	ts.onNotify(w.pid, notify.Message{"READY": "1"})
	ts.settle()
}

func (ts *testSupervisor) exit(w *proc, code int) {
	ts.onExit(w, unix.WaitStatus(code<<8))
	ts.settle()
}

// helperExits ends the one helper command running.
func (ts *testSupervisor) helperExits(code int) {
	ts.t.Helper()
	if len(ts.helpers) != 1 {
		ts.t.Fatalf("%d helper commands running, want 1", len(ts.helpers))
	}
	for _, h := range ts.helpers {
		<-h.readDone // nothing writes to it: it ends with the fork
		ts.onHelperExit(h, unix.WaitStatus(code<<8))
	}
	ts.await("the helper's exit")
}

// incoming is the worker coming up in slot i.
func (ts *testSupervisor) incoming(i int) *proc {
	ts.t.Helper()
	if w := ts.slots[i].next; w != nil {
		return w
	}
	ts.t.Fatalf("slot %d has no incoming worker", i)
	return nil
}

// drainedOut: the workers told to drain exit, as they would.
func (ts *testSupervisor) drainedOut() {
	for _, w := range ts.workers {
		if w.State == stateDraining {
			ts.exit(w, 0)
		}
	}
}

func (ts *testSupervisor) gens() []int {
	var g []int
	for _, sl := range ts.slots {
		g = append(g, sl.spec.gen)
	}
	return g
}

func (ts *testSupervisor) result(reply chan rolloutResult) rolloutResult {
	ts.t.Helper()
	select {
	case res := <-reply:
		return res
	default:
		ts.t.Fatal("no rollout result yet")
	}
	return rolloutResult{}
}

// TestUpgradeWhileChecking: SIGUSR2 while a rollout's --check runs is
// deferred, not refused and not run alongside: it asks the binary on disk
// only once the rollout has ended, and the rollout ends as it would have.
func TestUpgradeWhileChecking(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, Check: "./check-config"})
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	if ts.rollout == nil || ts.rollout.phase != phaseChecking {
		t.Fatalf("rollout %+v, want it checking", ts.rollout)
	}
	ts.onSignal(unix.SIGUSR2)
	if !ts.upgradeDeferred || ts.upgrading || len(ts.fw.helpers) != 1 {
		t.Fatalf("SIGUSR2 while checking: deferred %v, upgrading %v, helpers %v; want deferred alone", ts.upgradeDeferred, ts.upgrading, ts.fw.helpers)
	}
	ts.helperExits(0) // the check passed
	for i := range 2 {
		ts.ready(ts.incoming(i))
	}
	ts.drainedOut()
	res := ts.result(reply)
	if res.err != nil || res.r.State != "ok" {
		t.Fatalf("rollout %+v, %v; want ok", res.r, res.err)
	}
	if got := ts.gens(); !slices.Equal(got, []int{2, 2}) {
		t.Errorf("slots serve %v, want [2 2]", got)
	}
	if len(ts.fw.helpers) != 2 || !slices.Equal(ts.fw.helpers[1], []string{ts.exe, "version"}) {
		t.Fatalf("helpers %q, want the check, then the upgrade's version question", ts.fw.helpers)
	}
	if !ts.upgrading || ts.upgradeDeferred {
		t.Errorf("after the rollout: upgrading %v, deferred %v; want the upgrade running", ts.upgrading, ts.upgradeDeferred)
	}
}

// TestStopWhileFailureIsExplained: a new worker fails and its last output
// is still on its way when baton is told to stop. The rollout ends once,
// as stopped; the late output changes nothing; nothing restarts.
func TestStopWhileFailureIsExplained(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	failed := ts.incoming(0)
	failed.p.(*fakeProcess).tail = []string{"panic: boom"}
	ts.exit(failed, 2)
	if ts.rollout == nil || ts.rollout.phase != phaseRollingBack {
		t.Fatalf("rollout %+v, want it rolling back at once", ts.rollout)
	}
	ts.onSignal(unix.SIGTERM)
	res := ts.result(reply)
	if res.err == nil || !strings.Contains(res.err.Error(), "baton is stopping") {
		t.Fatalf("rollout ended with %v, want it stopped", res.err)
	}
	failed.p.(*fakeProcess).outputEnds()
	ts.await("the failed worker's output") // its afterOutput callback
	if ts.Last.Error != res.r.Error {
		t.Errorf("the late output changed the result to %q", ts.Last.Error)
	}
	for _, sl := range ts.slots {
		if sl.restart != nil || sl.next != nil {
			t.Errorf("slot %d: restart %v, next %v after a stop", sl.Index, sl.restart != nil, sl.next)
		}
	}
	for _, w := range ts.workers {
		if w.State != stateDraining {
			t.Errorf("worker %d is %s, want draining", w.pid, w.State)
		}
	}
}

// TestReloadDuringRollback: SIGHUP while a failed rollout rolls back makes
// one more rollout once it has ended; the caller waiting on the first gets
// the result of the last, which here succeeds.
func TestReloadDuringRollback(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	ts.ready(ts.incoming(0)) // slot 0 moved to generation 2
	failed := ts.incoming(1)
	ts.exit(failed, 1)
	ts.onSignal(unix.SIGHUP)
	if !ts.requests.again {
		t.Fatal("SIGHUP during the rollback was not kept for after it")
	}
	back := ts.incoming(0) // generation 1 again in slot 0
	if back.spec.gen != 1 {
		t.Fatalf("slot 0 rolls back to generation %d, want 1", back.spec.gen)
	}
	ts.ready(back)
	if ts.rollout.phase.ended() {
		t.Fatal("the rollout ended before the failed worker's output was read")
	}
	failed.p.(*fakeProcess).outputEnds()
	ts.await("the failed worker's output")
	if ts.Last == nil || ts.Last.State != "failed" || ts.rollout == nil {
		t.Fatalf("after the rollback: last %+v, rollout %+v; want it failed and the next one running", ts.Last, ts.rollout)
	}
	for i := range 2 {
		ts.ready(ts.incoming(i))
	}
	ts.drainedOut()
	res := ts.result(reply)
	if res.err != nil || res.r.To != 3 {
		t.Fatalf("the waiting caller got %+v, %v; want the second rollout's success (to generation 3)", res.r, res.err)
	}
}

// rolloutWithOneMore: 2 workers, a rollout whose slot 0 has moved and whose
// slot 1 waits for its new worker's readiness, and a reload asked for
// meanwhile (one more follows); reply gets the caller's result.
func rolloutWithOneMore(t *testing.T) (*testSupervisor, chan rolloutResult) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	ts.ready(ts.incoming(0))
	ts.onSignal(unix.SIGHUP)
	if !ts.requests.again {
		t.Fatal("the reload asked for during the rollout is not kept for after it")
	}
	return ts, reply
}

// TestReplaceAsTheRolloutEnds: the event that ends a rollout with one more
// to follow (a reload asked for during it) also asks for a replace (the
// listener check at the last worker's readiness found a socket shut down).
// One rollout runs at a time: the replace waits its turn; it does not begin
// beside the one that follows, which would take the slots' incoming
// workers from under it.
func TestReplaceAsTheRolloutEnds(t *testing.T) {
	ts, reply := rolloutWithOneMore(t)
	last := ts.incoming(1)
	// What the listener check queues during the last worker's readiness,
	// before the rollout's end is handled in the same event.
	ts.soon(func() { ts.requestReplace("listener http was shut down under the workers") })
	ts.ready(last)
	ts.drainedOut()
	if ts.rollout == nil {
		t.Fatal("no rollout follows the first")
	}
	following := ts.rollout
	for i := range 2 {
		w := ts.incoming(i)
		if w.spec != following.to {
			t.Errorf("slot %d's incoming worker (generation %d) is not the running rollout's (to generation %d): two rollouts began", i, w.spec.gen, following.to.gen)
		}
		ts.ready(w)
	}
	ts.drainedOut()
	if ts.rollout == following {
		t.Fatal("the rollout that followed did not end")
	}
	// The replace asked for meanwhile is the one more after it.
	if ts.rollout == nil {
		t.Fatal("the replace asked for as the first rollout ended was lost")
	}
	for i := range 2 {
		ts.ready(ts.incoming(i))
	}
	ts.drainedOut()
	res := ts.result(reply)
	if res.err != nil || ts.rollout != nil || !slices.Equal(ts.gens(), []int{4, 4}) {
		t.Fatalf("after the rollouts: %+v, %v, rollout %v, slots serve %v; want generation 4 everywhere", res.r, res.err, ts.rollout, ts.gens())
	}
}

// TestStopAsTheRolloutEnds: the event that ends a rollout with one more to
// follow also stops baton (here a stop signal handled in the same pass,
// as the crash limit would be). The rollout that was to follow ends as
// stopped, before it began: no new worker starts while baton stops, and
// the caller hears that baton is stopping.
func TestStopAsTheRolloutEnds(t *testing.T) {
	ts, reply := rolloutWithOneMore(t)
	ts.soon(func() { ts.onSignal(unix.SIGTERM) })
	ts.ready(ts.incoming(1))
	res := ts.result(reply)
	if res.err == nil || !strings.Contains(res.err.Error(), "baton is stopping") {
		t.Errorf("the caller got %+v, %v; want that baton is stopping", res.r, res.err)
	}
	if ts.rollout != nil {
		t.Errorf("a rollout runs while baton stops: %s", ts.rollout.phase)
	}
	for _, sl := range ts.slots {
		if sl.next != nil {
			t.Errorf("slot %d brings up a worker of generation %d while baton stops", sl.Index, sl.next.spec.gen)
		}
	}
	for _, w := range ts.workers {
		if w.State != stateDraining {
			t.Errorf("worker %d (generation %d) is %s, want draining", w.pid, w.spec.gen, w.State)
		}
	}
}

// TestRollbackStartFailureIsNoCrash: a rollout's new worker in a slot it
// had moved exits, and the rollback cannot start the previous generation's
// worker there (baton's own fork fails). The slot restarts after its
// backoff; nothing counts against --crash-limit: no worker of the serving
// generation crashed. (Counted, it could reach the limit and stop baton in
// the middle of the rollback, which then went on starting workers.)
func TestRollbackStartFailureIsNoCrash(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	ts.ready(ts.incoming(0)) // slot 0 moved to generation 2
	ts.fw.startErr = &worker.ExecError{Path: "worker", Err: syscall.EAGAIN}
	ts.exit(ts.slots[0].w, 1)
	ts.fw.startErr = nil
	if ts.rollout == nil || ts.rollout.phase != phaseRollingBack {
		t.Fatalf("rollout %+v, want it rolling back", ts.rollout)
	}
	if len(ts.Crashes) != 0 || ts.Totals.Crashes[control.CauseExit] != 0 {
		t.Errorf("crashes %v, totals %v: a rollback's failed start counted as a crash", ts.Crashes, ts.Totals.Crashes)
	}
	if ts.slots[0].restart == nil {
		t.Error("slot 0, left empty, does not restart")
	}
}
