package fds

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDupConn: the copy is another fd of the same socket, not
// close-on-exec, and the original keeps its non-blocking mode.
func TestDupConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, err := DupConn(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Errorf("the copy's fd flags %#x, %v: want it not close-on-exec", flags, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil || sa.(*unix.SockaddrInet4).Port != ln.Addr().(*net.TCPAddr).Port {
		t.Errorf("the copy names %v, %v; want %s", sa, err, ln.Addr())
	}
	raw, _ := ln.(*net.TCPListener).SyscallConn()
	raw.Control(func(orig uintptr) {
		if fl, _ := unix.FcntlInt(orig, unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
			t.Error("the original was switched to blocking mode")
		}
	})
	if _, err := DupConn(os.NewFile(^uintptr(0), "none")); err == nil {
		t.Error("a closed file was duplicated")
	}
}
