package faults

import (
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestListenerShutDownIsNoticedAndRestored: a worker that calls shutdown()
// on its copy of the listener (every copy is the one socket) made every new
// connection refused while status said 4/4 ready and rollouts "succeeded".
// baton notices (SO_ACCEPTCONN), says so, and listens again.
func TestListenerShutDownIsNoticedAndRestored(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	// A fixed port, as services have: bound to port 0, a TCP socket gives
	// its port back when it is shut down.
	web := fixedPortListener(t)
	svc, ctl := serving(ctx, t, web, "--workers", "2", "--restart-backoff", "20ms..200ms", "--", bins.Worker)
	if _, err := testsd.Get(ctx, "http://"+web.Addr()+"/"); err != nil {
		t.Fatal(err)
	}
	// What a careless worker does to its copy: this process's copy is the
	// same socket, as systemd's would be.
	if err := unix.Shutdown(web.FD(), unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	if _, err := testsd.Get(ctx, "http://"+web.Addr()+"/"); err == nil {
		t.Fatal("a shut-down listener still accepted: the fault was not reproduced")
	}
	svc.WaitOutput(ctx, t, "listener stopped listening")
	svc.WaitOutput(ctx, t, "listener listening again")
	for {
		_, err := testsd.Get(ctx, "http://"+web.Addr()+"/")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the listener never served again: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := testsd.WaitStatus(ctx, t, ctl, "listening", func(s control.Status) bool {
		return len(s.Listeners) == 1 && s.Listeners[0].Listening && s.Ready == 2
	})
	t.Logf("listener after the shutdown: %+v", st.Listeners[0])
}

// TestNonBlockingFlagReported: Go's net package sets O_NONBLOCK on the
// socket all workers share (the example worker is a Go program); status
// --json says so, and the journal says when it changed.
func TestNonBlockingFlagReported(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	web := listener(t)
	svc, ctl := serving(ctx, t, web, "--workers", "1", "--", bins.Worker)
	testsd.WaitStatus(ctx, t, ctl, "nonblocking", func(s control.Status) bool {
		return len(s.Listeners) == 1 && s.Listeners[0].NonBlocking
	})
	fl, err := unix.FcntlInt(uintptr(web.FD()), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("the socket is not non-blocking (%v): status reported what is not so", err)
	}
	// The journal line comes with the change; baton's output reaches the
	// test through a pipe, after the status that reported it.
	svc.WaitOutput(ctx, t, "listener is now in non-blocking mode")
}

// fixedPortListener listens on a port that was free a moment ago, given by
// number.
func fixedPortListener(t *testing.T) *activation.Listener {
	t.Helper()
	probe := listener(t)
	addr := probe.Addr()
	probe.Close()
	return testsd.Listener(t, "web="+addr)
}
