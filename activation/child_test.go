package activation

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain doubles as the child process of the fd-passing tests, selected by
// ACTIVATION_TEST_CHILD.
func TestMain(m *testing.M) {
	switch os.Getenv("ACTIVATION_TEST_CHILD") {
	case "shim":
		// Re-exec this binary as the "report" child, the way baton's shim does.
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "ACTIVATION_TEST_CHILD=") {
				env = append(env, kv)
			}
		}
		err := Exec(os.Args[0], nil, append(env, "ACTIVATION_TEST_CHILD=report"))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	case "report":
		ls, err := FromEnv()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		for _, l := range ls {
			fl, _ := unix.FcntlInt(uintptr(l.FD()), unix.F_GETFL, 0)
			fd, _ := unix.FcntlInt(uintptr(l.FD()), unix.F_GETFD, 0)
			fmt.Printf("%s %s nonblock=%t cloexec=%t\n", l.Name, l.Addr(), fl&unix.O_NONBLOCK != 0, fd&unix.FD_CLOEXEC != 0)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dupFile gives os/exec its own copy of l's fd (same open file description).
func dupFile(t *testing.T, l *Listener) *os.File {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(l.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), l.Name)
	t.Cleanup(func() { f.Close() })
	return f
}

func isNonblock(t *testing.T, fd int) bool {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

func mustListen(t *testing.T, s string) *Listener {
	t.Helper()
	spec, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestListenTCPIsBlockingCloexecAndAccepts(t *testing.T) {
	l := mustListen(t, "web=127.0.0.1:0")
	if isNonblock(t, l.FD()) {
		t.Error("a socket baton opens must be in blocking mode, as systemd passes them")
	}
	fd, _ := unix.FcntlInt(uintptr(l.FD()), unix.F_GETFD, 0)
	if fd&unix.FD_CLOEXEC == 0 {
		t.Error("listener is not close-on-exec")
	}
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatalf("dial %s: %v", l.Addr(), err)
	}
	c.Close()
}

func TestListenErrors(t *testing.T) {
	taken := mustListen(t, "127.0.0.1:0")
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, nil, 0o600)
	live := filepath.Join(dir, "live.sock")
	ln, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tt := range []struct{ spec, want string }{
		{taken.Addr(), "address already in use"},
		{"unix:" + regular, "is not a socket"},
		{"unix:" + live, "in use by another process"},
		{"nosuchhost.invalid:80", "listen"},
	} {
		spec, err := ParseSpec(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Listen(spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Listen(%q) error = %v, want %q", tt.spec, err, tt.want)
		}
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the file behind, like a crashed server
	l := mustListen(t, "unix:"+path)
	if got := l.Addr(); got != "unix:"+path {
		t.Errorf("Addr() = %q", got)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestNewListenerRejectsNonSockets(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := NewListener(int(r.Fd()), "pipe"); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("NewListener(pipe) error = %v", err)
	}
	if _, err := NewListener(999, "gone"); err == nil || !strings.Contains(err.Error(), "fd 999 (gone): not an open fd") {
		t.Errorf("NewListener(999) error = %v", err)
	}
}

// TestShimPassesSocketsWithOwnPID runs a real child through Exec: it must
// see LISTEN_PID as its own pid, get the sockets in the mode they were given,
// and mark them close-on-exec once adopted.
func TestShimPassesSocketsWithOwnPID(t *testing.T) {
	web := mustListen(t, "web=127.0.0.1:0")
	admin := mustListen(t, "admin=127.0.0.1:0")
	// A non-blocking socket must stay so: the flag is shared with every holder.
	if err := unix.SetNonblock(admin.FD(), true); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = ChildEnv(append(os.Environ(), "ACTIVATION_TEST_CHILD=shim"), []string{web.Name, admin.Name})
	cmd.ExtraFiles = []*os.File{dupFile(t, web), dupFile(t, admin)}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := fmt.Sprintf("web %s nonblock=false cloexec=true\nadmin %s nonblock=true cloexec=true\n", web.Addr(), admin.Addr())
	if string(out) != want {
		t.Errorf("child reported\n%s\nwant\n%s", out, want)
	}
	if !isNonblock(t, admin.FD()) || isNonblock(t, web.FD()) {
		t.Error("blocking mode of the shared sockets changed")
	}
}

func TestWithoutShimTheChildRejectsTheSockets(t *testing.T) {
	web := mustListen(t, "web=127.0.0.1:0")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(ChildEnv(append(os.Environ(), "ACTIVATION_TEST_CHILD=report"), []string{web.Name}), "LISTEN_PID=1")
	cmd.ExtraFiles = []*os.File{dupFile(t, web)}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "LISTEN_PID is not this process") {
		t.Errorf("child reported %q", out)
	}
}
