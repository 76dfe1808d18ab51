package listening

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// server starts python3 with a listening socket as fd 3 running script,
// its stdout a pipe, and returns its pid, the socket's inode set and the
// pipe's read end. The scripts print a line before each step, so a test
// knows where the server is by what it said (read with says) and whether
// it said more since (saidMore).
func server(t *testing.T, script string) (int, Sockets, *os.File) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	socks, err := Inodes(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout = w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // with the children it forked
		cmd.Wait()
		r.Close()
	})
	return cmd.Process.Pid, socks, r
}

// says reads the server's next line and checks it is want.
func says(t *testing.T, out *os.File, want string) {
	t.Helper()
	if err := out.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// One byte at a time: nothing is read past the line, so saidMore
	// sees the next one.
	var line strings.Builder
	b := make([]byte, 1)
	for {
		if _, err := out.Read(b); err != nil {
			t.Fatalf("server said %q, then: %v; want %q", line.String(), err, want)
		}
		if b[0] == '\n' {
			break
		}
		line.WriteByte(b[0])
	}
	if line.String() != want {
		t.Fatalf("server said %q, want %q", line.String(), want)
	}
}

// saidMore reports whether the server wrote output not yet read (FIONREAD
// on the pipe).
func saidMore(t *testing.T, out *os.File) bool {
	t.Helper()
	raw, err := out.SyscallConn() // not Fd(): it would make reads blocking, past their deadline
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if cerr := raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); cerr != nil { // FIONREAD
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// waitAccepting polls as baton does until Accepting, or d passes.
func waitAccepting(pid int, socks Sockets, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if Accepting(pid, socks) {
			return true
		}
	}
	return false
}

const (
	// blocking: takes the socket, sleeps, then accepts in a blocking loop.
	blocking = `exec python3 -c '
import socket, sys, time
s = socket.socket(fileno=3)
print("sleeping", flush=True)
time.sleep(0.5)
print("accepting", flush=True)
while True:
    c, _ = s.accept()
    c.close()
'`
	// asyncio: an event loop (epoll) serving the socket.
	asyncio = `exec python3 -c '
import asyncio, socket
async def main():
    s = socket.socket(fileno=3)
    server = await asyncio.start_server(lambda r, w: w.close(), sock=s)
    await server.serve_forever()
asyncio.run(main())
'`
	// holder: has the socket, never accepts.
	holder = `exec python3 -c '
import socket, time
s = socket.socket(fileno=3)
print("holding", flush=True)
time.sleep(60)
'`
)

// TestBlockingAcceptAfterASleep: a server that sleeps before its accept
// loop does not count while it sleeps, and counts once in accept(). It
// says "accepting" before it calls accept(), so a look that finds it
// accepting while nothing more was said is a false positive.
func TestBlockingAcceptAfterASleep(t *testing.T) {
	pid, socks, out := server(t, blocking)
	says(t, out, "sleeping")
	looks := 0
	for !saidMore(t, out) {
		if Accepting(pid, socks) && !saidMore(t, out) {
			t.Fatalf("counted as accepting during its sleep, at look %d", looks+1)
		}
		looks++
		time.Sleep(10 * time.Millisecond)
	}
	if looks == 0 {
		t.Fatal("no look during the server's sleep: nothing was tested")
	}
	says(t, out, "accepting")
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("never counted as accepting once in accept()")
	}
	t.Logf("not accepting at %d looks during the sleep, then accepting", looks)
}

func TestEventLoop(t *testing.T) {
	pid, socks, _ := server(t, asyncio)
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("an asyncio server never counted as accepting")
	}
}

// TestHolderIsNotAccepting: once the server said it holds the socket (and
// from then on only sleeps), it does not count.
func TestHolderIsNotAccepting(t *testing.T) {
	pid, socks, out := server(t, holder)
	says(t, out, "holding")
	if Accepting(pid, socks) {
		t.Fatal("a process that only holds the socket counted as accepting")
	}
}

// TestDescendant: a server that forks its workers (uwsgi, puma) counts when
// a worker accepts, not its master.
func TestDescendant(t *testing.T) {
	pid, socks, out := server(t, "("+blocking+") & wait")
	says(t, out, "sleeping")
	says(t, out, "accepting")
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("a child in accept() did not count for its parent")
	}
}

// TestOtherSocketDoesNotCount: a server that counts as accepting on its
// own socket does not count for another.
func TestOtherSocketDoesNotCount(t *testing.T) {
	pid, own, _ := server(t, asyncio)
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f, err := other.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	socks, err := Inodes(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if !waitAccepting(pid, own, 5*time.Second) {
		t.Fatal("the server never counted as accepting on its own socket")
	}
	if Accepting(pid, socks) {
		t.Fatal("accepting on its own socket counted for another")
	}
}
