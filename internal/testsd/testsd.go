// Package testsd is a stand-in systemd for process-level tests: it passes
// listening sockets with LISTEN_FDS/LISTEN_FDNAMES (and a LISTEN_PID that is
// the started process's own, through baton's exec shim), listens on the
// NOTIFY_SOCKET it gives, and records every datagram with its sender and fds.
// Tests wait on recorded messages, not on sleeps.
package testsd

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/rig"
	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

// Names of package rig, here too so that a test needs one import.
type (
	Bins        = rig.Bins
	SyncBuffer  = rig.SyncBuffer
	Load        = rig.Load
	Failure     = rig.Failure
	StatusError = rig.StatusError
)

var (
	Build       = rig.Build
	ModuleRoot  = rig.ModuleRoot
	ChildrenOf  = rig.ChildrenOf
	Children    = rig.Children
	ProcessGone = rig.ProcessGone
	Get         = rig.Get
	Fetch       = rig.Fetch
	StartLoad   = rig.StartLoad
)

// Main builds the binaries into a temporary directory, stores them in
// *bins, runs the tests and exits: a TestMain for process-level tests.
// With -short it builds nothing: every process test skips itself.
func Main(m *testing.M, bins *Bins) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "baton-test-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *bins, err = Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Datagram is one recorded notification.
type Datagram struct {
	Msg  notify.Message
	PID  int
	Fds  []*os.File
	When time.Time
}

// Systemd is one stand-in service manager.
type Systemd struct {
	// Dir is the working directory of the services it starts (as a unit's
	// WorkingDirectory=); empty: the test's.
	Dir  string
	t    testing.TB
	sock *notify.Socket
	mu   sync.Mutex
	msgs []Datagram
	wake chan struct{} // closed and replaced on every new datagram
}

// New starts a stand-in systemd listening on an abstract notify socket.
func New(t testing.TB) *Systemd {
	t.Helper()
	s, err := notify.Listen(fmt.Sprintf("@baton-testsd/%d/%s/%d", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	sd := &Systemd{t: t, sock: s, wake: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			d, err := s.Read()
			if err != nil {
				return
			}
			if d.Err != nil {
				t.Errorf("stand-in systemd got a malformed message from pid %d: %v", d.PID, d.Err)
			}
			sd.mu.Lock()
			sd.msgs = append(sd.msgs, Datagram{Msg: d.Msg, PID: d.PID, Fds: d.Files, When: time.Now()})
			close(sd.wake)
			sd.wake = make(chan struct{})
			sd.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		<-done
		for _, d := range sd.Messages() {
			for _, f := range d.Fds {
				f.Close()
			}
		}
	})
	return sd
}

// Addr is the NOTIFY_SOCKET to give a service.
func (sd *Systemd) Addr() string { return sd.sock.Addr() }

// Messages returns what was received so far.
func (sd *Systemd) Messages() []Datagram {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return append([]Datagram(nil), sd.msgs...)
}

// Sent matches a datagram that carries key=value, for WaitFor and WaitFrom.
func Sent(key, value string) func(Datagram) bool {
	return func(d Datagram) bool { return d.Msg.Is(key, value) }
}

// WaitFor blocks until a received datagram satisfies match, and returns it.
func (sd *Systemd) WaitFor(ctx context.Context, what string, match func(Datagram) bool) Datagram {
	sd.t.Helper()
	d, _ := sd.WaitFrom(ctx, 0, what, match)
	return d
}

// Count is the number of datagrams received so far: a mark for WaitFrom.
func (sd *Systemd) Count() int {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return len(sd.msgs)
}

// WaitFrom is WaitFor for datagrams from the from'th on; it also returns
// the index of the one found.
func (sd *Systemd) WaitFrom(ctx context.Context, from int, what string, match func(Datagram) bool) (Datagram, int) {
	sd.t.Helper()
	seen := from
	for {
		sd.mu.Lock()
		msgs, wake := sd.msgs, sd.wake
		sd.mu.Unlock()
		for ; seen < len(msgs); seen++ {
			if match(msgs[seen]) {
				return msgs[seen], seen
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			sd.t.Fatalf("stand-in systemd: no %s: %v; got %s", what, ctx.Err(), sd.dump())
		}
	}
}

func (sd *Systemd) dump() string {
	var b strings.Builder
	for _, d := range sd.Messages() {
		fmt.Fprintf(&b, "\n  pid %d: %v", d.PID, d.Msg)
	}
	return b.String()
}

// Service is a process started by the stand-in systemd.
type Service struct {
	Cmd    *exec.Cmd
	Output *SyncBuffer
	exited chan struct{}
	err    error
}

// Start runs baton (bins.Baton) with args, passing listeners as systemd
// would: fds 3.., LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID (set through
// baton's own exec shim, as only the child knows its pid), NOTIFY_SOCKET.
// extraEnv is added to the environment.
func (sd *Systemd) Start(bins Bins, listeners []*activation.Listener, extraEnv []string, args ...string) *Service {
	sd.t.Helper()
	fds := make([]NamedFD, len(listeners))
	for i, l := range listeners {
		fds[i] = NamedFD{Name: l.Name, FD: l.FD()}
	}
	return sd.StartFDs(bins, fds, extraEnv, args...)
}

// NamedFD is an fd passed in LISTEN_FDS under a name.
type NamedFD struct {
	Name string
	FD   int
}

// Stored is the FD store as the service's messages left it: each
// FDSTORE=1 adds its fds under FDNAME, each FDSTOREREMOVE=1 drops the
// name's, in the order they came. The fds stay the stand-in's.
func (sd *Systemd) Stored() []NamedFD {
	var store []NamedFD
	for _, d := range sd.Messages() {
		name := d.Msg["FDNAME"]
		switch {
		case d.Msg.Is("FDSTORE", "1"):
			for _, f := range d.Fds {
				store = append(store, NamedFD{Name: name, FD: int(f.Fd())})
			}
		case d.Msg.Is("FDSTOREREMOVE", "1"):
			store = slices.DeleteFunc(store, func(n NamedFD) bool { return n.Name == name })
		}
	}
	return store
}

// StartFDs is Start with any fds: sockets, or what the FD store holds.
func (sd *Systemd) StartFDs(bins Bins, fds []NamedFD, extraEnv []string, args ...string) *Service {
	sd.t.Helper()
	names := make([]string, len(fds))
	var files []*os.File
	for i, nf := range fds {
		names[i] = nf.Name
		fd, err := unix.FcntlInt(uintptr(nf.FD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			sd.t.Fatal(err)
		}
		files = append(files, os.NewFile(uintptr(fd), nf.Name))
	}
	env := activation.ChildEnv(os.Environ(), names)
	env = append(env, "NOTIFY_SOCKET="+sd.Addr())
	env = append(env, extraEnv...)
	return start(sd.t, bins.Baton, append([]string{"shim", bins.Baton}, args...), env, files, sd.Dir)
}

// StartPlain runs baton without any systemd: no sockets, no NOTIFY_SOCKET.
func StartPlain(t testing.TB, bins Bins, args ...string) *Service {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "LISTEN_") {
			env = append(env, kv)
		}
	}
	return start(t, bins.Baton, args, env, nil, "")
}

func start(t testing.TB, bin string, args, env []string, files []*os.File, dir string) *Service {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.ExtraFiles = files
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	svc := &Service{Cmd: cmd, Output: out, exited: make(chan struct{})}
	go func() {
		svc.err = cmd.Wait()
		close(svc.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-svc.exited:
		default:
			cmd.Process.Kill()
			<-svc.exited
		}
		if t.Failed() {
			t.Logf("baton output:\n%s", out.String())
		}
	})
	return svc
}

// WaitOutput waits until the service's output holds text. Output arrives
// through a pipe, after the events that caused it.
func (s *Service) WaitOutput(ctx context.Context, t testing.TB, text string) {
	t.Helper()
	s.WaitOutputN(ctx, t, text, 1)
}

// WaitOutputN waits until the service's output holds text n times.
func (s *Service) WaitOutputN(ctx context.Context, t testing.TB, text string, n int) {
	t.Helper()
	for strings.Count(s.Output.String(), text) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("%q %d times in the output, want %d:\n%s", text, strings.Count(s.Output.String(), text), n, s.Output.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// PID is the service's main pid.
func (s *Service) PID() int { return s.Cmd.Process.Pid }

// Signal sends sig to the service's main process.
func (s *Service) Signal(t testing.TB, sig unix.Signal) {
	t.Helper()
	if err := s.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the service to exit and returns its exit code.
func (s *Service) Wait(ctx context.Context, t testing.TB) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-ctx.Done():
		t.Fatalf("baton did not exit: %v\n%s", ctx.Err(), s.Output.String())
	}
	return s.Cmd.ProcessState.ExitCode()
}

// Exited is closed when the service has exited.
func (s *Service) Exited() <-chan struct{} { return s.exited }

// Status asks baton's control socket for its status.
func Status(ctx context.Context, t testing.TB, path string) control.Status {
	t.Helper()
	resp, err := control.Call(ctx, path, control.Request{Command: control.CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	return *resp.Status
}

// WaitStatus asks for the status until match accepts it. The control socket
// has no push channel, so this polls, at 10 ms.
func WaitStatus(ctx context.Context, t testing.TB, path string, what string, match func(control.Status) bool) control.Status {
	t.Helper()
	var last control.Status
	var lastErr error
	for {
		resp, err := control.Call(ctx, path, control.Request{Command: control.CmdStatus})
		if err == nil {
			last = *resp.Status
			if match(last) {
				return last
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			js, _ := json.Marshal(last)
			t.Fatalf("status never showed %s: %v (last error %v), last status %s", what, ctx.Err(), lastErr, js)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// AcceptQueue is how many connections wait in the accept queue of the
// listening TCP socket fd: the kernel's sk_ack_backlog, which TCP_INFO
// reports as tcpi_unacked for a socket in the LISTEN state (what ss shows
// as Recv-Q).
func AcceptQueue(fd int) (int, error) {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("TCP_INFO of fd %d: %w", fd, err)
	}
	return int(info.Unacked), nil
}

// Timeout is a context that ends after d or with the test.
func Timeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitPIDs waits until the file at path lists n pids (one per word, as
// workers that daemonize append them) and returns them.
func WaitPIDs(ctx context.Context, t testing.TB, path string, n int) []int {
	t.Helper()
	for {
		b, _ := os.ReadFile(path) // absent until the first pid is written
		var pids []int
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		if len(pids) >= n {
			return pids
		}
		if ctx.Err() != nil {
			t.Fatalf("%s lists %d pids, want %d", path, len(pids), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Point moves root/current to releases/id atomically, as `ln -sfn` and
// Capistrano do: a new link, current.new, renamed over the old one.
func Point(root, id string) error {
	tmp := filepath.Join(root, "current.new")
	os.Remove(tmp) // absent unless an earlier flip failed half-way
	if err := os.Symlink(filepath.Join("releases", id), tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(root, "current"))
}

// ShortDir is a temporary directory with a short path, removed with the
// test: unix socket paths hold at most 108 bytes, and t.TempDir's are long.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Listener opens a listening socket for spec ("web=127.0.0.1:0"), closed
// with the test.
func Listener(t testing.TB, spec string) *activation.Listener {
	t.Helper()
	s, err := activation.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := activation.Listen(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
