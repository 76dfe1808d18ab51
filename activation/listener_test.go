package activation

import (
	"net"
	"runtime"
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
