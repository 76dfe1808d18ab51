package worker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-cmp/cmp"
)

func TestEnvDropsPerProcessVariables(t *testing.T) {
	in := []string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1", "WATCHDOG_PID=1",
		"LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=x", "BATON_WORKER=3", "JOURNAL_STREAM=8:9", "HOME=/root"}
	if diff := cmp.Diff([]string{"PATH=/bin", "HOME=/root"}, Env(in, true)); diff != "" {
		t.Errorf("piped (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PATH=/bin", "JOURNAL_STREAM=8:9", "HOME=/root"}, Env(in, false)); diff != "" {
		t.Errorf("inherited (-want +got):\n%s", diff)
	}
}

// TestWorkerLeavesNoGoroutine: once a worker has exited and been reaped,
// its output readers, notify reader and exec-pipe watcher all end.
func TestWorkerLeavesNoGoroutine(t *testing.T) {
	runtime.LockOSThread() // Start wants the forking thread to outlive the worker
	defer runtime.UnlockOSThread()
	before := runtime.NumGoroutine()
	var lines atomic.Int32
	p := startShell(t, "echo out; echo err >&2", &lines)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(p.PID, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	p.Exited()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("output not read to its end")
	}
	<-p.Execd()
	if lines.Load() != 2 {
		t.Errorf("%d output lines, want 2", lines.Load())
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHandoffAfterOutputEnded: a worker whose stdout was read to its end
// (closed by the worker, or the worker exited and its exit not yet reaped)
// is still handed over, the ended stream as an empty pipe, so that an
// upgrade at that moment is not refused ("use of closed file", seen in a
// stress run of the faults suite).
func TestHandoffAfterOutputEnded(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var lines atomic.Int32
	p := startShell(t, "echo out; exec 1>&-; echo err >&2; exec sleep 30", &lines)
	defer func() {
		unix.Kill(p.PID, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(p.PID, &ws, 0, nil)
		p.Exited()
	}()
	for deadline := time.Now().Add(5 * time.Second); !p.ended[0].Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stdout not read to its end")
		}
	}
	h, err := p.Handoff()
	if err != nil {
		t.Fatalf("handoff with stdout ended: %v", err)
	}
	defer CloseHandoff(h)
	if len(h.OutputFDs) != 2 {
		t.Fatalf("%d output fds handed over, want 2 (stdout, stderr)", len(h.OutputFDs))
	}
	if n, err := unix.Read(h.OutputFDs[0], make([]byte, 8)); n != 0 || err != nil {
		t.Errorf("the ended stdout reads %d bytes, %v; want end of file", n, err)
	}
	if n, err := unix.IoctlGetInt(h.OutputFDs[1], unix.TIOCINQ); err != nil || n < 0 {
		t.Errorf("stderr handed over unusable: %v", err)
	}
}

// startShell starts script as a worker whose output lines are counted.
func startShell(t *testing.T, script string, lines *atomic.Int32) *Process {
	t.Helper()
	p, err := Start(Spec{
		ShimPath:  ShellShim,
		ShimArgv:  ShellShimArgv,
		Command:   []string{"/bin/sh", "-c", script},
		Env:       []string{"PATH=/usr/bin:/bin"},
		NotifyDir: t.TempDir(),
		Output:    func(*Process, Stream, []byte) { lines.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStartErrorsSayWhy: a start whose fork and exec fail is an
// *ExecError that names what failed: the working directory that is gone
// or not a directory (Go's fork says only ENOENT or ENOTDIR), or the exec
// with its errno (E2BIG for an environment too large). None is a lack of
// resources.
func TestStartErrorsSayWhy(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	gone := filepath.Join(t.TempDir(), "releases", "v1")
	file := filepath.Join(t.TempDir(), "v1")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		dir    string
		env    []string
		want   string
		badDir bool
	}{
		{"a directory that is gone", gone, nil, "start worker 0: working directory " + gone + ": no such file or directory", true},
		{"a file, not a directory", file, nil, "start worker 0: working directory " + file + ": not a directory", true},
		{"a directory under a file", file + "/v2", nil, "start worker 0: working directory " + file + "/v2: not a directory", true},
		{"a variable too large", "", []string{"BIG=" + strings.Repeat("x", 200<<10)}, "start worker 0: exec /bin/sh: argument list too long", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Start(Spec{ShimPath: ShellShim, ShimArgv: ShellShimArgv, Command: []string{"/bin/true"},
				Env: tt.env, Dir: tt.dir, NotifyDir: t.TempDir()})
			var ee *ExecError
			if !errors.As(err, &ee) || err.Error() != tt.want || ee.BadDir != tt.badDir || ee.Resources() {
				t.Fatalf("Start: %v (%T), want an *ExecError %q, BadDir %v, not of resources", err, err, tt.want, tt.badDir)
			}
		})
	}
}

// TestStartErrorDirectoryNotEnterable: a working directory that exists but
// that baton's user may not enter (no search permission, x) is named as
// the cause, with EACCES, not taken for the shim's exec failing. Root
// enters any directory, so as root the test runs itself as nobody.
func TestStartErrorDirectoryNotEnterable(t *testing.T) {
	if dir := os.Getenv("BATON_TEST_NOT_ENTERABLE"); dir != "" {
		startInto(t, dir) // the child, as nobody
		return
	}
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "v1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o644); err != nil { // readable, not enterable
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)
	if os.Geteuid() != 0 {
		startInto(t, dir)
		return
	}
	// A copy of this test binary that nobody can run, in a directory
	// nobody can reach.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(tmp, "worker.test")
	if err := os.WriteFile(self, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{tmp, filepath.Dir(tmp)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-test.run", "^TestStartErrorDirectoryNotEnterable$", "-test.v")
	cmd.Env = []string{"BATON_TEST_NOT_ENTERABLE=" + dir, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestStartErrorDirectoryNotEnterable") {
		t.Fatalf("the test as nobody: %v\n%s", err, out)
	}
	t.Logf("as nobody:\n%s", out)
}

// startInto starts a worker in dir, which this process may not enter, and
// checks the error names dir and EACCES.
func startInto(t *testing.T, dir string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, err := Start(Spec{ShimPath: ShellShim, ShimArgv: ShellShimArgv, Command: []string{"/bin/true"}, Dir: dir})
	want := "start worker 0: working directory " + dir + ": permission denied"
	var ee *ExecError
	if !errors.As(err, &ee) || err.Error() != want || !ee.BadDir || !errors.Is(err, syscall.EACCES) || ee.Resources() {
		t.Fatalf("Start: %v (%T), want an *ExecError %q, BadDir, EACCES, not of resources", err, err, want)
	}
	t.Logf("Start: %v", err)
}
