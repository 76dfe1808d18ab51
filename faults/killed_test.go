package faults

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// buildPlainWorker builds testdata/plainworker into dir.
func buildPlainWorker(dir string) (string, error) {
	root, err := testsd.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "plainworker")
	cmd := exec.Command("go", "build", "-o", out, "./faults/testdata/plainworker")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build plainworker: %v\n%s", err, b)
	}
	return out, nil
}

// TestKill9PlainGoWorkerDrains: kill -9 of baton under systemd, with a
// plain Go worker that does not ignore SIGPIPE. The workers drain on their
// parent-death signal and log as they do; their output pipes used to have
// no reader left, so the first log line ("draining") killed them with
// SIGPIPE and the requests they held were lost. The pipes are in the FD
// store now: every worker drains to its last line, which the restarted
// baton logs with the worker's slot and generation, and every request is
// answered but for the odd one http.Server.Shutdown itself drops.
func TestKill9PlainGoWorkerDrains(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 90*time.Second)
	plain, err := buildPlainWorker(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sd := testsd.New(t)
	ctl := shortDir(t) + "/c.sock"
	args := []string{"run", "--workers", "3", "--listen", "app=127.0.0.1:0", "--control", ctl, "--", plain}
	env := []string{"INVOCATION_ID=0123456789abcdef0123456789abcdef", "WORK=300ms"}
	first := sd.Start(bins, nil, env, args...)
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	var app *activation.Listener
	for _, nf := range sd.Stored() {
		if nf.Name == "baton.app" {
			fd, err := unix.FcntlInt(uintptr(nf.FD), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if app, err = activation.NewListener(fd, "app"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { app.Close() })
		}
	}
	if app == nil {
		t.Fatalf("the listener is not in the FD store: %v", sd.Stored())
	}
	if n := len(sd.Stored()); n != 1+3*2 {
		t.Errorf("FD store holds %d entries, want the listener and 2 pipes for each of 3 workers: %v", n, sd.Stored())
	}
	workers := testsd.Status(ctx, t, ctl).Workers

	// Slow requests on fresh connections: each worker holds some when
	// baton is killed.
	load := testsd.StartLoad("http://"+app.Addr()+"/", 9, 0, 20*time.Millisecond)
	defer load.Stop()
	if err := load.WaitOK(ctx, 30); err != nil {
		t.Fatal(err)
	}
	first.Signal(t, unix.SIGKILL)
	first.Wait(ctx, t)
	killedAt := time.Now()
	for _, w := range workers {
		if !testsd.ProcessGone(ctx, w.PID) {
			t.Fatalf("worker %d did not end after its drain", w.PID)
		}
	}
	// systemd restarts the service once its processes are gone, with what
	// the FD store holds.
	mark := sd.Count()
	second := sd.StartFDs(bins, sd.Stored(), env, args...)
	sd.WaitFrom(ctx, mark, "READY=1 from the restarted baton", testsd.Sent("READY", "1"))
	if err := load.WaitOK(ctx, load.OK()+30); err != nil {
		t.Fatal(err)
	}
	ok, _ := load.Stop()
	// What SIGPIPE did: a dead worker loses every request it held (up to 9
	// here). What http.Server.Shutdown does on its own (golang/go#75591, no
	// baton involved): a connection accepted as Shutdown begins may be
	// closed unanswered, at most one per worker, an EOF right at the kill.
	fails := load.Failures()
	for _, f := range fails {
		at := f.Start.Sub(killedAt)
		if !strings.HasSuffix(f.Err, "EOF") || at < -100*time.Millisecond || at > 100*time.Millisecond || len(fails) > len(workers) {
			t.Errorf("request sent %s relative to the kill failed: %s", at.Round(time.Millisecond), f.Err)
		} else {
			t.Logf("request sent %s relative to the kill: %s (http.Server.Shutdown's own race, golang/go#75591)", at.Round(time.Millisecond), f.Err)
		}
	}
	// Each old worker's last lines, logged by the new baton with its slot,
	// generation and pid: it drained to the end, no SIGPIPE.
	for _, w := range workers {
		want := fmt.Sprintf("[worker %d pid %d] ", w.Slot, w.PID)
		second.WaitOutput(ctx, t, fmt.Sprintf("msg=\"output of a worker of the previous baton read to its end\" slot=%d gen=1 pid=%d stream=stderr", w.Slot, w.PID))
		out := second.Output.String()
		for _, line := range []string{"draining", "drained: <nil>"} {
			if !strings.Contains(out, line) || !containsLine(out, want, line) {
				t.Errorf("the restarted baton did not log worker %d's %q line:\n%s", w.PID, line, out)
			}
		}
	}
	// Once read, the old pipes leave the store; the new workers' are in it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		old := 0
		for _, nf := range sd.Stored() {
			for _, w := range workers {
				if strings.HasSuffix(strings.TrimSuffix(strings.TrimSuffix(nf.Name, ".stdout"), ".stderr"), fmt.Sprintf(".%d", w.PID)) {
					old++
				}
			}
		}
		if old == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pipes of the old workers still in the FD store: %v", old, sd.Stored())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("kill -9 with plain Go workers: %d requests answered, %d lost to Shutdown's own race; their last lines logged by the restarted baton", ok, len(fails))
}

// containsLine reports whether out has a line with both prefix and text.
func containsLine(out, prefix, text string) bool {
	for line := range strings.Lines(out) {
		if strings.Contains(line, prefix) && strings.Contains(line, text) {
			return true
		}
	}
	return false
}
