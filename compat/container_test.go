package compat

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestAsContainerEntrypoint runs baton as PID 1 of a PID namespace of its
// own, as a container runtime starts an entrypoint, without systemd: it
// serves, reaps the orphans its workers leave (PID 1 inherits them all),
// rolls out on SIGHUP, and stops cleanly on SIGTERM (what `docker stop`
// sends; a PID 1 without a handler would ignore it).
func TestAsContainerEntrypoint(t *testing.T) {
	testsd.Process(t)
	if os.Geteuid() != 0 {
		t.Skip("a PID namespace needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "bc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "c.sock")
	// Each worker leaves an orphan behind: a subshell's child outliving it.
	worker := `(sleep 0.3 &); exec ` + bins.Worker
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
		bins.Baton, "run", "--workers", "2", "--listen", "web=127.0.0.1:0", "--control", ctl, "--", "sh", "-c", worker)
	out := &testsd.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if t.Failed() {
			t.Logf("output:\n%s", out.String())
		}
	}()

	st := testsd.WaitStatus(ctx, t, ctl, "2 ready workers", func(s control.Status) bool { return s.Ready == 2 })
	if st.PID != 1 {
		t.Fatalf("baton sees itself as pid %d, want 1 in its namespace", st.PID)
	}
	if _, err := testsd.Get(ctx, "http://"+st.Listeners[0].Address+"/"); err != nil {
		t.Fatal(err)
	}
	batonPID := hostPIDOfInit(t, cmd.Process.Pid)

	// docs/fleet.md's readiness probe, as the kubelet runs it.
	if probe, err := exec.CommandContext(ctx, bins.Baton, "status", "--check", "--control", ctl).CombinedOutput(); err != nil ||
		!strings.HasPrefix(string(probe), "ok: 2/2 ready") {
		t.Errorf("the readiness probe: %v: %s", err, probe)
	}

	// SIGHUP rolls out; the orphans of both generations are reaped.
	unix.Kill(batonPID, unix.SIGHUP)
	testsd.WaitStatus(ctx, t, ctl, "generation 2", func(s control.Status) bool { return s.Generation == 2 && s.Ready == 2 && s.Rollout == nil })
	// An orphan shows as a third child of PID 1 (next to 2 workers, and old
	// workers still draining); once they exit, none may stay a zombie.
	adopted := false
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		children, zombies := testsd.ChildrenOf(batonPID)
		adopted = adopted || children > 2
		if adopted && children == 2 && zombies == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("baton as PID 1: orphan adopted %v, %d children, %d zombies", adopted, children, zombies)
		}
	}

	// SIGTERM stops everything, exit 0.
	unix.Kill(batonPID, unix.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("baton as PID 1 did not stop on SIGTERM")
	}
	if !strings.Contains(out.String(), "msg=stopped") {
		t.Errorf("no clean stop in:\n%s", out.String())
	}
}

// hostPIDOfInit finds, from the host, the pid of the namespace's PID 1:
// unshare's child.
func hostPIDOfInit(t *testing.T, unsharePID int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(unsharePID) + "/task/" + strconv.Itoa(unsharePID) + "/children")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
