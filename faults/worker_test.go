package faults

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
)

// hostile is a Python worker that does what MODE says after READY=1:
// huge-watchdog sends WATCHDOG_USEC=18446744073710552 and never pings;
// escape sets a STATUS= full of terminal control sequences; flood has a
// child send 30,000 datagrams from its own pid.
const hostile = `import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(msg):
    s.sendto(msg.encode(), addr)
send("READY=1")
mode = os.environ["MODE"]
if mode == "huge-watchdog":
    send("WATCHDOG_USEC=18446744073710552")
elif mode == "escape":
    send("STATUS=\x1b[2J\x1b]0;owned\x07\x9b31mred")
elif mode == "flood":
    if os.fork() == 0:
        for i in range(30000):
            try:
                send("STATUS=not me %d" % i)
            except OSError:
                time.sleep(0.001)
        os._exit(0)
    os.wait()
    send("STATUS=flood done")
time.sleep(1000)
`

func startHostile(t *testing.T, mode string, args ...string) (*testsd.Service, string) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is installed by scripts/test")
	}
	dir := shortDir(t)
	py := dir + "/hostile.py"
	if err := os.WriteFile(py, []byte(hostile), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl := dir + "/c.sock"
	sd := testsd.New(t)
	args = append([]string{"run", "--workers", "1", "--control", ctl}, args...)
	svc := sd.Start(bins, []*activation.Listener{listener(t)}, []string{"MODE=" + mode}, append(args, "--", "python3", py)...)
	return svc, ctl
}

// TestHugeWatchdogUsecIsNoWatchdog: 18446744073710552 µs overflowed a
// time.Duration to about 1 ms, and the worker was SIGABRTed in a loop.
// Anything beyond what a Duration holds is "no limit", as USEC_INFINITY.
func TestHugeWatchdogUsecIsNoWatchdog(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 20*time.Second)
	svc, ctl := startHostile(t, "huge-watchdog", "--watchdog", "1s")
	st := testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	pid := st.Workers[0].PID
	svc.WaitOutput(ctx, t, "worker changed its watchdog")
	// Past the --watchdog 1s it no longer has, by baton's clock (the
	// worker's uptime in status).
	at := testsd.Status(ctx, t, ctl).Workers[0].UptimeSeconds
	st = testsd.WaitStatus(ctx, t, ctl, "1.5 s more of uptime", func(s control.Status) bool {
		w := s.Workers[0]
		return w.PID != pid || w.Restarts != 0 || w.UptimeSeconds >= at+1.5
	})
	if w := st.Workers[0]; w.PID != pid || w.Restarts != 0 {
		t.Fatalf("worker replaced: %+v (was pid %d)", w, pid)
	}
	if strings.Contains(svc.Output.String(), "watchdog expired") {
		t.Fatalf("the watchdog fired:\n%s", svc.Output.String())
	}
}

// TestStatusEscapesControlCharacters: a worker's STATUS= reached the
// operator's terminal raw through `baton status` (clear screen, window
// title, colours).
func TestStatusEscapesControlCharacters(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 20*time.Second)
	_, ctl := startHostile(t, "escape")
	testsd.WaitStatus(ctx, t, ctl, "the worker's STATUS=", func(s control.Status) bool {
		return strings.Contains(s.Workers[0].Status, "owned")
	})
	out, err := exec.CommandContext(ctx, bins.Baton, "status", "--control", ctl).CombinedOutput()
	if err != nil {
		t.Fatalf("baton status: %v\n%s", err, out)
	}
	if i := bytes.IndexFunc(out, func(r rune) bool { return r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 }); i >= 0 {
		t.Fatalf("control character %q in baton status output:\n%q", out[i], out)
	}
	if !bytes.Contains(out, []byte(`\x1b[2J\x1b]0;owned\x07\u009b31mred`)) {
		t.Errorf("the worker's STATUS= is not shown escaped:\n%s", out)
	}
}

// TestWrongPidFloodIsRateLimited: 30,000 datagrams from a worker's child
// wrote 30,000 warning lines; now a few per worker per window, with a
// count.
func TestWrongPidFloodIsRateLimited(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	svc, ctl := startHostile(t, "flood")
	testsd.WaitStatus(ctx, t, ctl, "the flood over", func(s control.Status) bool {
		return s.Workers[0].Status == "flood done"
	})
	svc.Signal(t, 15) // the count of what was held back comes at the latest when the worker exits
	svc.Wait(ctx, t)
	out := svc.Output.String()
	lines := strings.Count(out, "not from the worker's pid")
	if lines == 0 || lines > 10 {
		t.Fatalf("%d warnings about wrong-pid messages, want a few", lines)
	}
	if !strings.Contains(out, "suppressed=") {
		t.Errorf("no count of suppressed warnings:\n%s", out)
	}
	t.Logf("30,000 wrong-pid datagrams: %d warning lines", lines)
}

// TestControlPathThatIsNotASocket: --control on an existing regular file
// replaced it with the socket and deleted it at stop.
func TestControlPathThatIsNotASocket(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 20*time.Second)
	path := shortDir(t) + "/precious"
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bins.Baton, "run", "--workers", "1", "--listen", "127.0.0.1:0",
		"--control", path, "--", bins.Worker).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("baton --control on a regular file: %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), path+" exists and is not a socket") {
		t.Errorf("the error does not name the path:\n%s", out)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("the file was touched: %q %v", b, err)
	}
}

// TestStopWhileStartingManyWorkers: a fresh start of many workers ran as
// one loop that did not look at signals, so a SIGTERM waited for every
// worker to start (and, under a process limit, forever).
func TestStopWhileStartingManyWorkers(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	dir := shortDir(t)
	svc := testsd.StartPlain(t, bins, "run", "--workers", "300", "--listen", "127.0.0.1:0",
		"--control", dir+"/c.sock", "--ready", "exec", "--", script(t, dir, "w", "exec sleep 1000\n"))
	svc.WaitOutput(ctx, t, "worker started")
	svc.Signal(t, 15)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	out := svc.Output.String()
	started := strings.Count(out, "worker started")
	if started >= 300 {
		t.Errorf("all %d workers were started before the SIGTERM was acted on", started)
	}
	if i := strings.Index(out, "msg=stopping"); i < 0 || strings.Contains(out[i:], "worker started") {
		t.Errorf("a worker was started after the stop began:\n%s", out)
	}
	t.Logf("SIGTERM during the start of 300 workers: %d had started", started)
}

// TestWorkersBound: --workers 100000000 forked until the process limit.
func TestWorkersBound(t *testing.T) {
	testsd.Process(t)
	out, err := exec.Command(bins.Baton, "run", "--workers", "100000000", "--listen", "127.0.0.1:0", "--", "true").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "--workers 100000000: want 1 to 4096") {
		t.Fatalf("%v\n%s", err, out)
	}
}
