package activation

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNetClosesItsFDOnce: Net gives the socket to the net package, and the
// fd number it gave up stays closed for good: a descriptor that reuses the
// number is not closed behind its owner's back by a finalizer.
func TestNetClosesItsFDOnce(t *testing.T) {
	spec, err := ParseSpec("t=127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	addr, fd := l.Addr(), l.FD()
	nl, err := l.Net()
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if l.FD() != -1 {
		t.Errorf("FD() = %d after Net, want -1", l.FD())
	}
	if _, err := l.Net(); err == nil {
		t.Error("a second Net succeeded")
	}
	// The lowest free number is the one Net gave up: a pipe takes it.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if p[0] != fd && p[1] != fd {
		t.Fatalf("pipe fds %v do not reuse %d", p, fd)
	}
	for range 3 {
		runtime.GC()
	}
	for _, f := range p {
		if _, err := unix.FcntlInt(uintptr(f), unix.F_GETFD, 0); err != nil {
			t.Errorf("fd %d, which reused the listener's number, was closed: %v", f, err)
		}
	}
	// And the net.Listener serves.
	go func() {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
		}
	}()
	c, err := nl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestStateBacklog: a TCP listener reports its accept queue's length, which
// a worker's own listen() on its copy changes for everyone (hypercorn calls
// listen(100) on the socket it is given).
func TestStateBacklog(t *testing.T) {
	spec, _ := ParseSpec("web=127.0.0.1:0")
	l, err := Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	somaxconn := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		somaxconn, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	st, err := l.State()
	if err != nil {
		t.Fatal(err)
	}
	if want := min(backlog, somaxconn); st.Backlog != want {
		t.Fatalf("backlog %d, want %d", st.Backlog, want)
	}
	if err := unix.Listen(l.FD(), 100); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.State(); st.Backlog != 100 {
		t.Fatalf("backlog %d after listen(100) on the socket, want 100", st.Backlog)
	}
	uspec, _ := ParseSpec("unix:" + t.TempDir() + "/s.sock")
	u, err := Listen(uspec)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if st, _ := u.State(); st.Backlog != 0 || !st.Listening {
		t.Fatalf("unix listener state %+v, want listening with backlog 0 (unknown)", st)
	}
}
