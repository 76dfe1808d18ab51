package supervisor_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
)

// Recycling real workers under load: the process layer over
// recycle_fake_test.go's fake-world tests. Each test reads, all along, how many
// workers are ready, and fails on a dip below the configured number.

// readyWatch polls a service's status until stopped and keeps the fewest
// ready workers it saw.
type readyWatch struct {
	stop   context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	least  int
	looks  int
	reason string
}

func watchReady(t *testing.T, ctl string) *readyWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &readyWatch{stop: cancel, done: make(chan struct{}), least: 1 << 30}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdStatus})
			if err == nil && resp.Status.State == "ready" {
				w.mu.Lock()
				w.looks++
				if resp.Status.Ready < w.least {
					w.least = resp.Status.Ready
					w.reason = fmt.Sprintf("%+v", resp.Status.Rollout)
				}
				w.mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	return w
}

// check stops the watch and fails if fewer than want workers were ever
// ready, or if it never looked.
func (w *readyWatch) check(t *testing.T, want int) {
	t.Helper()
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.looks < 10 {
		t.Fatalf("the ready count was looked at %d times only", w.looks)
	}
	if w.least < want {
		t.Errorf("only %d workers ready at one look of %d (want %d always); rollout then: %s", w.least, w.looks, want, w.reason)
	}
	t.Logf("ready workers never below %d in %d looks", w.least, w.looks)
}

func recycle(ctx context.Context, ctl string, slot int, all bool) (control.Rollout, error) {
	resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdRecycle, Slot: slot, All: all})
	if resp.Rollout == nil {
		return control.Rollout{}, err
	}
	return *resp.Rollout, err
}

// TestRecycleByMemoryUnderLoad: workers that leak on every request are
// recycled by memory again and again under load (their successors cross
// the ceiling within seconds, within their warm-up, so each slot waits
// out a 30 s back-off between the first recycle and the second); then
// every worker by hand; then a recycle asked during a rollout follows it.
// No request fails, and never fewer than 2 workers are ready.
func TestRecycleByMemoryUnderLoad(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 120*time.Second)
	s := startService(t, `command = ["@WORKER@", "-leak", "65536"]`+"\n", "--workers", "2", "--recycle-memory", "40M")
	ready := watchReady(t, s.ctl)
	load := testsd.StartLoad(s.url(), 2, 2, time.Millisecond)
	defer load.Stop()
	st := testsd.WaitStatus(ctx, t, s.ctl, "4 recycles by memory", func(st control.Status) bool {
		return st.Totals.Recycles[control.RecycleMemory] >= 4
	})
	if st.RecycleMemoryBytes != 40<<20 || len(st.Totals.Crashes) != 0 || st.Generation != 1 {
		t.Errorf("after the recycles: ceiling %d, crashes %v, generation %d", st.RecycleMemoryBytes, st.Totals.Crashes, st.Generation)
	}
	recycles := 0
	for _, w := range st.Workers {
		recycles += w.Recycles
	}
	if recycles < 4 {
		t.Errorf("the slots count %d recycles, the service %d", recycles, st.Totals.Recycles[control.RecycleMemory])
	}
	s.svc.WaitOutput(ctx, t, "worker recycled: its successor is ready, it drains")
	if out := s.svc.Output.String(); !strings.Contains(out, "above --recycle-memory 40.0M for") || !strings.Contains(out, "successor=") {
		t.Errorf("the log does not say why and who replaced whom:\n%s", out)
	}

	// By hand: every worker, one at a time.
	before := pidsOf(testsd.Status(ctx, t, s.ctl))
	r, err := recycle(ctx, s.ctl, 0, true)
	if err != nil || r.Kind != "recycle" || r.Reason != control.RecycleManual {
		t.Fatalf("recycle all: %+v %v", r, err)
	}
	replaced := map[int]bool{}
	for _, rp := range r.Replaced {
		replaced[rp.PID] = true
	}
	after := testsd.Status(ctx, t, s.ctl)
	for _, w := range after.Workers {
		if before[w.PID] && !replaced[w.PID] {
			t.Errorf("slot %d: pid %d was neither recycled by hand nor by memory meanwhile", w.Slot, w.PID)
		}
	}

	// A recycle asked during a rollout follows it, in the new generation:
	// the new workers wait at a gate until the recycle is queued.
	gate := filepath.Join(filepath.Dir(s.ctl), "gate")
	s.write(t, gated(gate, "-leak", "65536"))
	reload := make(chan error, 1)
	go func() {
		_, err := control.Call(ctx, s.ctl, control.Request{Command: control.CmdReload})
		reload <- err
	}()
	testsd.WaitStatus(ctx, t, s.ctl, "the rollout under way", func(st control.Status) bool {
		return st.Rollout != nil && st.Rollout.Kind == "reload"
	})
	const queued = "recycle asked during a rollout: it follows when the rollout has ended"
	n := strings.Count(s.svc.Output.String(), queued) // the recycle by hand above may have met one by memory
	recycled := make(chan error, 1)
	go func() {
		var err error
		r, err = recycle(ctx, s.ctl, 1, false)
		recycled <- err
	}()
	s.svc.WaitOutputN(ctx, t, queued, n+1)
	openGate(t, gate)
	if err := <-recycled; err != nil || r.To != 2 || len(r.Replaced) != 1 || r.Replaced[0].Slot != 1 {
		t.Fatalf("recycle during a rollout: %+v %v", r, err)
	}
	if err := <-reload; err != nil {
		t.Fatalf("the reload: %v", err)
	}

	ok, failures := load.Stop()
	if failures != "" {
		t.Fatalf("%d requests ok; failed: %s", ok, failures)
	}
	ready.check(t, 2)
	t.Logf("%d requests, none failed, %d recycles by memory", ok, testsd.Status(ctx, t, s.ctl).Totals.Recycles[control.RecycleMemory])
}

// TestRecycleByAgeUnderLoad: every worker is recycled once older than
// --recycle-after, under load, with no failed request.
func TestRecycleByAgeUnderLoad(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\n", "--workers", "3", "--recycle-after", "2s")
	ready := watchReady(t, s.ctl)
	first := pidsOf(testsd.Status(ctx, t, s.ctl))
	load := testsd.StartLoad(s.url(), 2, 2, time.Millisecond)
	defer load.Stop()
	testsd.WaitStatus(ctx, t, s.ctl, "every first worker recycled", func(st control.Status) bool {
		for _, w := range st.Workers {
			if first[w.PID] || w.State != "ready" {
				return false
			}
		}
		return true
	})
	ok, failures := load.Stop()
	if failures != "" {
		t.Fatalf("%d requests ok; failed: %s", ok, failures)
	}
	ready.check(t, 3)
	if st := testsd.Status(ctx, t, s.ctl); st.Totals.Recycles[control.RecycleAge] < 3 || len(st.Totals.Crashes) != 0 {
		t.Errorf("totals %+v", st.Totals)
	}
}

// TestRecycleSafety: workers above the ceiling from their start are
// recycled once (a fast leak looks the same), then their successors, above
// it as well, are said to be and their slots back off (no loop); a
// successor that never becomes ready leaves the old worker serving and
// says why.
func TestRecycleSafety(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	broken := filepath.Join(t.TempDir(), "broken")
	// Once the file exists, new workers start but never say READY=1.
	// The workers leak, so each look at their memory reads a new figure.
	cmd := `command = ["/bin/sh", "-c", "if [ -e ` + broken + ` ]; then exec sleep 60; fi; exec @WORKER@ -leak 65536"]` + "\n"
	s := startService(t, cmd, "--workers", "2", "--recycle-memory", "1M", "--ready-timeout", "2s")
	ready := watchReady(t, s.ctl)
	load := testsd.StartLoad(s.url(), 1, 1, 20*time.Millisecond)
	defer load.Stop()
	st := testsd.WaitStatus(ctx, t, s.ctl, "both successors above the ceiling from their start", func(st control.Status) bool {
		return st.Workers[0].AboveCeiling && st.Workers[1].AboveCeiling
	})
	pids := pidsOf(st)
	// Six more looks at slot 0's growing memory, each above the ceiling: a
	// loop would have recycled it again after recycleConfirm (three).
	figures := map[uint64]bool{st.Workers[0].MemoryBytes: true}
	st = testsd.WaitStatus(ctx, t, s.ctl, "six more memory figures", func(st control.Status) bool {
		figures[st.Workers[0].MemoryBytes] = true
		return len(figures) > 6 || st.Totals.Recycles[control.RecycleMemory] > 2
	})
	if st.Totals.Recycles[control.RecycleMemory] != 2 || !pids[st.Workers[0].PID] || !pids[st.Workers[1].PID] {
		t.Fatalf("recycled in a loop: %+v, %+v", st.Totals, st.Workers)
	}
	// Said once per slot (the lines come through a pipe, after the status).
	said := func() int {
		return strings.Count(s.svc.Output.String(), "recycling by memory held back: successor crossed the ceiling ")
	}
	for said() < 2 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if n := said(); n != 2 {
		t.Errorf("said %d times, want once per slot", n)
	}

	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := recycle(ctx, s.ctl, 0, false)
	if err == nil || !strings.Contains(r.Error, "not ready within --ready-timeout 2s") || len(r.Replaced) != 0 {
		t.Fatalf("recycle with a successor never ready: %+v %v", r, err)
	}
	if st := testsd.Status(ctx, t, s.ctl); !pids[st.Workers[0].PID] || st.Ready != 2 {
		t.Errorf("after the failed recycle: %+v", st.Workers)
	}
	if ok, failures := load.Stop(); failures != "" {
		t.Errorf("%d requests ok; failed: %s", ok, failures)
	}
	ready.check(t, 2)
}

// TestRecycleWarmUpUnderLoad: workers at a few MB when ready take 30 MB
// more 1.5 s later, as an app warming up does, above --recycle-memory
// 20M. The first workers are recycled; their successors cross the ceiling
// as well, so each slot backs off instead of recycling every few seconds,
// and the journal and `baton status` say why. While held: a recycle by
// hand still works, and `baton upgrade` keeps the hold. A deploy of a
// release that no longer grows ends it. No request fails, and never fewer
// than 2 workers are ready.
//
// The hold is 30 s from when baton set it (recycle_held_until); what is
// checked after the upgrade is judged from statuses taken before then. On
// a machine so slow that the upgrade ends after it, those checks cannot
// be made, and the test says so.
func TestRecycleWarmUpUnderLoad(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 90*time.Second)
	// Each request keeps 1 KB more, so each look at the memory reads a
	// new figure: the test counts the looks by the figures.
	warming := `command = ["@WORKER@", "-warm-up", "30M", "-warm-up-after", "1500ms", "-leak", "1K"]` + "\n"
	s := startService(t, warming, "--workers", "2", "--recycle-memory", "20M")
	ready := watchReady(t, s.ctl)
	load := testsd.StartLoad(s.url(), 1, 1, 20*time.Millisecond)
	defer load.Stop()
	heldBack := func(w control.Worker) bool {
		return strings.HasPrefix(w.RecycleHeld, "successor crossed the ceiling ") && strings.HasSuffix(w.RecycleHeld, " after ready; raise --recycle-memory")
	}
	st := testsd.WaitStatus(ctx, t, s.ctl, "both slots held back, or a loop", func(st control.Status) bool {
		return heldBack(st.Workers[0]) && heldBack(st.Workers[1]) || st.Totals.Recycles[control.RecycleMemory] > 4
	})
	if n := st.Totals.Recycles[control.RecycleMemory]; n != 2 {
		t.Fatalf("%d recycles by memory, want 2 (the first workers), then a back-off: workers %+v", n, st.Workers)
	}
	until := *st.Workers[0].RecycleHeldUntil
	if u := *st.Workers[1].RecycleHeldUntil; u.Before(until) {
		until = u
	}
	s.svc.WaitOutputN(ctx, t, "recycling by memory held back: successor crossed the ceiling ", 2)
	for line := range strings.Lines(s.svc.Output.String()) {
		if strings.Contains(line, "recycling by memory held back") {
			t.Logf("the journal says: %s", strings.TrimSpace(line))
		}
	}
	out, err := exec.CommandContext(ctx, bins.Baton, "status", "--control", s.ctl).CombinedOutput()
	for _, w := range st.Workers {
		if line := fmt.Sprintf("slot %d: %s (not recycled by memory for ", w.Slot, w.RecycleHeld); err != nil || !strings.Contains(string(out), line) {
			t.Errorf("baton status does not say %q: %v\n%s", line, err, out)
		}
	}
	t.Logf("baton status says:\n%s", out)

	// By hand while held: done, and the hold stays.
	r, err := recycle(ctx, s.ctl, 0, false)
	if err != nil || r.Reason != control.RecycleManual || len(r.Replaced) != 1 {
		t.Fatalf("recycle by hand while held: %+v %v", r, err)
	}
	// Across an upgrade in place: the hold stays, the recycles by memory
	// do not start again.
	if _, err := upgrade(ctx, s.ctl); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	// inHold is whether a status taken before the call was taken while
	// the hold lasted.
	inHold := func() bool { return time.Now().Before(until) }
	after := testsd.Status(ctx, t, s.ctl)
	if !inHold() {
		t.Logf("the upgrade ended after the hold (until %s): whether it kept the hold is not judged this run", until.Format(time.TimeOnly))
	} else {
		for i, w := range after.Workers {
			if w.RecycleHeld != st.Workers[i].RecycleHeld || w.RecycleHeldUntil == nil || !w.RecycleHeldUntil.Equal(*st.Workers[i].RecycleHeldUntil) {
				t.Errorf("slot %d after a recycle by hand and an upgrade: held %q until %v; was %q until %v", i,
					w.RecycleHeld, w.RecycleHeldUntil, st.Workers[i].RecycleHeld, st.Workers[i].RecycleHeldUntil)
			}
		}
	}
	// Looks at the memory while held, each above the ceiling: a loop
	// would have recycled again after recycleConfirm (three). Only
	// statuses taken within the hold count.
	figures, looked := map[uint64]bool{}, (*control.Status)(nil)
	testsd.WaitStatus(ctx, t, s.ctl, "six more memory figures, or the hold's end", func(st control.Status) bool {
		if !inHold() {
			return true
		}
		figures[st.Workers[1].MemoryBytes] = true
		looked = &st
		return len(figures) > 6 || st.Totals.Recycles[control.RecycleMemory] > 2
	})
	switch {
	case looked == nil:
		t.Logf("the hold (until %s) ended before a look after the upgrade: whether it held is not judged this run", until.Format(time.TimeOnly))
	case looked.Totals.Recycles[control.RecycleMemory] != 2:
		t.Fatalf("recycled by memory while held (%d recycles), after the upgrade:\n%s", looked.Totals.Recycles[control.RecycleMemory], s.svc.Output.String())
	case len(figures) <= 6:
		t.Logf("the hold (until %s) ended after %d looks at the memory, not 7: it held through those", until.Format(time.TimeOnly), len(figures))
	}

	// A deploy of a release that no longer grows ends the hold.
	s.write(t, `command = ["@WORKER@", "-leak", "1K"]`+"\n")
	if _, err := reload(ctx, s.ctl); err != nil {
		t.Fatalf("reload: %v", err)
	}
	clear(figures)
	after = testsd.WaitStatus(ctx, t, s.ctl, "six memory figures of the new release", func(st control.Status) bool {
		figures[st.Workers[1].MemoryBytes] = true
		return len(figures) > 6
	})
	for _, w := range after.Workers {
		if w.RecycleHeld != "" || w.Generation != 2 {
			t.Errorf("slot %d after the deploy: generation %d, held %q", w.Slot, w.Generation, w.RecycleHeld)
		}
	}
	if n := after.Totals.Recycles[control.RecycleMemory]; n != 2 {
		t.Errorf("%d recycles by memory after the deploy, want still 2", n)
	}
	s.svc.WaitOutput(ctx, t, "recycling no longer held back: a new generation serves")
	if out, err := exec.CommandContext(ctx, bins.Baton, "status", "--control", s.ctl).CombinedOutput(); err != nil || strings.Contains(string(out), "not recycled ") {
		t.Errorf("baton status after the deploy: %v\n%s", err, out)
	}

	ok, failures := load.Stop()
	if failures != "" {
		t.Fatalf("%d requests ok; failed: %s", ok, failures)
	}
	ready.check(t, 2)
}

// TestRecycleAgeWhileMemoryHeld: --recycle-after is a promise about age.
// Workers that take 30 MB more 1.5 s after ready, above --recycle-memory
// 20M, back their slots off from recycles by memory for 30 s; their age,
// past --recycle-after 12s, still has them recycled within that hold, and
// the hold of recycles by memory stays. No request fails, and never fewer
// than 2 workers are ready.
func TestRecycleAgeWhileMemoryHeld(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 90*time.Second)
	warming := `command = ["@WORKER@", "-warm-up", "30M", "-warm-up-after", "1500ms"]` + "\n"
	s := startService(t, warming, "--workers", "2", "--recycle-memory", "20M", "--recycle-after", "12s")
	ready := watchReady(t, s.ctl)
	load := testsd.StartLoad(s.url(), 1, 1, 20*time.Millisecond)
	defer load.Stop()
	slot := -1
	st := testsd.WaitStatus(ctx, t, s.ctl, "a slot's recycles by memory held back", func(st control.Status) bool {
		for _, w := range st.Workers {
			if strings.HasPrefix(w.RecycleHeld, "successor crossed the ceiling ") && w.RecycleHeldUntil != nil {
				slot = w.Slot
				return true
			}
		}
		return false
	})
	held := st.Workers[slot]
	until := *held.RecycleHeldUntil
	t.Logf("slot %d held: %s, until %s; worker %d up %.1fs", slot, held.RecycleHeld, until.Format(time.TimeOnly), held.PID, held.UptimeSeconds)
	if !held.RecycleHeldMemoryOnly {
		t.Errorf("slot %d: its hold holds recycles by age as well: %+v", slot, held)
	}
	// Statuses taken while the hold lasts: the worker must be recycled by
	// age in one of them.
	var recycled *control.Status
	testsd.WaitStatus(ctx, t, s.ctl, "slot's worker recycled by age, or the hold's end", func(st control.Status) bool {
		if !time.Now().Before(until) {
			return true
		}
		if st.Workers[slot].PID != held.PID && st.Rollout == nil {
			recycled = &st
			return true
		}
		return false
	})
	if recycled == nil {
		t.Fatalf("slot %d's worker %d (up %.1fs when held) was not recycled by age (--recycle-after 12s) before its hold of recycles by memory ended at %s:\n%s",
			slot, held.PID, held.UptimeSeconds, until.Format(time.TimeOnly), s.svc.Output.String())
	}
	w := recycled.Workers[slot]
	if a := recycled.Totals.Recycles[control.RecycleAge]; a <= st.Totals.Recycles[control.RecycleAge] {
		t.Errorf("slot %d's worker was replaced, but not by age: totals %+v, before %+v", slot, recycled.Totals.Recycles, st.Totals.Recycles)
	}
	if m := recycled.Totals.Recycles[control.RecycleMemory]; m != st.Totals.Recycles[control.RecycleMemory] {
		t.Errorf("recycled by memory while held: %d recycles, %d when held", m, st.Totals.Recycles[control.RecycleMemory])
	}
	if w.RecycleHeld != held.RecycleHeld || w.RecycleHeldUntil == nil || !w.RecycleHeldUntil.Equal(until) {
		t.Errorf("slot %d after its recycle by age: held %q until %v; was %q until %s", slot, w.RecycleHeld, w.RecycleHeldUntil, held.RecycleHeld, until)
	}
	if ok, failures := load.Stop(); failures != "" {
		t.Errorf("%d requests ok; failed: %s", ok, failures)
	}
	ready.check(t, 2)
}
