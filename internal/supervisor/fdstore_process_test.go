package supervisor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestKill9WithFDStoreLosesNothing: baton, run as a systemd unit
// (INVOCATION_ID), opens its own listener and stores it; baton is SIGKILLed
// under steady load and its workers, told by their parent-death signal,
// drain: the requests they hold are answered. Once every client's next
// connection waits in the socket's accept queue, baton starts again with
// the stored fd in LISTEN_FDS, as systemd's Restart= would. The
// connections that arrived meanwhile waited in the backlog: none refused,
// none failed.
func TestKill9WithFDStoreLosesNothing(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	sd := testsd.New(t)
	ctl := controlPath(t)
	args := []string{"run", "--workers", "2", "--listen", "app=127.0.0.1:0", "--control", ctl, "--", bins.Worker, "-work", "20ms"}
	unit := []string{"INVOCATION_ID=0123456789abcdef0123456789abcdef"}
	first := sd.Start(bins, nil, unit, args...)
	stored := sd.WaitFor(ctx, "FDSTORE=1", testsd.Sent("FDSTORE", "1"))
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	name := stored.Msg["FDNAME"]
	// The stand-in systemd keeps the stored fd, as the FD store does.
	fd, err := unix.FcntlInt(stored.Fds[0].Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := activation.NewListener(fd, name)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	url := "http://" + kept.Addr() + "/"

	// Fresh connections: each request's fate is its own (a kept-alive
	// client would reuse connections to workers that are draining).
	const clients = 6
	load := testsd.StartLoad(url, clients, 0, 5*time.Millisecond)
	defer load.Stop()
	// 20 ms per request: the workers hold some when baton is killed.
	if err := load.WaitOK(ctx, 100); err != nil {
		t.Fatal(err)
	}
	workers := testsd.Status(ctx, t, ctl).Workers
	first.Signal(t, unix.SIGKILL)
	first.Wait(ctx, t)
	// The workers drain on their parent-death signal and exit.
	for _, w := range workers {
		if !testsd.ProcessGone(ctx, w.PID) {
			t.Fatalf("worker %d outlived the killed baton", w.PID)
		}
	}
	killedAt, okAtKill := time.Now(), load.OK()
	// The gap while nothing runs lasts until every client's connection
	// waits in the accept queue, unanswered.
	for {
		queued, err := testsd.AcceptQueue(kept.FD())
		if err != nil {
			t.Fatal(err)
		}
		if queued >= clients {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d connections in the accept queue, want the %d clients'", queued, clients)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("all %d clients waiting in the backlog %s after the kill", clients, time.Since(killedAt).Round(time.Millisecond))
	// A client counts an answer a moment after reading it: at most one
	// each after the workers were gone.
	if load.OK() > okAtKill+clients {
		t.Errorf("%d requests answered while no worker ran", load.OK()-okAtKill)
	}
	mark := sd.Count()
	second := sd.Start(bins, []*activation.Listener{kept}, unit, args...)
	sd.WaitFrom(ctx, mark, "READY=1 from the restarted baton", testsd.Sent("READY", "1"))
	t.Logf("restarted baton ready %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if err := load.WaitOK(ctx, okAtKill+200); err != nil {
		t.Fatal(err)
	}
	ok, _ := load.Stop()
	// Requests in flight in the workers at the kill were answered by
	// their drain; every one sent later waited in the socket's backlog.
	for _, f := range load.Failures() {
		t.Errorf("request sent %s relative to the kill failed: %s", f.Start.Sub(killedAt).Round(time.Millisecond), f.Err)
	}
	t.Logf("%d requests answered, the gap's included; none failed", ok)
	for _, d := range sd.Messages()[mark:] {
		if d.Msg.Is("FDSTORE", "1") && strings.HasPrefix(d.Msg["FDNAME"], "baton.") {
			t.Errorf("the restarted baton stored the socket again: %v", d.Msg)
		}
	}
	second.WaitOutput(ctx, t, `msg="listener back from the FD store, not re-bound" name=app addr=`+kept.Addr())
}

// TestUnclaimedStoredSocketIsRemoved: a stored socket whose --listen is
// gone is dropped from the store with FDSTOREREMOVE=1; a .socket unit's
// socket is kept whatever its name.
func TestUnclaimedStoredSocketIsRemoved(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	sd := testsd.New(t)
	old := listener(t, "baton.old=127.0.0.1:0")
	unit := listener(t, "myapp.socket=127.0.0.1:0")
	ctl := controlPath(t)
	sd.Start(bins, []*activation.Listener{old, unit}, nil,
		"run", "--workers", "1", "--ready", "exec", "--listen", "app=127.0.0.1:0", "--control", ctl, "--", "sleep", "60")
	removed := sd.WaitFor(ctx, "FDSTOREREMOVE=1", testsd.Sent("FDSTOREREMOVE", "1"))
	if !removed.Msg.Is("FDNAME", "baton.old") {
		t.Errorf("removed %v", removed.Msg)
	}
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	st := testsd.Status(ctx, t, ctl)
	var got []string
	for _, l := range st.Listeners {
		got = append(got, l.Name+"/"+l.Source)
	}
	if strings.Join(got, " ") != "myapp.socket/systemd app/listen" {
		t.Errorf("listeners %v", got)
	}
}
