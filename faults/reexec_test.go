package faults

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// requireRelay fails a test whose promise needs the whole signal relay
// when the baton under test says it has less (`baton version`, built
// without cgo): the test would otherwise fail only now and then, of a
// signal that killed baton or went unanswered, without saying why.
func requireRelay(t *testing.T) {
	t.Helper()
	out, err := exec.Command(bins.Baton, "version").Output()
	if err != nil {
		t.Fatalf("baton version: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if mode, ok := strings.CutPrefix(strings.TrimSpace(line), "signal-relay "); ok {
			if !strings.HasPrefix(mode, "cgo:") {
				t.Fatalf("this baton's signal relay is %q: the promise tested here holds only with the whole relay (build with cgo)", mode)
			}
			return
		}
	}
	t.Fatalf("baton version printed no signal-relay line: %q", out)
}

// TestSignalsDuringReexec: SIGUSR2 (an upgrade) and, a few milliseconds
// later, another signal used to kill baton and every worker: between the
// old image's last handler and the new image's first, signals have their
// default action, and the Go runtime unblocks SIGHUP in its start-up. Now
// every signal sent during the exec is carried to the new image and acted
// on, at every offset: none lost, none fatal.
func TestSignalsDuringReexec(t *testing.T) {
	testsd.Process(t)
	requireRelay(t)
	ctx := timeout(t, 120*time.Second)
	svc, ctl := serving(ctx, t, listener(t), "--workers", "2", "--", bins.Worker)
	st := testsd.Status(ctx, t, ctl)
	seconds := []unix.Signal{unix.SIGUSR1, unix.SIGUSR2, unix.SIGHUP}
	for i := range 18 {
		second := seconds[i%len(seconds)]
		delay := time.Duration(i) * 2 * time.Millisecond // across the helper's run and the exec
		execs := strings.Count(svc.Output.String(), "re-executed in place")
		svc.Signal(t, unix.SIGUSR2)
		time.Sleep(delay)
		svc.Signal(t, second)
		select {
		case <-svc.Exited():
			t.Fatalf("SIGUSR2 then %s %s later killed baton: %v", unix.SignalName(second), delay, svc.Cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		// A second SIGUSR2 joins the upgrade in progress, or, caught during
		// the exec, makes the new image upgrade once more: one or two.
		wantExecs, wantGen := execs+1, st.Generation
		if second != unix.SIGUSR2 {
			wantGen++
		}
		for strings.Count(svc.Output.String(), "re-executed in place") < wantExecs {
			if ctx.Err() != nil {
				t.Fatalf("SIGUSR2 then %s %s later: %d re-execs, want %d", unix.SignalName(second), delay,
					strings.Count(svc.Output.String(), "re-executed in place")-execs, wantExecs-execs)
			}
			time.Sleep(5 * time.Millisecond)
		}
		st = testsd.WaitStatus(ctx, t, ctl, fmt.Sprintf("generation %d, ready (SIGUSR2 then %s %s later)", wantGen, unix.SignalName(second), delay), func(s control.Status) bool {
			return s.Generation == wantGen && s.State == "ready" && s.Rollout == nil && s.Ready == 2
		})
	}
	t.Logf("18 upgrades each followed by SIGUSR1, SIGUSR2 or SIGHUP within 0-34 ms: baton pid %d lived, generation %d; %d signals handed over to a new image, %d upgrades deferred",
		svc.PID(), st.Generation, strings.Count(svc.Output.String(), "acting on a signal received during the re-exec"), strings.Count(svc.Output.String(), "upgrade deferred"))
}

// TestStopDuringReexec: `systemctl stop` (SIGTERM) or ^C (SIGINT) a few
// milliseconds after an upgrade used to kill baton in the exec, its
// workers' drain cut short by the stop that follows. Now the new image
// stops as asked: workers drained, exit 0.
func TestStopDuringReexec(t *testing.T) {
	testsd.Process(t)
	requireRelay(t)
	ctx := timeout(t, 120*time.Second)
	web := listener(t)
	for i := range 10 {
		sig := []unix.Signal{unix.SIGTERM, unix.SIGINT}[i%2]
		delay := time.Duration(i) * 3 * time.Millisecond
		svc, _ := serving(ctx, t, web, "--workers", "2", "--", bins.Worker)
		svc.Signal(t, unix.SIGUSR2)
		time.Sleep(delay)
		svc.Signal(t, sig)
		select {
		case <-svc.Exited():
		case <-ctx.Done():
			t.Fatalf("SIGUSR2 then %s %s later: baton did not stop", unix.SignalName(sig), delay)
		}
		if ps := svc.Cmd.ProcessState; !ps.Success() || !strings.Contains(svc.Output.String(), "stopped") {
			t.Fatalf("SIGUSR2 then %s %s later: baton ended %v, want a clean stop (exit 0, \"stopped\"); output:\n%s",
				unix.SignalName(sig), delay, ps, svc.Output.String())
		}
		if n := strings.Count(svc.Output.String(), "re-executed in place"); n > 0 {
			t.Logf("SIGUSR2 then %s %s later: stopped by the new image", unix.SignalName(sig), delay)
		}
	}
}

// TestReloadDuringReexec: a `baton reload` whose connection reaches the
// control socket while baton re-executes used to be refused (the old
// image's listener closed with the exec, the new one not yet there). The
// listener is handed over now, so the connection waits in its backlog.
func TestReloadDuringReexec(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 120*time.Second)
	svc, ctl := serving(ctx, t, listener(t), "--workers", "2", "--", bins.Worker)
	for i := range 12 {
		execs := strings.Count(svc.Output.String(), "re-executed in place")
		svc.Signal(t, unix.SIGUSR2)
		// Connect, at several moments, while the helper runs and while
		// the image is replaced; each reload must be answered.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for j := range 8 {
			wg.Go(func() {
				time.Sleep(time.Duration(i+j*3) * time.Millisecond)
				callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				resp, err := control.Call(callCtx, ctl, control.Request{Command: control.CmdStatus})
				if err == nil && resp.Error != "" {
					err = fmt.Errorf("%s", resp.Error)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("round %d: a control request during the upgrade failed: %v", i, err)
			}
		}
		for strings.Count(svc.Output.String(), "re-executed in place") == execs && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
