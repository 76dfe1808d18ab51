package supervisor_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

func reload(ctx context.Context, ctl string) (control.Rollout, error) {
	resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
	if resp.Rollout == nil {
		return control.Rollout{}, err
	}
	return *resp.Rollout, err
}

// service is baton under the stand-in systemd with a --config file whose
// content the test rewrites between rollouts.
type service struct {
	sd     *testsd.Systemd
	svc    *testsd.Service
	web    *activation.Listener
	ctl    string
	config string
}

func startService(t *testing.T, config string, args ...string) *service {
	t.Helper()
	s := &service{sd: testsd.New(t), web: listener(t, "web=127.0.0.1:0"), ctl: controlPath(t)}
	s.config = filepath.Join(filepath.Dir(s.ctl), "baton.toml")
	s.write(t, config)
	s.svc = s.sd.Start(bins, []*activation.Listener{s.web}, nil,
		append([]string{"run", "--config", s.config, "--control", s.ctl}, args...)...)
	s.sd.WaitFor(timeout(t, 20*time.Second), "READY=1", testsd.Sent("READY", "1"))
	return s
}

func (s *service) write(t *testing.T, config string) {
	t.Helper()
	config = strings.ReplaceAll(config, "@WORKER@", bins.Worker)
	if err := os.WriteFile(s.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *service) url() string { return "http://" + s.web.Addr() + "/" }

// gated is a config whose workers wait for the file gate to exist, then
// exec the example worker with args: a rollout to it stays under way
// until the test opens the gate (openGate), and so does a recycle.
func gated(gate string, args ...string) string {
	return `command = ["sh", "-c", "until [ -e ` + gate + ` ]; do sleep 0.01; done; exec @WORKER@` +
		strings.Join(append([]string{""}, args...), " ") + `"]` + "\n"
}

// reloadAtGate begins a reload whose new workers wait at gate (openGate
// lets them go on), and waits until it is in progress; done gets its
// result.
func (s *service) reloadAtGate(ctx context.Context, t *testing.T) (gate string, done chan error) {
	t.Helper()
	gate = filepath.Join(filepath.Dir(s.ctl), "gate")
	s.write(t, gated(gate))
	done = make(chan error, 1)
	go func() { _, err := reload(ctx, s.ctl); done <- err }()
	testsd.WaitStatus(ctx, t, s.ctl, "a rollout in progress", func(st control.Status) bool { return st.Rollout != nil })
	return gate, done
}

func openGate(t *testing.T, gate string) {
	t.Helper()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// allAt checks every slot serves a ready worker of generation gen, none of
// whose pids is in old.
func allAt(t *testing.T, st control.Status, gen int, old map[int]bool) {
	t.Helper()
	for _, w := range st.Workers {
		if w.Generation != gen || w.State != "ready" || old[w.PID] {
			t.Fatalf("slot %d: pid %d generation %d %s; want a new ready worker of generation %d", w.Slot, w.PID, w.Generation, w.State, gen)
		}
	}
}

func pidsOf(st control.Status) map[int]bool {
	m := map[int]bool{}
	for _, w := range st.Workers {
		m[w.PID] = true
	}
	return m
}

// TestRolloutsUnderLoadLoseNothing: 7 rollouts of 4 workers, by SIGHUP and
// by `baton reload`, under fresh and kept-alive load: zero failed requests.
func TestRolloutsUnderLoadLoseNothing(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 120*time.Second)
	s := startService(t, `command = ["@WORKER@", "-start-delay", "50ms", "-work", "2ms"]`+"\n", "--workers", "4")
	load := testsd.StartLoad(s.url(), 4, 4, 2*time.Millisecond)
	defer load.Stop()
	st := testsd.Status(ctx, t, s.ctl)
	for gen := 2; gen <= 8; gen++ {
		old := pidsOf(st)
		before := load.OK()
		if gen%2 == 0 {
			mark := s.sd.Count()
			s.svc.Signal(t, unix.SIGHUP)
			reloading, at := s.sd.WaitFrom(ctx, mark, "RELOADING=1", testsd.Sent("RELOADING", "1"))
			if reloading.Msg["MONOTONIC_USEC"] == "" {
				t.Errorf("RELOADING=1 without MONOTONIC_USEC: %v", reloading.Msg)
			}
			_, end := s.sd.WaitFrom(ctx, at, "READY=1 after the rollout", testsd.Sent("READY", "1"))
			extended := false
			for _, d := range s.sd.Messages()[at:end] {
				extended = extended || d.Msg["EXTEND_TIMEOUT_USEC"] != ""
			}
			if !extended {
				t.Error("no EXTEND_TIMEOUT_USEC= while the rollout progressed")
			}
		} else {
			r, err := reload(ctx, s.ctl)
			if err != nil {
				t.Fatalf("reload to generation %d: %v", gen, err)
			}
			if r.To != gen || r.State != "ok" {
				t.Fatalf("reload result %+v, want generation %d ok", r, gen)
			}
		}
		st = testsd.Status(ctx, t, s.ctl)
		allAt(t, st, gen, old)
		if st.LastRollout == nil || st.LastRollout.State != "ok" || st.LastRollout.To != gen {
			t.Errorf("last rollout %+v", st.LastRollout)
		}
		t.Logf("generation %d: %d requests answered during the rollout", gen, load.OK()-before)
	}
	ok, failures := load.Stop()
	if failures != "" {
		t.Fatalf("failed requests across 7 rollouts (%d ok): %s", ok, failures)
	}
	if ok < 500 {
		t.Fatalf("only %d requests: the load did not run", ok)
	}
	t.Logf("%d requests, none failed", ok)
	s.svc.Signal(t, unix.SIGTERM)
	if code := s.svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestBrokenGenerationsKeepOldServing: a generation that fails at start and
// one that never gets ready each make `baton reload` fail with the reason,
// while the old 4 keep serving under load; the fixed generation then rolls
// out.
func TestBrokenGenerationsKeepOldServing(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 120*time.Second)
	good := `command = ["@WORKER@"]` + "\n"
	s := startService(t, good, "--workers", "4", "--restart-backoff", "10ms..100ms")
	load := testsd.StartLoad(s.url(), 2, 2, 2*time.Millisecond)
	defer load.Stop()
	serving := testsd.Status(ctx, t, s.ctl)

	for _, tt := range []struct{ name, config, want string }{
		{"fails at start", `command = ["sh", "-c", "echo cannot open database >&2; exit 3"]`, "exit status 3; last output: cannot open database"},
		{"never ready", `command = ["sleep", "60"]` + "\nready-timeout = \"300ms\"", "not ready within --ready-timeout 300ms"},
		{"bad config", `command = ["@WORKER@"]` + "\nwokers = 3", `unknown key "wokers"`},
		{"bad value", `command = ["@WORKER@"]` + "\nready = \"sometime\"", `--ready "sometime"`},
		{"missing binary", `command = ["/nonexistent/worker"]`, "/nonexistent/worker"},
		{"check fails", `command = ["@WORKER@"]` + "\ncheck = \"echo config test failed; exit 1\"", "config test failed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s.write(t, tt.config)
			mark := s.sd.Count()
			r, err := reload(ctx, s.ctl)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("reload error = %v, want one containing %q", err, tt.want)
			}
			if r.State != "failed" {
				t.Errorf("rollout state %q", r.State)
			}
			s.sd.WaitFrom(ctx, mark, "READY=1 after the failed rollout", func(d testsd.Datagram) bool {
				return d.Msg.Is("READY", "1") && strings.Contains(d.Msg["STATUS"], "last reload failed")
			})
			st := testsd.Status(ctx, t, s.ctl)
			for i, w := range st.Workers {
				if w.PID != serving.Workers[i].PID || w.Generation != 1 || w.State != "ready" {
					t.Errorf("slot %d changed: %+v, was %+v", i, w, serving.Workers[i])
				}
			}
			if !strings.Contains(st.LastRollout.Error, tt.want) {
				t.Errorf("status's last rollout error %q", st.LastRollout.Error)
			}
		})
	}
	s.write(t, good)
	r, err := reload(ctx, s.ctl)
	if err != nil {
		t.Fatalf("fixed generation: %v", err)
	}
	allAt(t, testsd.Status(ctx, t, s.ctl), r.To, pidsOf(serving))
	if _, failures := load.Stop(); failures != "" {
		t.Errorf("failed requests: %s", failures)
	}
	if n := strings.Count(s.svc.Output.String(), "crash limit"); n != 0 {
		t.Errorf("failing new generations touched the crash limit")
	}
}

// TestRollbackOfMovedSlots: with --max-surge 1, slots 0 and 1 have moved
// when slot 2's new worker fails: they move back to generation 1, ready
// before drain, and the service never had a slot without a worker.
func TestRollbackOfMovedSlots(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\n", "--workers", "3")
	load := testsd.StartLoad(s.url(), 2, 2, 2*time.Millisecond)
	defer load.Stop()
	s.write(t, `command = ["sh", "-c", "if [ \"$BATON_WORKER\" = 2 ]; then echo slot 2 broken; exit 1; fi; exec @WORKER@"]`)
	_, err := reload(ctx, s.ctl)
	if err == nil || !strings.Contains(err.Error(), "worker 2 (pid") || !strings.Contains(err.Error(), "slot 2 broken") {
		t.Fatalf("reload error = %v\n%s", err, s.svc.Output.String())
	}
	st := testsd.Status(ctx, t, s.ctl)
	for _, w := range st.Workers {
		if w.Generation != 1 || w.State != "ready" {
			t.Errorf("slot %d: generation %d %s, want back at generation 1", w.Slot, w.Generation, w.State)
		}
	}
	if _, failures := load.Stop(); failures != "" {
		t.Errorf("failed requests: %s", failures)
	}
}

// TestCanaryFailureAborts: a first batch that is ready but exits within the
// canary window aborts the rollout before any old worker is stopped.
func TestCanaryFailureAborts(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\n", "--workers", "2", "--canary", "2s")
	before := testsd.Status(ctx, t, s.ctl)
	s.write(t, `command = ["sh", "-c", "sleep 0.3; echo lost my mind; exit 4"]`+"\nready = \"exec\"")
	start := time.Now()
	_, err := reload(ctx, s.ctl)
	if err == nil || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("reload error = %v", err)
	}
	if time.Since(start) > 1900*time.Millisecond {
		t.Errorf("abort came after %s: the canary failure should end it at once", time.Since(start))
	}
	after := testsd.Status(ctx, t, s.ctl)
	for i := range after.Workers {
		if after.Workers[i].PID != before.Workers[i].PID {
			t.Errorf("slot %d's old worker was replaced despite the failed canary", i)
		}
	}
}

// TestConcurrentReloadsCoalesce: requests during a rollout end in one final
// generation for every caller, never a mix. The new workers wait for a
// gate the test opens once both later requests have joined the first
// rollout.
func TestConcurrentReloadsCoalesce(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\n", "--workers", "2")
	gate := filepath.Join(filepath.Dir(s.ctl), "gate")
	s.write(t, gated(gate))
	results := make([]control.Rollout, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	call := func(i int) { wg.Go(func() { results[i], errs[i] = reload(ctx, s.ctl) }) }
	call(0)
	testsd.WaitStatus(ctx, t, s.ctl, "the first rollout", func(st control.Status) bool { return st.Rollout != nil })
	call(1)
	call(2)
	s.svc.WaitOutputN(ctx, t, "rollout requested during a rollout: one more follows when this one ends", 2)
	openGate(t, gate)
	wg.Wait()
	final := results[0].To
	for i := range 3 {
		if errs[i] != nil || results[i].To != final {
			t.Errorf("caller %d: %+v, %v; want generation %d", i, results[i], errs[i], final)
		}
	}
	if final != 3 {
		t.Errorf("final generation %d, want 3 (one rollout plus one coalesced)", final)
	}
	allAt(t, testsd.Status(ctx, t, s.ctl), final, nil)
}

// TestStubbornWorkerKilledAfterRollout: an old worker that ignores the stop
// signal is SIGKILLed at its drain deadline, while the rollout has already
// finished.
func TestStubbornWorkerKilledAfterRollout(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	// delay:, not exec: the trap must be set before the stop signal comes.
	s := startService(t, `command = ["sh", "-c", "trap '' TERM; sleep 60 & wait"]`+"\nready = \"delay:200ms\"\ndrain-timeout = \"1s\"\n", "--workers", "1")
	old := testsd.Status(ctx, t, s.ctl).Workers[0].PID
	start := time.Now()
	if _, err := reload(ctx, s.ctl); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > 900*time.Millisecond {
		t.Errorf("the rollout waited %s for the old worker's drain", took)
	}
	st := testsd.Status(ctx, t, s.ctl)
	if len(st.Draining) != 1 || st.Draining[0].PID != old || st.Draining[0].Deadline == nil {
		t.Fatalf("draining = %+v, want the old worker with its deadline", st.Draining)
	}
	if !testsd.ProcessGone(ctx, old) {
		t.Fatal("stubborn worker never killed")
	}
	if gone := time.Since(start); gone < time.Second {
		t.Errorf("killed after %s, before its 1s drain deadline", gone)
	}
	s.svc.WaitOutput(ctx, t, "drain deadline passed: killing worker")
}

// TestReloadRefusedWhileStarting: a rollout needs every slot ready first.
func TestReloadRefusedWhileStarting(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 20*time.Second)
	ctl := controlPath(t)
	testsd.StartPlain(t, bins, "run", "--workers", "1", "--listen", "127.0.0.1:0", "--control", ctl, "--", "sleep", "60")
	var err error
	for ctx.Err() == nil {
		if _, err = reload(ctx, ctl); err != nil && !errors.Is(err, control.ErrRefused) {
			time.Sleep(10 * time.Millisecond) // the control socket is not up yet
			continue
		}
		break
	}
	if err == nil || !strings.Contains(err.Error(), "still starting") {
		t.Fatalf("reload while starting: %v", err)
	}
}

func awaitReload(ctx context.Context, ctl string) (control.Rollout, error) {
	resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdAwaitReload})
	if resp.Rollout == nil {
		return control.Rollout{}, err
	}
	return *resp.Rollout, err
}

// TestAwaitReloadJoinsTheSignalledRollout: what ExecReload= of a
// Type=notify-reload unit does right after systemd's SIGHUP: it gets that
// rollout's result, whether it connects before the signal is handled,
// while the rollout runs, or after it failed at once; and it never asks
// for a rollout of its own. Each case is made to happen in its order
// (baton's log says which it met), not left to timing.
func TestAwaitReloadJoinsTheSignalledRollout(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\n", "--workers", "2")

	// Waiting first, the signal after.
	done := make(chan error, 1)
	var got control.Rollout
	go func() {
		var err error
		got, err = awaitReload(ctx, s.ctl)
		done <- err
	}()
	s.svc.WaitOutput(ctx, t, "reload awaited before its signal: waiting for the rollout")
	s.svc.Signal(t, unix.SIGHUP)
	if err := <-done; err != nil || got.To != 2 || got.State != "ok" {
		t.Fatalf("await before the signal: %+v, %v", got, err)
	}

	// The signal first, the wait during the rollout: the new workers wait
	// for a gate the test opens once the wait has joined.
	gate := filepath.Join(filepath.Dir(s.ctl), "gate")
	s.write(t, gated(gate))
	s.svc.Signal(t, unix.SIGHUP)
	testsd.WaitStatus(ctx, t, s.ctl, "a rollout", func(st control.Status) bool { return st.Rollout != nil })
	go func() {
		var err error
		got, err = awaitReload(ctx, s.ctl)
		done <- err
	}()
	s.svc.WaitOutput(ctx, t, "reload awaited: joins the running rollout")
	openGate(t, gate)
	if err := <-done; err != nil || got.To != 3 || got.State != "ok" {
		t.Fatalf("await during the rollout: %+v, %v", got, err)
	}

	// A rollout that fails at once has ended before the wait arrives.
	s.write(t, "command = [\"@WORKER@\"]\nwokers = 1\n")
	s.svc.Signal(t, unix.SIGHUP)
	s.svc.WaitOutput(ctx, t, `unknown key \"wokers\"`)
	if _, err := awaitReload(ctx, s.ctl); err == nil || !strings.Contains(err.Error(), `unknown key "wokers"`) {
		t.Fatalf("await after a failed rollout: %v", err)
	}
	s.svc.WaitOutput(ctx, t, "reload awaited: the rollout just ended")
	if st := testsd.Status(ctx, t, s.ctl); st.Generation != 3 {
		t.Errorf("generation %d: an await asked for a rollout of its own", st.Generation)
	}
}
