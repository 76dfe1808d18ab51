package faults

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/metrics"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

func itoa(n int) string { return strconv.Itoa(n) }

// setNoFile sets pid's soft RLIMIT_NOFILE, as `prlimit --nofile=N: --pid` does.
func setNoFile(t *testing.T, pid int, n uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	rl := unix.Rlimit{Cur: n, Max: old.Max} // the soft limit only, so it can go up again
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &rl, nil); err != nil {
		t.Fatal(err)
	}
}

// TestControlSocketSurvivesEMFILE: one EMFILE from the control socket's
// accept used to end its accept loop for good, and status then hung
// forever although the fds were free again.
func TestControlSocketSurvivesEMFILE(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	svc, ctl := serving(ctx, t, listener(t), "--workers", "1", "--", bins.Worker)

	// Leave baton a few fds, then take them with connections that send
	// nothing: the accepts after those fail with EMFILE.
	setNoFile(t, svc.PID(), uint64(openFDs(t, svc.PID())+3))
	var hogs []net.Conn
	for range 10 {
		c, err := net.Dial("unix", ctl)
		if err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	svc.WaitOutput(ctx, t, "control socket accept: retrying with backoff")
	for _, c := range hogs {
		c.Close()
	}
	setNoFile(t, svc.PID(), 1024)
	callCtx := timeout(t, 5*time.Second)
	if _, err := control.Call(callCtx, ctl, control.Request{Command: control.CmdStatus}); err != nil {
		t.Fatalf("status after the fds were free again: %v", err)
	}
}

// TestFDLimitCheckedAtStart: workers that RLIMIT_NOFILE cannot carry are a
// clear error at start naming --workers and the limit, exit 1, not "crash
// limit reached" from baton's own EMFILEs after it started half of them.
func TestFDLimitCheckedAtStart(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 20*time.Second)
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `ulimit -n 64 && exec "$0" "$@"`, bins.Baton,
		"run", "--workers", "40", "--listen", "127.0.0.1:0", "--control", shortDir(t)+"/c.sock", "--", bins.Worker)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("baton with 40 workers under 64 fds: %v, want exit 1\n%s", err, out)
	}
	for _, want := range []string{"--workers 40", "RLIMIT_NOFILE is 64", "LimitNOFILE="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "worker started") {
		t.Errorf("workers were started before the check:\n%s", out)
	}
}

// TestDrainingWorkersBoundedByFDs: workers that ignore their stop signal,
// with a long --drain-timeout, pinned 3 fds each per reload until baton
// had none left. Now the ones draining longest are killed once the fds
// left over by the serving workers are spent, and every reload succeeds.
func TestDrainingWorkersBoundedByFDs(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	dir := shortDir(t)
	stubborn := script(t, dir, "stubborn", "trap '' TERM\nwhile :; do sleep 1; done\n")
	ctl := dir + "/c.sock"
	const limit = 48
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `ulimit -n `+itoa(limit)+` && exec "$0" "$@"`, bins.Baton,
		"run", "--workers", "2", "--listen", "127.0.0.1:0", "--control", ctl, "--ready", "exec",
		"--drain-timeout", "1h", "--", stubborn)
	out := &testsd.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Two SIGTERMs sent at once can merge into one: the second, which
		// kills the workers at once, goes once the first was acted on.
		cmd.Process.Signal(unix.SIGTERM)
		for !strings.Contains(out.String(), "msg=stopping") && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("baton output:\n%s", out.String())
		}
	})
	testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	maxFDs, maxDraining := 0, 0
	for i := range 15 {
		resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
		if err != nil || resp.Error != "" {
			t.Fatalf("reload %d: %v %s", i+1, err, resp.Error)
		}
		st := testsd.Status(ctx, t, ctl)
		maxDraining = max(maxDraining, len(st.Draining))
		maxFDs = max(maxFDs, openFDs(t, cmd.Process.Pid))
	}
	if maxFDs >= limit {
		t.Errorf("baton reached %d open fds of its %d", maxFDs, limit)
	}
	if maxDraining >= 30 {
		t.Errorf("%d workers draining at once: not bounded", maxDraining)
	}
	// baton's log reaches the test through a pipe, after the reload's answer.
	for !strings.Contains(out.String(), "too many draining workers for RLIMIT_NOFILE") {
		if ctx.Err() != nil {
			t.Fatalf("no draining worker was cut short")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("15 reloads under %d fds: at most %d open, %d draining", limit, maxFDs, maxDraining)
}

// TestStartFailureIsNotACrash: when baton itself runs out of fds, the
// workers it cannot start are retried with backoff; they used to count as
// worker crashes, and baton exited with "crash limit reached: 11 worker
// crashes" although no worker had crashed.
func TestStartFailureIsNotACrash(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	svc, ctl := serving(ctx, t, listener(t), "--workers", "1", "--crash-limit", "2/60s", "--restart-backoff", "10ms..50ms", "--", bins.Worker)
	victim := testsd.Status(ctx, t, ctl).Workers[0].PID
	// Too few fds for a worker's notify socket, pipes and exec pipe.
	setNoFile(t, svc.PID(), uint64(openFDs(t, svc.PID())-2))
	if err := unix.Kill(victim, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for strings.Count(svc.Output.String(), "worker start failed") < 4 {
		select {
		case <-svc.Exited():
			t.Fatalf("baton exited while it could not start a worker:\n%s", svc.Output.String())
		case <-ctx.Done():
			t.Fatalf("no repeated start failures:\n%s", svc.Output.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(svc.Output.String(), "too many open files") {
		t.Errorf("the start failure does not say why")
	}
	setNoFile(t, svc.PID(), 1024)
	st := testsd.WaitStatus(ctx, t, ctl, "slot 0 back", func(s control.Status) bool {
		return s.Workers[0].State == "ready" && s.Workers[0].PID != victim
	})
	if st.Crashes != 1 || strings.Contains(svc.Output.String(), "crash limit reached") {
		t.Errorf("start failures counted as crashes: %d crashes in status", st.Crashes)
	}
}

// TestMetricsConnectionsBounded: connections to the metrics endpoint are
// baton's fds, which new workers need. 100 clients that connect and send
// nothing take at most metrics.MaxConns of them (the rest wait in the
// backlog), so under a tight RLIMIT_NOFILE a reload still starts its
// workers; unbounded, they took every fd and the reload failed.
func TestMetricsConnectionsBounded(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	addr := freeAddr(t)
	svc, ctl := serving(ctx, t, listener(t), "--workers", "2", "--metrics", addr, "--", bins.Worker)
	// Workers that just started still hold a pipe or two for a moment (the
	// exec pipe closes once the worker runs): count once the number holds.
	before := openFDs(t, svc.PID())
	for same := 0; same < 5; {
		select {
		case <-ctx.Done():
			t.Fatalf("baton's fds never settled: %d", before)
		case <-time.After(20 * time.Millisecond):
		}
		if n := openFDs(t, svc.PID()); n == before {
			same++
		} else {
			before, same = n, 0
		}
	}
	setNoFile(t, svc.PID(), uint64(before+metrics.MaxConns+40))
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// Until the reload has ended, baton's fds stay within what the endpoint
	// may hold and what the rollout's workers take (a new and a draining one
	// at a time, 4 or 5 each, and the control connection: up to 22 seen, 34
	// allowed, 40 under the limit); unbounded, the connections took every fd up to the limit,
	// and the new workers waited for net/http's header timeout to free some.
	var peak atomic.Int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			// Not openFDs: t.Fatal belongs to the test's goroutine.
			if ents, err := os.ReadDir("/proc/" + itoa(svc.PID()) + "/fd"); err == nil {
				peak.Store(max(peak.Load(), int64(len(ents))))
			}
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for peak.Load() < int64(before+metrics.MaxConns) {
		select {
		case <-ctx.Done():
			t.Fatalf("baton accepted fewer than %d metrics connections: %d fds at most, %d before", metrics.MaxConns, peak.Load(), before)
		case <-time.After(5 * time.Millisecond):
		}
	}
	_, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
	close(done)
	<-sampled
	if err != nil {
		t.Fatalf("reload with 100 idle metrics connections: %v\n%s", err, svc.Output.String())
	}
	t.Logf("baton's fds: %d before, at most %d with 100 idle metrics connections and a reload", before, peak.Load())
	if p := peak.Load(); p > int64(before+metrics.MaxConns+34) {
		t.Errorf("up to %d fds with 100 idle metrics connections and a reload, %d before: the endpoint held more than %d", p, before, metrics.MaxConns)
	}
}
