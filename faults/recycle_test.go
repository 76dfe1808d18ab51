package faults

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestRecyclePlainGoWorkerWithUpgradeSignal: every worker of a plain Go
// worker (http.Server.Shutdown, nothing else) recycled by hand under slow
// requests, with SIGUSR2 (an in-place upgrade) arriving in the middle of
// the recycle: the upgrade waits until the recycle has ended, then runs;
// the recycle is answered with its own result; every worker is replaced
// and none counts as a crash; requests are answered but for the odd one
// http.Server.Shutdown itself drops (golang/go#75591), at most one a stop.
func TestRecyclePlainGoWorkerWithUpgradeSignal(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	plain, err := buildPlainWorker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The workers wait at a gate the test closes for the recycle's
	// successors: the recycle stays under way until the test has sent
	// SIGUSR2 and seen the upgrade deferred (it once ended within 11 ms,
	// before a look at the status).
	dir := shortDir(t)
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	gated := script(t, dir, "gated", "until [ -e "+open+" ]; do sleep 0.01; done\nexec "+plain+" 200ms\n")
	svc, ctl := serving(ctx, t, listener(t), "--workers", "2", "--", gated)
	before := testsd.Status(ctx, t, ctl)
	load := testsd.StartLoad("http://"+before.Listeners[0].Address+"/", 6, 0, 10*time.Millisecond)
	defer load.Stop()
	if err := load.WaitOK(ctx, 10); err != nil {
		t.Fatal(err)
	}

	type result struct {
		resp control.Response
		err  error
	}
	if err := os.Remove(open); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() {
		resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdRecycle, All: true})
		done <- result{resp, err}
	}()
	testsd.WaitStatus(ctx, t, ctl, "the recycle under way", func(st control.Status) bool {
		return st.Rollout != nil && st.Rollout.Kind == "recycle"
	})
	svc.Signal(t, unix.SIGUSR2) // the worst moment: a successor is coming up
	svc.WaitOutput(ctx, t, "upgrade deferred until the rollout or start has ended")
	if err := os.WriteFile(open, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.resp.Rollout == nil || res.resp.Rollout.Kind != "recycle" || len(res.resp.Rollout.Replaced) != 2 {
		t.Fatalf("recycle with SIGUSR2 in the middle: %v %+v", res.err, res.resp.Rollout)
	}
	after := testsd.WaitStatus(ctx, t, ctl, "the deferred upgrade done", func(st control.Status) bool {
		return st.Started.After(before.Started) && st.State == "ready"
	})
	if after.PID != before.PID {
		t.Fatalf("baton's pid changed: %d, was %d", after.PID, before.PID)
	}
	for _, w := range after.Workers {
		for _, b := range before.Workers {
			if w.PID == b.PID {
				t.Errorf("slot %d: pid %d was not recycled", w.Slot, w.PID)
			}
		}
	}
	if len(after.Totals.Crashes) != 0 || after.Totals.Recycles[control.RecycleManual] != 2 {
		t.Errorf("totals after: %+v", after.Totals)
	}
	ok, _ := load.Stop()
	if n := len(load.Failures()); n > 2 {
		t.Errorf("%d requests failed across 2 worker stops (ok %d): %v", n, ok, load.Failures())
	} else {
		t.Logf("%d requests answered, %d dropped by http.Server.Shutdown's own race", ok, n)
	}
}
