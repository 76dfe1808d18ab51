package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
)

// sleepyServer takes fd 3, sleeps as long as its first argument says, then
// answers in a blocking accept loop, as a server with a slow start and no
// sd_notify does.
const sleepyServer = `
import os, socket, sys, time
s = socket.socket(fileno=3)
time.sleep(float(sys.argv[1]))
body = ("sleepy slot %s pid %d\n" % (os.environ["BATON_WORKER"], os.getpid())).encode()
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()
`

// TestReadyListeningWaitsForAccept: under --ready listening a worker that
// holds the socket and sleeps 2 s before it accepts is not promoted during
// the sleep, neither at start nor in a rollout; it is soon after.
func TestReadyListeningWaitsForAccept(t *testing.T) {
	testsd.Process(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	svc, web, ctl := served(ctx, t, func(string) []string {
		return []string{"--workers", "2", "--ready", "listening", "--ready-timeout", "20s", "--",
			"/usr/bin/python3", "-c", sleepyServer, "2"}
	})
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("READY=1 %s after start, before the workers' 2 s sleep ended", took)
	}
	if body, err := testsd.Get(ctx, "http://"+web.Addr()+"/"); err != nil || !strings.HasPrefix(body, "sleepy slot") {
		t.Fatalf("right after READY=1: %q, %v", body, err)
	}
	resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Rollout
	// Two slots, one at a time: each step waits out a 2 s sleep.
	if r.State != "ok" || r.DurationSeconds < 4 || r.DurationSeconds > 10 {
		t.Fatalf("rollout %+v: want ok in a little over 4 s (two 2 s starts)", r)
	}
	for _, line := range strings.Split(svc.Output.String(), "\n") {
		if strings.Contains(line, "worker ready") && strings.Contains(line, "gen=2") {
			t.Log(line)
		}
	}
}

// shrinkingServer does to the shared socket what hypercorn 0.13 does: its
// own listen(100), and non-blocking mode, then serves in an event loop.
const shrinkingServer = `
import asyncio, os, socket
s = socket.socket(fileno=3)
s.listen(100)
s.setblocking(False)
body = ("shrinking slot %s pid %d\n" % (os.environ["BATON_WORKER"], os.getpid())).encode()
async def handle(r, w):
    await r.readuntil(b"\r\n\r\n")
    w.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(handle, sock=s)
    await server.serve_forever()
asyncio.run(main())
`

// TestSocketHygieneGuard: a worker that shrinks the shared accept queue
// with its own listen() and sets the socket non-blocking is named, with
// what it did, in baton's log and in status --json.
func TestSocketHygieneGuard(t *testing.T) {
	testsd.Process(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	svc, _, ctl := served(ctx, t, func(string) []string {
		return []string{"--workers", "1", "--ready", "listening", "--", "/usr/bin/python3", "-c", shrinkingServer}
	})
	st := testsd.Status(ctx, t, ctl)
	pid := st.Workers[0].PID
	l := st.Listeners[0]
	if l.Backlog != 100 || !l.NonBlocking {
		t.Fatalf("listener %+v: want accept queue 100, non-blocking", l)
	}
	if len(l.Changes) != 2 {
		t.Fatalf("changes %q: want the queue and the blocking mode", l.Changes)
	}
	worker := fmt.Sprintf("worker 0 (pid %d, generation 1)", pid)
	for _, c := range l.Changes {
		if !strings.Contains(c, worker) {
			t.Errorf("change %q does not name %s", c, worker)
		}
	}
	if !strings.Contains(l.Changes[0], "accept queue 100, was ") {
		t.Errorf("change %q, want the queue's new and old length", l.Changes[0])
	}
	log := svc.Output.String()
	if !strings.Contains(log, "a worker shrank the accept queue") || !strings.Contains(log, fmt.Sprintf("pid=%d", pid)) {
		t.Errorf("baton's log does not name the worker that shrank the queue:\n%s", log)
	}
}
