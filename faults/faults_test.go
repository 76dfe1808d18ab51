// Package faults holds baton's fault suite: for each promise a supervisor
// makes, the fault from the field that broke it (a signal at the worst
// moment, fd or process limits, a stuck or vanished log reader, a hostile
// worker), run against the real binary with real processes, sockets and
// signals. Each test is bounded in time and size.
package faults

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/testsd"
)

var bins testsd.Bins

func TestMain(m *testing.M) {
	floodChild() // returns unless this is a flood's process (health_test.go)
	testsd.Main(m, &bins)
}

func timeout(t *testing.T, d time.Duration) context.Context { return testsd.Timeout(t, d) }

func shortDir(t *testing.T) string { return testsd.ShortDir(t) }

func listener(t *testing.T) *activation.Listener { return testsd.Listener(t, "web=127.0.0.1:0") }

// script writes an executable shell script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// openFDs counts pid's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join("/proc", itoa(pid), "fd"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// serving starts `baton run --control CTL args...` under a stand-in systemd
// that passes it web, waits for READY=1, and returns the service and the
// control socket's path.
func serving(ctx context.Context, t *testing.T, web *activation.Listener, args ...string) (*testsd.Service, string) {
	t.Helper()
	sd := testsd.New(t)
	ctl := shortDir(t) + "/c.sock"
	svc := sd.Start(bins, []*activation.Listener{web}, nil, append([]string{"run", "--control", ctl}, args...)...)
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	return svc, ctl
}

// freeAddr is a loopback TCP address that was free a moment ago, for a
// listener baton opens itself (--metrics).
func freeAddr(t *testing.T) string {
	t.Helper()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer free.Close()
	return free.Addr().String()
}
