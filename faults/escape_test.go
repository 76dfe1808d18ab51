package faults

import (
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
)

// daemonizer is a worker that double-forks a setsid daemon, which writes
// its pid to $PIDS, then serves nothing and waits.
const daemonizer = `(setsid sh -c 'echo $$ >> "$PIDS"; exec sleep 1000' &)
exec sleep 1000
`

// TestLeftBehindProcessesAreStopped: a worker's double-forked setsid
// daemon outlived a rollout and baton's stop (outside systemd nothing else
// cleans it). baton is the subreaper, so the daemon becomes its child: it
// is stopped with the worker that left it, and whatever is left at stop is
// killed.
func TestLeftBehindProcessesAreStopped(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := shortDir(t)
	pids := dir + "/pids"
	ctl := dir + "/c.sock"
	svc := testsd.StartPlain(t, bins, "run", "--workers", "2", "--listen", "127.0.0.1:0", "--control", ctl,
		"--ready", "exec", "--drain-timeout", "1s", "--", script(t, dir, "daemonizer", "export PIDS="+pids+"\n"+daemonizer))
	testsd.WaitStatus(ctx, t, ctl, "ready", func(s control.Status) bool { return s.State == "ready" })
	first := testsd.WaitPIDs(ctx, t, pids, 2)
	if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
		t.Fatal(err)
	}
	// The first generation's workers drain and are killed at 1 s; their
	// daemons go with them.
	for _, pid := range first {
		if !testsd.ProcessGone(timeout(t, 10*time.Second), pid) {
			t.Errorf("daemon %d of a replaced worker still runs", pid)
		}
	}
	second := testsd.WaitPIDs(ctx, t, pids, 4)[2:]
	svc.Signal(t, 15)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit %d", code)
	}
	for _, pid := range second {
		if !testsd.ProcessGone(timeout(t, 5*time.Second), pid) {
			t.Errorf("daemon %d outlived baton's stop", pid)
		}
	}
	if !strings.Contains(svc.Output.String(), "stopping a process the worker left behind") {
		t.Errorf("baton did not say it stopped the left-behind processes")
	}
}
