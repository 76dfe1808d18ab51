package supervisor

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// Pinned generations and rollback through the whole supervisor in a fake
// world. compat/deploy_test.go and deploy.txtar drive real processes.

// deployed makes the configuration the next reload reads say dir and env.
func (ts *testSupervisor) deployed(dir string, env ...string) {
	cfg := ts.cfg
	cfg.Directory, cfg.Env = dir, env
	ts.reload = func() (Config, error) { return cfg, nil }
}

// rollAll runs a rollout (or a rollback, with rollback) to its end,
// making each incoming worker ready, and returns its result.
func (ts *testSupervisor) rollAll(rollback bool) rolloutResult {
	ts.t.Helper()
	reply := make(chan rolloutResult, 1)
	if rollback {
		ts.requestRollback(reply)
	} else {
		ts.requestRollout(reply)
	}
	for i := range ts.slots {
		if len(reply) > 0 {
			break
		}
		ts.ready(ts.incoming(i))
	}
	ts.drainedOut()
	return ts.result(reply)
}

// lastSpec is what the last worker started was started with.
func (ts *testSupervisor) lastSpec() (dir string, env []string) {
	s := ts.fw.specs[len(ts.fw.specs)-1]
	return s.Dir, s.Env
}

func TestRollbackToggles(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, GenSettings: GenSettings{Directory: "/srv/app/releases/v1", Env: []string{"GREETING=hello"}}})
	reply := make(chan rolloutResult, 1)
	ts.requestRollback(reply)
	if res := ts.result(reply); res.err == nil || res.err.Error() != "no previous generation to roll back to: nothing but what generation 1 runs has served since the service started" {
		t.Fatalf("rollback with no previous generation: %v", res.err)
	}

	ts.deployed("/srv/app/releases/v2", "GREETING=bonjour")
	if res := ts.rollAll(false); res.err != nil || res.r.To != 2 {
		t.Fatalf("deploy: %+v %v", res.r, res.err)
	}
	// The configuration moves on (a symlink switched, not reloaded): a
	// rollback ignores it.
	ts.deployed("/srv/app/releases/v3", "GREETING=salut")
	res := ts.rollAll(true)
	want := []string{"directory /srv/app/releases/v2 → /srv/app/releases/v1", "environment changed: GREETING"}
	if res.err != nil || res.r.Kind != "rollback" || res.r.To != 3 || res.r.RollbackOf != 1 || !slices.Equal(res.r.Changes, want) {
		t.Fatalf("rollback: %+v %v", res.r, res.err)
	}
	if dir, env := ts.lastSpec(); dir != "/srv/app/releases/v1" || !slices.Contains(env, "GREETING=hello") {
		t.Errorf("the rollback's workers start in %q with %q", dir, env)
	}
	// A crash restart after the rollback runs its generation's release.
	ts.exit(ts.slots[0].w, 1)
	ts.fw.clock.advance(time.Second)
	ts.settle()
	if dir, _ := ts.lastSpec(); dir != "/srv/app/releases/v1" || ts.slots[0].w == nil || ts.slots[0].w.spec.gen != 3 {
		t.Errorf("the crash restart starts in %q", dir)
	}
	ts.ready(ts.slots[0].w)

	// A second rollback returns to where the first began.
	res = ts.rollAll(true)
	if res.err != nil || res.r.To != 4 || res.r.RollbackOf != 2 {
		t.Fatalf("second rollback: %+v %v", res.r, res.err)
	}
	if dir, _ := ts.lastSpec(); dir != "/srv/app/releases/v2" {
		t.Errorf("the second rollback's workers start in %q", dir)
	}
	if g := ts.generations(); len(g) != 2 || g[0].Role != "serving" || g[0].Directory != "/srv/app/releases/v2" ||
		g[1].Role != "previous" || g[1].Generation != 3 || g[1].EnvDigest == "" || !slices.Equal(g[1].EnvKeys, []string{"GREETING"}) {
		t.Errorf("generations in status: %+v", g)
	}

	// During a rollout, a rollback is refused for now.
	ts.requestRollout(make(chan rolloutResult, 1))
	ts.requestRollback(reply)
	if res := ts.result(reply); !errors.Is(res.err, control.ErrBusy) {
		t.Errorf("rollback during a rollout: %v", res.err)
	}
}

// TestNotReadyIsDrained: a new worker not ready by its deadline aborts the
// rollout at once and is drained like an old worker (the stop signal, the
// drain deadline), not killed; the old one keeps serving.
func TestNotReadyIsDrained(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	old := ts.slots[0].w
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	w := ts.incoming(0)
	ts.fw.clock.advance(time.Minute) // its ready timeout
	ts.settle()
	ts.fw.clock.advance(tailGrace) // the reason's wait for its last output
	ts.await("the failed worker's output")
	res := ts.result(reply)
	if res.err == nil || res.r.State != "failed" || ts.slots[0].w != old || old.State != stateReady {
		t.Fatalf("rollout: %+v %v; slot 0 has pid %d", res.r, res.err, ts.slots[0].w.pid)
	}
	fp := ts.fw.procs[w.pid]
	if w.State != stateDraining || !slices.Equal(fp.signals, []syscall.Signal{syscall.SIGTERM}) {
		t.Fatalf("the worker not ready in time is %s and got %v, want draining with SIGTERM only", w.State, fp.signals)
	}
	if ts.Totals.NewWorkerFailures[control.CauseNotReady] != 1 || len(ts.Totals.Crashes) != 0 {
		t.Errorf("totals: %+v", ts.Totals)
	}
	ts.fw.clock.advance(10 * time.Second) // its drain deadline
	ts.settle()
	if !slices.Equal(fp.signals, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("at the drain deadline it got %v", fp.signals)
	}
}

// TestRollbackSkipsSameRelease: a rollout that runs what already served (a
// reload that changed only workers, one more rollout of the same release)
// does not make the serving release the one a rollback returns to.
func TestRollbackSkipsSameRelease(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1, GenSettings: GenSettings{Directory: "/srv/app/releases/v1"}})
	ts.deployed("/srv/app/releases/v2")
	ts.rollAll(false)
	if res := ts.rollAll(false); res.err != nil || res.r.To != 3 || len(res.r.Changes) != 0 {
		t.Fatalf("the same release again: %+v %v", res.r, res.err)
	}
	res := ts.rollAll(true)
	if res.err != nil || res.r.RollbackOf != 1 {
		t.Fatalf("rollback after the same release twice: %+v %v, want generation 1's settings", res.r, res.err)
	}
	if dir, _ := ts.lastSpec(); dir != "/srv/app/releases/v1" {
		t.Errorf("the rollback starts workers in %q", dir)
	}
}

// TestRollbackAnsweredWithItsOwnResult: a reload asked during a rollback
// follows it, and the rollback's caller hears the rollback's result, not
// the next rollout's.
func TestRollbackAnsweredWithItsOwnResult(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1, GenSettings: GenSettings{Directory: "/srv/app/releases/v1"}})
	ts.deployed("/srv/app/releases/v2")
	ts.rollAll(false)
	back, reload := make(chan rolloutResult, 1), make(chan rolloutResult, 1)
	ts.requestRollback(back)
	ts.requestRollout(reload)
	ts.ready(ts.incoming(0))
	res := ts.result(back)
	if res.err != nil || res.r.Kind != "rollback" || res.r.To != 3 || res.r.RollbackOf != 1 {
		t.Fatalf("the rollback's caller heard %+v %v", res.r, res.err)
	}
	if len(reload) != 0 {
		t.Fatal("the reload asked during the rollback ended with it")
	}
	ts.ready(ts.incoming(0)) // the reload that follows: v2 again, as the configuration says
	if res := ts.result(reload); res.err != nil || res.r.Kind != "reload" || res.r.To != 4 {
		t.Fatalf("the reload's caller heard %+v %v", res.r, res.err)
	}
	if len(back) != 0 {
		t.Error("the rollback's caller was answered twice")
	}
}
