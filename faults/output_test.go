package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// startWithStderr runs `baton run args...` with stdout and stderr the write
// end of a pipe, and returns the read end: the test decides whether anyone
// reads it.
func startWithStderr(t *testing.T, args ...string) (*exec.Cmd, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.Baton, append([]string{"run"}, args...)...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		r.Close()
	})
	return cmd, r
}

// waitPipeFull waits until the pipe r reads from is full: a one-byte write
// through a write end of its own, non-blocking, fails with EAGAIN. The
// writes that get through add a newline each, between baton's lines (each
// one write of less than PIPE_BUF).
func waitPipeFull(ctx context.Context, t *testing.T, r *os.File) {
	t.Helper()
	raw, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var path string
	if err := raw.Control(func(fd uintptr) { path = fmt.Sprintf("/proc/self/fd/%d", fd) }); err != nil {
		t.Fatal(err)
	}
	w, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("a write end for the pipe: %v", err)
	}
	defer unix.Close(w)
	for {
		_, err := unix.Write(w, []byte{'\n'})
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case err != nil:
			t.Fatal(err)
		case ctx.Err() != nil:
			t.Fatal("the pipe never filled")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// written is how many bytes pid has written so far (wchar of /proc/PID/io).
func written(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no wchar in /proc/%d/io: %s", pid, b)
	return 0
}

// chatty is a worker that writes lines as fast as it can.
const chatty = "while :; do echo 'a line of worker output, again and again and again'; done\n"

// TestStuckStderrDoesNotStopTheLoop: with baton's stderr a pipe that nobody
// reads, the event loop used to block on a log write: a killed worker was
// not restarted and status hung.
func TestStuckStderrDoesNotStopTheLoop(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := shortDir(t)
	ctl := dir + "/c.sock"
	_, r := startWithStderr(t, "--workers", "2", "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec", "--restart-backoff", "10ms..100ms", "--", script(t, dir, "chatty", chatty))
	st := testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	victim := st.Workers[0].PID
	// The pipe, never read, fills with worker lines; then make the loop log.
	waitPipeFull(ctx, t, r)
	if err := unix.Kill(victim, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testsd.WaitStatus(timeout(t, 10*time.Second), t, ctl, "slot 0 restarted", func(s control.Status) bool {
		return s.Workers[0].PID != victim && s.Workers[0].State == "ready"
	})
}

// TestGoneStderrDoesNotKillBaton: with the reader of baton's stderr gone
// (`baton run ... | tee` with tee killed), baton died of SIGPIPE (exit 141)
// and took its workers along.
func TestGoneStderrDoesNotKillBaton(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := shortDir(t)
	ctl := dir + "/c.sock"
	cmd, r := startWithStderr(t, "--workers", "2", "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec", "--restart-backoff", "10ms..100ms", "--", script(t, dir, "quiet", "exec sleep 1000\n"))
	st := testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	r.Close()
	victim := st.Workers[1].PID
	if err := unix.Kill(victim, unix.SIGKILL); err != nil { // baton logs the exit and the restart
		t.Fatal(err)
	}
	testsd.WaitStatus(timeout(t, 10*time.Second), t, ctl, "slot 1 restarted", func(s control.Status) bool {
		return s.Workers[1].PID != victim && s.Workers[1].State == "ready"
	})
	if err := cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("baton exited %d (%v), want 0 after SIGTERM", code, err)
	}
}

// TestStuckStderrDropsAndCounts: the lines baton could not write are
// counted and the count is written once the reader reads again.
func TestStuckStderrDropsAndCounts(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := shortDir(t)
	ctl := dir + "/c.sock"
	_, r := startWithStderr(t, "--workers", "1", "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec", "--", script(t, dir, "chatty", chatty))
	st := testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	// Once the pipe is full nothing leaves baton: of what the worker
	// writes after that, at most baton's stderr queue (1 MiB), the batch
	// its writer holds (as much), the worker's pipe and baton's line
	// buffer are kept, and the rest must be dropped.
	waitPipeFull(ctx, t, r)
	worker := st.Workers[0].PID
	from := written(t, worker)
	for written(t, worker) < from+3<<20 {
		if ctx.Err() != nil {
			t.Fatalf("the worker wrote %d bytes since the pipe filled, want 3 MiB", written(t, worker)-from)
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 64<<10)
	var seen strings.Builder
	for !strings.Contains(seen.String(), "log lines dropped: the output was not being read") {
		if ctx.Err() != nil {
			t.Fatalf("no count of dropped lines in %d bytes read", seen.Len())
		}
		n, err := r.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		seen.Write(buf[:n])
		if seen.Len() > 64<<20 {
			t.Fatal("64 MB read and no count of dropped lines")
		}
	}
}
