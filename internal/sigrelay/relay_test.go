package sigrelay

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test re-executes its own binary in place, as baton does, in the role
// named by roleEnv.
const roleEnv = "SIGRELAY_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "old":
		oldImage()
	case "new":
		newImage()
	}
	os.Exit(m.Run())
}

// oldImage blocks the held signals on its thread, makes one pending there
// (thread-directed: it stays pending across execve, the case the Go runtime
// makes fatal), one pending for the process after Catch (which, with cgo,
// blocked them on every thread), hands one over from "the Go handlers",
// and execs.
func oldImage() {
	runtime.LockOSThread()
	var held unix.Sigset_t
	for _, sig := range Held {
		held.Val[(sig-1)/64] |= 1 << ((sig - 1) % 64)
	}
	unix.PthreadSigmask(unix.SIG_BLOCK, &held, nil)
	// As in baton: the signals asked for, so the runtime has its signal
	// thread, which blocks what no one asked for and takes the rest.
	signal.Notify(make(chan os.Signal, 1), append([]os.Signal{unix.SIGWINCH}, heldSignals()...)...)
	r, err := Open()
	if err != nil {
		fail(err)
	}
	threads, err := os.ReadDir("/proc/self/task")
	if err != nil {
		fail(err)
	}
	if err := r.Catch(); err != nil {
		fail(err)
	}

	r.Add([]int{int(unix.SIGUSR1)})
	unix.Tgkill(os.Getpid(), unix.Gettid(), unix.SIGTERM)
	unix.Kill(os.Getpid(), unix.SIGHUP) // blocked on every thread now: pending too
	env := []string{roleEnv + "=new"}
	if os.Getenv("SIGRELAY_TEST_NO_RELAY") == "" {
		env = append(env, r.Export())
		if built != none { // without cgo, Catch blocks nothing
			if err := allThreadsBlock(threads, held.Val[0]); err != nil {
				fail(err)
			}
		}
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, roleEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(os.Args[0], os.Args, env)
	fail(fmt.Errorf("exec: %w (recorded meanwhile: %v)", err, r.Abort()))
}

func heldSignals() []os.Signal {
	var sigs []os.Signal
	for _, sig := range Held {
		sigs = append(sigs, sig)
	}
	return sigs
}

// allThreadsBlock checks that the threads there were before Catch block
// mask (what a thread started since may do is the residual the package
// documents: reading /proc here is what makes the runtime start some).
func allThreadsBlock(tasks []os.DirEntry, mask uint64) error {
	for _, task := range tasks {
		status, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // gone
		}
		for line := range strings.Lines(string(status)) {
			if hex, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				blk, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
				if err != nil || blk&mask != mask {
					return fmt.Errorf("thread %s blocks %s after Catch, want %x in it", task.Name(), strings.TrimSpace(hex), mask)
				}
			}
		}
	}
	return nil
}

// waitBytes waits until the pipe read from fd holds n bytes (n signals),
// without reading them.
func waitBytes(fd, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := unix.IoctlGetInt(fd, unix.TIOCINQ); err == nil && got >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	fail(fmt.Errorf("the recorder did not write %d signals", n))
}

// newImage takes a SIGINT after the Go runtime installed its handlers and
// before signal.Notify (fatal unless relay.c's sigaction kept the runtime's
// handler aside, the recorder in place), asks for the signals, hands them
// back to Go and prints what the relay carried.
func newImage() {
	unix.Kill(os.Getpid(), unix.SIGINT)
	waitBytes(inherited[0], 4) // USR1 from the old image, TERM, HUP and INT here
	c := make(chan os.Signal, 8)
	signal.Notify(c, unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2)
	HandBack()
	sigs, err := Received()
	if err != nil {
		fail(err)
	}
	slices.Sort(sigs)
	fmt.Println(sigs)
	// The handlers are Go's again: a signal now reaches the channel.
	unix.Kill(os.Getpid(), unix.SIGUSR2)
	select {
	case sig := <-c:
		fmt.Println("after:", sig)
	case <-time.After(5 * time.Second):
		fail(fmt.Errorf("SIGUSR2 did not reach signal.Notify after HandBack"))
	}
	os.Exit(0)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(3)
}

// TestSignalsPendingAcrossExec: a SIGTERM pending for the exec thread and a
// SIGHUP for the process across execve, a SIGINT sent before the new image
// asked for signals and one the old image's handlers caught all reach the
// new image, which lives: with the whole relay. In a binary whose Mode says
// less, the new image dies as Mode says: of the SIGINT sent once the Go
// runtime has started, or, without cgo, of the SIGTERM pending across
// execve. So Mode is tested in every build, and a build whose relay does
// less than it claims fails here.
func TestSignalsPendingAcrossExec(t *testing.T) {
	t.Logf("mode: %s", Mode())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=old")
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.Output()
	var stderr []byte
	exit := (*exec.ExitError)(nil)
	if errors.As(err, &exit) {
		stderr = exit.Stderr
	}
	if built != full {
		want := map[coverage]syscall.Signal{untilRuntime: unix.SIGINT, none: unix.SIGTERM}[built]
		if exit == nil || !exit.Sys().(syscall.WaitStatus).Signaled() || exit.Sys().(syscall.WaitStatus).Signal() != want {
			t.Fatalf("mode %q: the re-executed image ended %v, want killed by %v (stdout %q, stderr %q)", Mode(), err, want, out, stderr)
		}
		return
	}
	if err != nil {
		t.Fatalf("the re-executed image: %v (stdout %q, stderr %q)", err, out, stderr)
	}
	want := fmt.Sprintf("%v\nafter: %v\n", []int{int(unix.SIGHUP), int(unix.SIGINT), int(unix.SIGUSR1), int(unix.SIGTERM)}, unix.SIGUSR2)
	if string(out) != want {
		t.Fatalf("the new image printed %q, want %q", out, want)
	}
}

// TestMode: the mode is the build's: the whole relay with cgo where the Go
// runtime sets its handlers through libc, none without cgo.
func TestMode(t *testing.T) {
	want := none
	if cgoEnabled {
		want = untilRuntime
		switch runtime.GOOS + "/" + runtime.GOARCH {
		case "linux/386", "linux/amd64", "linux/arm64", "linux/loong64", "linux/ppc64le":
			want = full
		}
	}
	if built != want || Protected() != (want == full) {
		t.Errorf("built %d, Protected() %v, want %d (cgo %v on %s/%s)", built, Protected(), want, cgoEnabled, runtime.GOOS, runtime.GOARCH)
	}
	if prefix := map[coverage]string{full: "cgo:", untilRuntime: "partial:", none: "none:"}[want]; !strings.HasPrefix(Mode(), prefix) {
		t.Errorf("Mode() = %q, want it to begin %q", Mode(), prefix)
	}
}

// TestWithoutRelayPendingTermIsFatal is the premise: without the relay, the
// same SIGTERM kills the new image in the Go runtime's start-up. If a Go
// release stops doing that, this test fails (it only logged once, which
// let a broken premise pass unseen): the relay would then be a
// belt-and-braces, and its tests would prove nothing.
func TestWithoutRelayPendingTermIsFatal(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"=old", "SIGRELAY_TEST_NO_RELAY=1")
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	var exit *exec.ExitError
	if err == nil {
		// The premise broke: this test would pass whatever the relay does.
		t.Fatal("the Go runtime no longer kills an image started with SIGTERM pending: the relay's premise changed (internal/sigrelay; docs/design.md, Signals across a re-exec)")
	}
	if !errors.As(err, &exit) {
		t.Fatal(err)
	}
	if ws := exit.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != unix.SIGTERM {
		t.Fatalf("without the relay the new image ended %v, want killed by SIGTERM", exit)
	}
}
