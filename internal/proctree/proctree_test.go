package proctree

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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

// TestMainThreadChildrenHoldsOrphans: the premise of the left-behind search
// (internal/supervisor/escapees.go), which reads only the main thread's
// children. In a child subreaper, a shell forked from another thread is
// that thread's child and not the main thread's, yet the orphan it leaves
// when it exits is given to the main thread. The list is read again
// through one open file, as the search does.
func TestMainThreadChildrenHoldsOrphans(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a child subreaper: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	// The shell prints its background child's pid, then waits for its
	// stdin to close.
	cmd := exec.Command("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; read x || :")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := startOffMainThread(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	var orphan int
	if _, err := fmt.Fscan(stdout, &orphan); err != nil {
		t.Fatal(err)
	}
	defer func() {
		unix.Kill(orphan, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(orphan, &ws, 0, nil) // ours to reap once adopted; gone already is fine
	}()
	me, sh := os.Getpid(), cmd.Process.Pid
	main, err := OpenMainThreadChildren(me)
	if err != nil {
		t.Fatal(err)
	}
	defer main.Close()
	if !slices.Contains(Children(me), sh) || slices.Contains(main.Read(), sh) {
		t.Fatalf("the shell %d, forked off the main thread: Children %v, the main thread's %v; want it in the first only",
			sh, Children(me), main.Read())
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fmt.Sprintf("the orphan %d among the main thread's children", orphan), func() bool {
		return slices.Contains(main.Read(), orphan)
	})
}

// startOffMainThread starts cmd from a thread other than the main one, so
// that its parent is that thread. The thread is unlocked afterwards, not
// ended (a goroutine that exits locked ends its thread), which would hand
// cmd to another thread.
func startOffMainThread(cmd *exec.Cmd) error {
	errc := make(chan error)
	var try func()
	try = func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if unix.Gettid() == os.Getpid() {
			// Hold the main thread while another goroutine, then on
			// another thread, starts cmd.
			done := make(chan struct{})
			go func() { try(); close(done) }()
			<-done
			return
		}
		errc <- cmd.Start()
	}
	go try()
	return <-errc
}

// TestChildrenFileReadsAgain: each Read of the one open file lists the
// children as they are then, however many there are (the kernel hands
// out the list a page at a time).
func TestChildrenFileReadsAgain(t *testing.T) {
	sh := start(t, "sh", "-c", "exec sleep 60")
	pid := sh.Process.Pid
	waitFor(t, "the shell to be sleep", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return string(comm) == "sleep\n"
	})
	f, err := OpenMainThreadChildren(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Read(); len(got) != 0 {
		t.Fatalf("children of a sleep: %v", got)
	}
	// A shell with 1200 children: some 7 KB of pids, more than a page.
	parent := start(t, "sh", "-c", "i=0; while [ $i -lt 1200 ]; do sleep 60 & i=$((i+1)); done; wait")
	f2, err := OpenMainThreadChildren(parent.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	waitFor(t, "1200 children", func() bool { return len(f2.Read()) == 1200 })
	if got, all := f2.Read(), Children(parent.Process.Pid); !slices.Equal(got, all) {
		t.Errorf("Read %d pids, Children %d: want the same list", len(got), len(all))
	}
}
