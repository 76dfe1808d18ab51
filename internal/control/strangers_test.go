package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shortLimits shortens the client's deadlines for a test, to 1s: longer
// than any stall of a busy test machine, which an answer that comes at once
// must not miss.
func shortLimits(t *testing.T) {
	saved := limits
	limits.greeting = time.Second
	limits.silence = time.Second
	limits.status = time.Second
	limits.stop = time.Second
	limits.upgrade = time.Second
	t.Cleanup(func() { limits = saved })
}

// stranger serves a unix socket that is not baton's: serve gets each
// connection, with the first line the client sent. It lives until the test
// ends.
func stranger(t *testing.T, serve func(c net.Conn, request string)) string {
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				line, _ := bufio.NewReader(c).ReadString('\n') // what it is does not matter to a stranger
				serve(c, line)
			})
		}
	})
	return path
}

func writeLine(c net.Conn, v any) {
	b, _ := json.Marshal(v) // test values only
	c.Write(append(b, '\n'))
}

// TestClientRefusesStrangers: whatever serves the control socket gets no
// belief and no endless wait unless it greets as baton, with the pid of the
// process that serves the socket. Each command, Stop included, ends within
// its deadline (shortened here) with ErrNotBaton, and Stop tells nothing.
func TestClientRefusesStrangers(t *testing.T) {
	shortLimits(t)
	me := os.Getpid()
	servers := []struct {
		name  string
		serve func(c net.Conn, request string)
		want  string
	}{
		{"accepts and never answers", func(net.Conn, string) {}, "no greeting from pid"},
		{"reads and closes", func(c net.Conn, _ string) { c.Close() }, "closed the connection without an answer"},
		{"answers garbage", func(c net.Conn, _ string) { c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }, `answered "HTTP/1.1 400 Bad Request\x0d", not as baton does`},
		{"greets with another pid", func(c net.Conn, _ string) {
			writeLine(c, Response{PID: me + 1, Hello: &Hello{Protocol: 2}})
			writeLine(c, Response{PID: me + 1, Status: &Status{PID: me + 1}, Stopping: &Stopping{PID: me + 1}, Rollout: &Rollout{}})
		}, fmt.Sprintf("served by pid %d, answered by pid %d", me, me+1)},
		{"answers without a pid", func(c net.Conn, _ string) {
			writeLine(c, Response{Status: &Status{PID: me}, Stopping: &Stopping{PID: me}, Rollout: &Rollout{}})
		}, "without the pid baton sends"},
		{"works before it greets", func(c net.Conn, _ string) { writeLine(c, Response{PID: me, Working: true}) }, "works before it greeted"},
		// An error without a pid is how an older baton refuses a field it
		// does not know; whose it is cannot be shown, and its text is
		// escaped.
		{"refuses as an older baton would", func(c net.Conn, _ string) {
			c.Write([]byte(`{"error":"\u001b[31mall good, baton stopped"}` + "\n"))
		}, fmt.Sprintf(`refused by pid %d (an older baton? its answer is not verified): \x1b[31mall good`, me)},
	}
	commands := []Request{{Command: CmdStatus}, {Command: CmdReload}, {Command: CmdScale, Workers: 2}, {Command: CmdRecycle, All: true},
		{Command: CmdRollback}, {Command: CmdUpgrade}, {Command: CmdStop}}
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			path := stranger(t, srv.serve)
			for _, req := range commands {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if req.Command == CmdStop {
					err = Stop(ctx, path, func(st Stopping) { t.Errorf("stop: told %+v by a stranger", st) })
				} else {
					_, err = Call(ctx, path, req)
				}
				cancel()
				if !errors.Is(err, ErrNotBaton) || !strings.Contains(fmt.Sprint(err), srv.want) {
					t.Errorf("%s: %v, want ErrNotBaton saying %q", req.Command, err, srv.want)
				}
				if strings.ContainsFunc(fmt.Sprint(err), func(r rune) bool { return r < ' ' }) {
					t.Errorf("%s: %q holds a control character", req.Command, fmt.Sprint(err))
				}
			}
		})
	}
}

// TestClientDeadlineAfterGreeting: baton greeted, then went silent: a
// status ends at its answer deadline even while heartbeats come, and a
// rollout at its silence limit when they stop.
func TestClientDeadlineAfterGreeting(t *testing.T) {
	shortLimits(t)
	me := os.Getpid()
	beating := stranger(t, func(c net.Conn, _ string) {
		writeLine(c, Response{PID: me, Hello: &Hello{Protocol: 2}})
		for range 100 {
			time.Sleep(50 * time.Millisecond)
			if _, err := c.Write([]byte(fmt.Sprintf(`{"pid":%d,"working":true}`+"\n", me))); err != nil {
				return
			}
		}
	})
	silent := stranger(t, func(c net.Conn, _ string) { writeLine(c, Response{PID: me, Hello: &Hello{Protocol: 2}}) })
	tests := []struct {
		path string
		req  Request
		want string
	}{
		{beating, Request{Command: CmdStatus}, "no answer to status from pid"},
		{silent, Request{Command: CmdStatus}, "no answer to status from pid"},
		{silent, Request{Command: CmdReload}, "silent for 1s while working on reload"},
		{silent, Request{Command: CmdUpgrade}, "no answer to upgrade from pid"},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := Call(ctx, tt.path, tt.req)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.req.Command, err, tt.want)
		}
	}
	// Heartbeats keep a rollout's wait alive past the silence limit.
	done := make(chan struct{})
	slow := stranger(t, func(c net.Conn, _ string) {
		writeLine(c, Response{PID: me, Hello: &Hello{Protocol: 2}})
		for {
			select {
			case <-done:
				writeLine(c, Response{PID: me, Rollout: &Rollout{To: 3, State: "ok"}})
				return
			case <-time.After(50 * time.Millisecond):
				writeLine(c, Response{PID: me, Working: true})
			}
		}
	})
	time.AfterFunc(3*limits.silence, func() { close(done) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Call(ctx, slow, Request{Command: CmdReload})
	if err != nil || resp.Rollout == nil || resp.Rollout.To != 3 {
		t.Errorf("a rollout with heartbeats for 3 silence limits: %+v, %v", resp, err)
	}
}

// TestClientRefusesNonSockets: a control path that is a regular file or a
// directory is an error naming it, for Stop too, never "stopped already".
func TestClientRefusesNonSockets(t *testing.T) {
	dir := shortDir(t)
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, kind := range map[string]string{file: "a regular file", dir: "a directory"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := Stop(ctx, path, func(st Stopping) { t.Errorf("told %+v", st) })
		_, callErr := Call(ctx, path, Request{Command: CmdStatus})
		cancel()
		for _, err := range []error{err, callErr} {
			want := fmt.Sprintf("control socket %s is %s, not a socket", path, kind)
			if errors.Is(err, ErrNotRunning) || err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%v, want %q", err, want)
			}
		}
	}
}

// TestStopTrustsNoStranger: a stranger that reads the stop request and
// closes is neither reported as exiting nor waited for.
func TestStopTrustsNoStranger(t *testing.T) {
	shortLimits(t)
	path := stranger(t, func(c net.Conn, _ string) { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Stop(ctx, path, func(st Stopping) { t.Errorf("told %+v by a stranger", st) })
	if err == nil || errors.Is(err, ErrNotRunning) || ctx.Err() != nil {
		t.Errorf("Stop = %v (context: %v), want an error at once", err, ctx.Err())
	}
}

// TestServerGreetsAndBeats: a protocol 2 request is greeted at once with
// the server's pid, gets a heartbeat while its rollout runs, then the
// answer with the pid; a protocol 1 request (an older client's) gets the
// answer line alone.
func TestServerGreetsAndBeats(t *testing.T) {
	saved := heartbeatEvery
	heartbeatEvery = 20 * time.Millisecond
	t.Cleanup(func() { heartbeatEvery = saved })
	release := make(chan struct{})
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, gatedHandler{release: release}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	me := os.Getpid()
	read := func(br *bufio.Reader) Response {
		t.Helper()
		line, err := br.ReadBytes('\n')
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var r Response
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return r
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(`{"command":"reload","protocol":2}` + "\n"))
	br := bufio.NewReader(c)
	if r := read(br); r.PID != me || r.Hello == nil || r.Hello.Protocol != Protocol {
		t.Errorf("first line %+v, want a greeting with pid %d", r, me)
	}
	if r := read(br); r.PID != me || !r.Working {
		t.Errorf("second line %+v, want a heartbeat", r)
	}
	close(release)
	for {
		r := read(br)
		if r.Working {
			continue
		}
		if r.PID != me || r.Rollout == nil || r.Rollout.To != 2 {
			t.Errorf("answer %+v, want the rollout with pid %d", r, me)
		}
		break
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("a line after the answer")
	}

	old, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(10 * time.Second))
	old.Write([]byte(`{"command":"status"}` + "\n"))
	br = bufio.NewReader(old)
	if r := read(br); r.Hello != nil || r.Working || r.Status == nil {
		t.Errorf("protocol 1 answer %+v, want the status alone", r)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("a second line for a protocol 1 request")
	}
}

// gatedHandler's reloads end when release is closed.
type gatedHandler struct {
	fakeHandler
	release chan struct{}
}

func (g gatedHandler) Reload(ctx context.Context) (Rollout, error) {
	select {
	case <-g.release:
		return Rollout{From: 1, To: 2, State: "ok"}, nil
	case <-ctx.Done():
		return Rollout{}, ctx.Err()
	}
}

// olderBaton serves the control socket as a protocol 1 baton did: a request
// with a field it does not know is refused, the answer is one line without
// the server's pid.
func olderBaton(t *testing.T, stopped chan<- struct{}) string {
	me := os.Getpid()
	return stranger(t, func(c net.Conn, line string) {
		var req struct {
			Command string `json:"command"`
			Workers int    `json:"workers,omitempty"`
		}
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeLine(c, Response{Error: "control request: " + err.Error()})
			c.Close()
			return
		}
		switch req.Command {
		case CmdStatus:
			writeLine(c, Response{Status: &Status{PID: me, Generation: 4}})
		case CmdScale:
			writeLine(c, Response{Rollout: &Rollout{Kind: "scale", From: 4, To: 4, State: "ok", Workers: req.Workers}})
		case CmdStop:
			writeLine(c, Response{Stopping: &Stopping{PID: me, Doing: "2 workers drain"}})
			close(stopped)
		case CmdUpgrade:
			writeLine(c, Response{Error: "an upgrade is already in progress (" + ErrBusy.Error() + ")", Busy: true})
		}
		c.Close()
	})
}

// TestClientSpeaksToOlderBaton: a new client works with a baton of
// protocol 1, which refuses the protocol field without acting on it: it
// asks again as protocol 1, believing the pid its answers carry, and a
// status's pid for a rollout's.
func TestClientSpeaksToOlderBaton(t *testing.T) {
	shortLimits(t)
	stopped := make(chan struct{})
	path := olderBaton(t, stopped)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := Call(ctx, path, Request{Command: CmdStatus}); err != nil || resp.Status.Generation != 4 {
		t.Errorf("status: %+v, %v", resp, err)
	}
	if resp, err := Call(ctx, path, Request{Command: CmdScale, Workers: 3}); err != nil || resp.Rollout.Workers != 3 {
		t.Errorf("scale: %+v, %v", resp, err)
	}
	_, err := Call(ctx, path, Request{Command: CmdUpgrade})
	if !errors.Is(err, ErrBusy) || !errors.Is(err, ErrNotBaton) || errors.Is(err, ErrRefused) {
		t.Errorf("busy upgrade: %v, want ErrBusy, as a refusal not shown to be baton's", err)
	}
	stopCtx, stopCancel := context.WithTimeout(ctx, 3*time.Second)
	defer stopCancel()
	var told *Stopping
	err = Stop(stopCtx, path, func(st Stopping) { told = &st })
	select {
	case <-stopped:
	default:
		t.Error("the stop never reached the older baton")
	}
	if told == nil || told.PID != os.Getpid() || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stop: told %+v, %v; want this pid told, and a wait for its exit", told, err)
	}
}

// TestBusyToldOnce: a busy refusal says "busy, try again later" once,
// though it is both the server's text and ErrBusy.
func TestBusyToldOnce(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, busyHandler{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Call(ctx, path, Request{Command: CmdUpgrade})
	if !errors.Is(err, ErrBusy) || strings.Count(fmt.Sprint(err), ErrBusy.Error()) != 1 {
		t.Errorf("busy upgrade: %v, want ErrBusy told once", err)
	}
}

type busyHandler struct{ fakeHandler }

func (busyHandler) Upgrade(context.Context, *net.UnixConn) error {
	return fmt.Errorf("an upgrade is already in progress (%w)", ErrBusy)
}

// stuckHandler's loop never comes back: its pings last until their
// deadline, its reloads until the server closes.
type stuckHandler struct{ gatedHandler }

func (stuckHandler) Ping(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestHeartbeatsNeedTheLoop: a heartbeat says the supervisor's loop is
// alive. While it does not come back to a ping, a waiting reload hears
// nothing and ends at its silence limit; while it does, heartbeats keep the
// reload waiting past that limit until its answer.
func TestHeartbeatsNeedTheLoop(t *testing.T) {
	shortLimits(t)
	saved := heartbeatEvery
	heartbeatEvery = 20 * time.Millisecond
	t.Cleanup(func() { heartbeatEvery = saved })

	stuck := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(stuck, stuckHandler{gatedHandler{release: make(chan struct{})}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Call(ctx, stuck, Request{Command: CmdReload})
	if want := "silent for 1s while working on reload"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("reload on a stuck loop: %v, want %q", err, want)
	}

	release := make(chan struct{})
	alive := filepath.Join(shortDir(t), "c.sock")
	srv2, err := Listen(alive, gatedHandler{release: release}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	// A live loop's heartbeats come every 20 ms: the silence limit is
	// longer here only so that a busy machine's scheduling cannot make a
	// gap that long; the answer comes after 1.5 of it.
	limits.silence = 3 * time.Second
	time.AfterFunc(limits.silence*3/2, func() { close(release) })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	if resp, err := Call(ctx2, alive, Request{Command: CmdReload}); err != nil || resp.Rollout == nil || resp.Rollout.To != 2 {
		t.Errorf("reload on a live loop for 1.5 silence limits: %+v, %v", resp, err)
	}
}

// TestClientNeverResendsWorkedOn: a request baton said it works on is not
// sent again when the connection closes before the answer: baton may have
// acted on it. One that baton only greeted is sent again to the same pid
// (a re-exec's), and answered.
func TestClientNeverResendsWorkedOn(t *testing.T) {
	shortLimits(t)
	me := os.Getpid()
	serve := func(first func(c net.Conn)) (string, *atomic.Int32) {
		var n atomic.Int32
		return stranger(t, func(c net.Conn, _ string) {
			writeLine(c, Response{PID: me, Hello: &Hello{Protocol: 2}})
			if n.Add(1) == 1 {
				first(c)
				c.Close()
				return
			}
			writeLine(c, Response{PID: me, Rollout: &Rollout{From: 1, To: 9, State: "ok"}})
		}), &n
	}
	worked, n := serve(func(c net.Conn) { writeLine(c, Response{PID: me, Working: true}) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Call(ctx, worked, Request{Command: CmdReload})
	want := fmt.Sprintf("baton pid %d went away before answering reload", me)
	if err == nil || !strings.Contains(err.Error(), want) || n.Load() != 1 {
		t.Errorf("reload: %+v, %v after %d connections; want %q after 1", resp.Rollout, err, n.Load(), want)
	}

	greeted, n := serve(func(net.Conn) {})
	resp, err = Call(ctx, greeted, Request{Command: CmdReload})
	if err != nil || resp.Rollout == nil || resp.Rollout.To != 9 || n.Load() != 2 {
		t.Errorf("reload greeted, then answered on a second connection: %+v, %v after %d connections", resp.Rollout, err, n.Load())
	}
}

// TestClientResendsOnlyToTheSamePID: baton greeted the request and went
// away unanswered, and another process (a baton restarted after a crash)
// serves the socket: the request is not sent to it, and its answer is not
// taken for the first's. The second server is a python3 child, so it has
// its own pid; it answers every request as baton does.
func TestClientResendsOnlyToTheSamePID(t *testing.T) {
	// The client's own limits: it waits, greeted, while python3 starts.
	me := os.Getpid()
	greeted, gone := make(chan struct{}), make(chan struct{})
	path := stranger(t, func(c net.Conn, _ string) {
		writeLine(c, Response{PID: me, Hello: &Hello{Protocol: 2}})
		close(greeted)
		<-gone
		c.Close()
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := Call(ctx, path, Request{Command: CmdReload})
		if err == nil {
			err = fmt.Errorf("answered %+v", *resp.Rollout)
		}
		done <- err
	}()
	<-greeted
	script := `import json, os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.bind(path + ".new")
s.listen()
os.rename(path + ".new", path)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.makefile().readline()
    c.sendall((json.dumps({"pid": os.getpid(), "hello": {"protocol": 2}}) + "\n").encode())
    c.sendall((json.dumps({"pid": os.getpid(), "rollout": {"from": 1, "to": 9, "state": "ok"}}) + "\n").encode())
    c.close()`
	cmd := pythonServer(t, script, path)
	close(gone)
	err := <-done
	want := fmt.Sprintf("baton pid %d went away before answering; pid %d serves the socket now", me, cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("reload: %v, want %q", err, want)
	}
}
