package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fakeHandler struct{ st Status }

func (f fakeHandler) Status(context.Context) (Status, error) { return f.st, nil }

func (f fakeHandler) AwaitReload(ctx context.Context) (Rollout, error) { return f.Reload(ctx) }

func (f fakeHandler) Upgrade(context.Context, *net.UnixConn) error {
	return errors.New("handoff protocol 2 differs")
}

func (f fakeHandler) Scale(_ context.Context, n int) (Rollout, error) {
	return Rollout{From: 1, To: 1, State: "ok", Workers: n}, nil
}

func (f fakeHandler) Rollback(context.Context) (Rollout, error) {
	return Rollout{Kind: "rollback", From: 2, To: 3, RollbackOf: 1, State: "ok"}, nil
}

func (f fakeHandler) Recycle(_ context.Context, slot int, _ bool) (Rollout, error) {
	return Rollout{Kind: "recycle", Reason: RecycleManual, From: 1, To: 1, State: "ok", Replaced: []Replacement{{Slot: slot, PID: 10, Successor: 11}}}, nil
}

func (f fakeHandler) Stop(context.Context) (Stopping, error) {
	return Stopping{PID: os.Getpid(), Doing: "2 workers drain"}, nil
}

func (f fakeHandler) Ping(context.Context) error { return nil }

func (f fakeHandler) Reload(context.Context) (Rollout, error) {
	return Rollout{From: 1, To: 2, State: "failed"}, errors.New("worker 0 exited")
}

func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		in, wantErr string
	}{
		{in: `{"command":"status"}`},
		{in: `{"command":"status","protocol":2}`},
		{in: `{"command":"status","protocol":3}`}, // a newer client's: answered as protocol 2
		{in: `{"command":"status","protocol":-1}`, wantErr: "protocol -1"},
		{in: `{"command":""}`, wantErr: "no command"},
		{in: `{"command":"status","x":1}`, wantErr: "unknown field"},
		{in: `{"command":"status"} {}`, wantErr: "trailing data"},
		{in: `not json`, wantErr: "control request"},
	}
	for _, tt := range tests {
		_, err := ParseRequest([]byte(tt.in))
		if (err != nil) != (tt.wantErr != "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseRequest(%q) error = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"command":"status"}`))
	f.Add([]byte(`{"command":"reload"}` + "\n"))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err == nil && r.Command == "" {
			t.Fatal("request without a command accepted")
		}
	})
}

func TestServerStatusRoundTripAndMode(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, fakeHandler{Status{PID: 42, Generation: 7}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := Call(ctx, path, Request{Command: CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status.PID != 42 || resp.Status.Generation != 7 {
		t.Errorf("status = %+v", resp.Status)
	}
	resp, err = Call(ctx, path, Request{Command: CmdReload})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "worker 0 exited") || resp.Rollout == nil || resp.Rollout.To != 2 {
		t.Errorf("failed reload: %+v, %v", resp, err)
	}
	if _, err := Call(ctx, path, Request{Command: CmdUpgrade}); err == nil || !strings.Contains(err.Error(), "handoff protocol 2 differs") {
		t.Errorf("refused upgrade: %v", err)
	}
	if _, err := Call(ctx, path, Request{Command: "dance"}); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `unknown command "dance"`) {
		t.Errorf("unknown command: %v", err)
	}
	// A second server on the same path is refused while the first lives.
	if _, err := Listen(path, fakeHandler{}, nil); err == nil || !strings.Contains(err.Error(), "served by another process") {
		t.Errorf("second Listen: %v", err)
	}
}

// TestStopWaitsForExit: Stop passes on baton's answer and then waits for
// its process to exit. The server here is this test's own process, which
// does not exit: Stop must still be waiting when its context ends.
func TestStopWaitsForExit(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, fakeHandler{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var told *Stopping
	err = Stop(ctx, path, func(st Stopping) { told = &st })
	if told == nil || told.PID != os.Getpid() || told.Doing != "2 workers drain" {
		t.Errorf("told %+v, want this process's pid and what the handler said", told)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Stop returned %v while the server's process lives, want it waiting until the deadline", err)
	}
}

// TestStopWhenNothingRuns: a stop finds no baton when the socket is gone
// (a clean exit removes it) or nobody listens on it (a killed baton's).
func TestStopWhenNothingRuns(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	for _, path := range []string{filepath.Join(dir, "gone.sock"), stale} {
		err := Stop(context.Background(), path, func(st Stopping) { t.Errorf("told %+v by nobody", st) })
		if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
			t.Errorf("Stop(%s) = %v, want ErrNotRunning naming the path", path, err)
		}
	}
}

func TestServerReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	srv, err := Listen(path, fakeHandler{}, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	srv.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
}

// TestPeerCredentialsChecked connects as another uid (nobody), from a
// python3 child; switching uid needs root.
func TestPeerCredentialsChecked(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another uid")
	}
	dir := shortDir(t)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "c.sock")
	srv, err := Listen(path, fakeHandler{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// Open the file mode for this test only, so that the peer check, not
	// the mode, is what refuses.
	os.Chmod(path, 0o666)
	script := `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b'{"command":"status"}\n')
print(s.recv(4096).decode())`
	// Debian's python3: a python under /root is not executable by nobody.
	cmd := exec.Command("/usr/bin/python3", "-c", script, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "permission denied for uid 65534") {
		t.Errorf("a foreign uid got %q", out)
	}
}

func TestPaths(t *testing.T) {
	env := func(m map[string]string, uid int) Env {
		return Env{Getenv: func(k string) string { return m[k] }, UID: uid}
	}
	tests := []struct {
		env  Env
		want string
	}{
		{env(map[string]string{"RUNTIME_DIRECTORY": "/run/myapp:/run/other"}, 0), "/run/myapp/control.sock"},
		{env(nil, 0), "/run/baton/myapp.sock"},
		{env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000), "/run/user/1000/baton/myapp.sock"},
	}
	for _, tt := range tests {
		if got := DefaultPath(tt.env, "myapp"); got != tt.want {
			t.Errorf("DefaultPath = %q, want %q", got, tt.want)
		}
	}
	for cg, want := range map[string]string{
		"0::/system.slice/myapp.service\n":                   "myapp",
		"12:pids:/x\n1:name=systemd:/system.slice/a.service": "a",
		"0::/user.slice/user-0.slice/session-1.scope\n":      "example-worker",
		"": "example-worker",
	} {
		if got := ServiceName(cg, "/usr/bin/example-worker"); got != want {
			t.Errorf("ServiceName(%q) = %q, want %q", cg, got, want)
		}
	}
}

func TestFind(t *testing.T) {
	dir := shortDir(t)
	e := Env{Getenv: func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return dir
		}
		return ""
	}, UID: 1000}
	if _, err := Find(e); err == nil || !strings.Contains(err.Error(), "no control socket") {
		t.Errorf("Find with none: %v", err)
	}
	os.MkdirAll(filepath.Join(dir, "baton"), 0o700)
	os.WriteFile(filepath.Join(dir, "baton", "a.sock"), nil, 0o600)
	if got, err := Find(e); err != nil || got != filepath.Join(dir, "baton", "a.sock") {
		t.Errorf("Find with one = %q, %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, "baton", "b.sock"), nil, 0o600)
	if _, err := Find(e); err == nil || !strings.Contains(err.Error(), "choose one with --control") {
		t.Errorf("Find with two: %v", err)
	}
	// One live among stale ones (left by a kill -9) is the one.
	live := filepath.Join(dir, "baton", "c.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got, err := Find(e); err != nil || got != live {
		t.Errorf("Find with one live among three = %q, %v", got, err)
	}
}

// TestServerLeavesNoGoroutine: Close ends the accept loop and every
// connection's goroutine, including one blocked waiting for a request and
// one blocked in a handler.
func TestServerLeavesNoGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, blockingHandler{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("unix", path) // never sends its request
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy := make(chan error, 1)
	go func() { _, err := Call(context.Background(), path, Request{Command: CmdReload}); busy <- err }()
	if _, err := Call(context.Background(), path, Request{Command: CmdStatus}); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := <-busy; err == nil {
		t.Error("a reload blocked in its handler got an answer after Close")
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blockingHandler's reloads wait for their context: Close cancels it.
type blockingHandler struct{ fakeHandler }

func (blockingHandler) Reload(ctx context.Context) (Rollout, error) {
	<-ctx.Done()
	return Rollout{}, ctx.Err()
}

type otherPIDHandler struct{ fakeHandler }

func (otherPIDHandler) Stop(context.Context) (Stopping, error) {
	return Stopping{PID: os.Getpid() + 1, Doing: "2 workers drain"}, nil
}

// TestStopAnsweredByAnother: an answer from another pid than the socket's
// server is refused: the pidfd Stop waits on would name another process.
func TestStopAnsweredByAnother(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	srv, err := Listen(path, otherPIDHandler{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	err = Stop(context.Background(), path, func(st Stopping) { t.Errorf("told %+v", st) })
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("served by pid %d, answered by pid %d", os.Getpid(), os.Getpid()+1)) {
		t.Errorf("Stop = %v, want the two pids named", err)
	}
}

// TestStopReturnsWhenBatonDies: baton is killed (kill -9) while baton stop
// waits for its exit. The wait ends: the process is gone, which is what
// ExecStop= waits for; it does not hang until its deadline. The server is
// a python3 child that answers the stop as baton does (protocol 2) and
// then does nothing.
func TestStopReturnsWhenBatonDies(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	script := `import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
c, _ = s.accept()
c.makefile().readline()
c.sendall((json.dumps({"pid": os.getpid(), "hello": {"protocol": 2}}) + "\n").encode())
c.sendall((json.dumps({"pid": os.getpid(), "stopping": {"pid": os.getpid(), "doing": "2 workers drain"}}) + "\n").encode())
time.sleep(600)`
	cmd := pythonServer(t, script, path)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Stop(ctx, path, func(st Stopping) {
			if st.PID != cmd.Process.Pid {
				t.Errorf("told %+v, want pid %d", st, cmd.Process.Pid)
			}
			cmd.Process.Kill() // the crash, while Stop waits for the exit
		})
	}()
	if err := <-done; err != nil {
		t.Errorf("Stop = %v after the server was killed, want nil (it has exited)", err)
	}
}

// pythonServer runs script, a python3 server of the control path that
// prints "ready" once it listens, with path as its argument: a process of
// its own, so with a pid of its own. It is killed when the test ends.
func pythonServer(t *testing.T, script, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", "-c", script, path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("python3 server: %q, %v", line, err)
	}
	return cmd
}
