package supervisor_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/rig"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestLeftBehindStoppedWithItsWorker: each worker double-forks a setsid
// daemon, which the kernel hands to baton, the subreaper. At a rollout,
// each replaced worker's daemon is found at that worker's exit and stopped
// while baton runs on, and the new workers' daemons, left by workers still
// serving, are not touched by those exits. (faults/escape_test.go checks
// the kill of what is left at baton's stop.)
func TestLeftBehindStoppedWithItsWorker(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := testsd.ShortDir(t)
	pids := dir + "/pids"
	ctl := dir + "/c.sock"
	const worker = `(setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 1000' &); exec sleep 1000`
	svc := testsd.StartPlain(t, bins, "run", "--workers", "2", "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec", "--drain-timeout", "5s", "--env", "PIDS="+pids, "--", "sh", "-c", worker)
	testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	first := testsd.WaitPIDs(ctx, t, pids, 2)
	for _, pid := range first {
		waitParent(ctx, t, pid, svc.PID())
	}
	if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
		t.Fatal(err)
	}
	// The drain's SIGTERM ends each worker (sleep) at once; its daemon
	// goes with it, well before the 5 s drain deadline's SIGKILL of the
	// worker's group would matter (the daemon is in a group of its own).
	for _, pid := range first {
		if !testsd.ProcessGone(timeout(t, 3*time.Second), pid) {
			t.Errorf("daemon %d of a replaced worker still runs", pid)
		}
	}
	second := testsd.WaitPIDs(ctx, t, pids, 4)[2:]
	// Both replaced workers' exits are handled (baton logs each): a wrong
	// stop would have been sent, and logged, in that handling.
	svc.WaitOutputN(ctx, t, "worker stopped", 2)
	for _, pid := range second {
		if err := unix.Kill(pid, 0); err != nil {
			t.Errorf("daemon %d of a serving worker: %v", pid, err)
		}
	}
	if n := strings.Count(svc.Output.String(), "stopping a process the worker left behind"); n != 2 {
		t.Errorf("baton said %d times that it stopped a left-behind process, want 2:\n%s", n, svc.Output.String())
	}
	svc.Signal(t, unix.SIGTERM)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// waitParent waits until pid is a child of ppid (an orphan's reparenting
// follows its parent's exit).
func waitParent(ctx context.Context, t *testing.T, pid, ppid int) {
	t.Helper()
	for !slices.ContainsFunc(rig.Children(ppid), func(c rig.Child) bool { return c.PID == pid }) {
		if ctx.Err() != nil {
			t.Fatalf("process %d: parent never %d", pid, ppid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
