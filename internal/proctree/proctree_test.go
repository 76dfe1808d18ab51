package proctree

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// start runs name with args, and kills it and what it started at the end
// of the test.
func start(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range Tree(cmd.Process.Pid)[1:] {
			if pr, err := os.FindProcess(p); err == nil {
				pr.Kill()
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// waitFor polls cond until it holds or ctx ends (the kernel's account of a
// new process or of CPU used has no event to wait on).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestTreeAndUsage(t *testing.T) {
	// A shell with two children: one sleeps, one burns CPU.
	cmd := start(t, "sh", "-c", "sleep 60 & while :; do :; done & wait")
	pid := cmd.Process.Pid
	waitFor(t, "3 processes in the tree", func() bool { return len(Tree(pid)) == 3 })
	if tree := Tree(pid); tree[0] != pid {
		t.Errorf("Tree(%d) = %v: the root first", pid, tree)
	}
	waitFor(t, "the tree's CPU time to grow past 50ms", func() bool {
		u, _ := OfTree(pid)
		return u.CPU >= 50*time.Millisecond
	})
	own, err := Of(pid)
	if err != nil {
		t.Fatal(err)
	}
	tree, n := OfTree(pid)
	if n != 3 || own.RSS == 0 || tree.RSS <= own.RSS || tree.CPU <= own.CPU {
		t.Errorf("own %+v, tree %+v of %d processes: want the tree to hold more than its root", own, tree, n)
	}
}

// TestOddName: a command name with spaces and parentheses does not shift
// the fields of /proc/PID/stat. Were the name cut at its first ')', the
// fields read as utime and stime would be two fields earlier (the fault
// counts, about 0 for a shell in a loop), so CPU time would not grow.
func TestOddName(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "a) b (c")
	b, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(odd, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := start(t, odd, "-c", "while :; do :; done")
	pid := cmd.Process.Pid
	waitFor(t, "its name in /proc", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return string(comm) == "a) b (c\n"
	})
	waitFor(t, "the CPU time of a process named \"a) b (c\" to grow past 50ms", func() bool {
		u, err := Of(pid)
		if err != nil {
			t.Fatalf("Of a process named %q: %v", "a) b (c", err)
		}
		return u.CPU >= 50*time.Millisecond
	})
	if u, _ := Of(pid); u.RSS == 0 || u.RSS > 1<<30 {
		t.Errorf("Of a process named %q: %+v, want a resident size above 0 and below 1 GiB", "a) b (c", u)
	}
}

func TestGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := Of(cmd.Process.Pid); err == nil {
		t.Error("Of a process that has exited and been reaped: no error")
	}
	if u, n := OfTree(cmd.Process.Pid); n != 0 || u != (Usage{}) {
		t.Errorf("OfTree of a gone process: %+v of %d", u, n)
	}
	if !slices.Equal(Tree(cmd.Process.Pid), []int{cmd.Process.Pid}) {
		t.Error("Tree of a gone process is more than the pid asked for")
	}
}
