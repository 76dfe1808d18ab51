package listening

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// server starts python3 with a listening socket as fd 3 running script,
// and returns its pid and the socket's inode set.
func server(t *testing.T, script string) (int, Sockets) {
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
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // with the children it forked
		cmd.Wait()
	})
	return cmd.Process.Pid, socks
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
import socket, time
s = socket.socket(fileno=3)
time.sleep(1.5)
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
time.sleep(60)
'`
)

func TestBlockingAcceptAfterASleep(t *testing.T) {
	pid, socks := server(t, blocking)
	start := time.Now()
	if waitAccepting(pid, socks, time.Second) {
		t.Fatalf("counted as accepting %s after start, during its 1.5 s sleep", time.Since(start))
	}
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("never counted as accepting once in accept()")
	}
	if took := time.Since(start); took < 1500*time.Millisecond {
		t.Fatalf("accepting after %s, before its sleep ended", took)
	}
}

func TestEventLoop(t *testing.T) {
	pid, socks := server(t, asyncio)
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("an asyncio server never counted as accepting")
	}
}

func TestHolderIsNotAccepting(t *testing.T) {
	pid, socks := server(t, holder)
	time.Sleep(300 * time.Millisecond) // python is up and holds the socket
	if Accepting(pid, socks) {
		t.Fatal("a process that only holds the socket counted as accepting")
	}
}

// TestDescendant: a server that forks its workers (uwsgi, puma) counts when
// a worker accepts, not its master.
func TestDescendant(t *testing.T) {
	pid, socks := server(t, "("+blocking+") & wait")
	if !waitAccepting(pid, socks, 5*time.Second) {
		t.Fatal("a child in accept() did not count for its parent")
	}
}

func TestOtherSocketDoesNotCount(t *testing.T) {
	pid, _ := server(t, asyncio)
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	f, _ := other.(*net.TCPListener).File()
	defer f.Close()
	socks, _ := Inodes(int(f.Fd()))
	time.Sleep(500 * time.Millisecond)
	if Accepting(pid, socks) {
		t.Fatal("accepting on its own socket counted for another")
	}
}
