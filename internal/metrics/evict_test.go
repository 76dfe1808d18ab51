package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"golang.org/x/sys/unix"
)

// TestHeaderScan: the end of a request header is found at its empty line,
// however the bytes are split, with lines ending in CRLF or LF alone.
func TestHeaderScan(t *testing.T) {
	for _, req := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /healthz HTTP/1.1\nHost: x\n\n",
		"GET /healthz HTTP/1.0\r\n\r\n",
	} {
		for cut := range len(req) {
			var s headerScan
			first, second := s.feed([]byte(req[:cut])), s.feed([]byte(req[cut:]))
			if first || !second {
				t.Errorf("%q cut at %d: ended in the first part %v, in the second %v", req, cut, first, second)
			}
		}
	}
	for _, part := range []string{"GET /healthz HTTP/1.1\r\nHost: x\r\n", "GET /metrics HTTP/1.1\r\nX-Slow: \r", "GET / HTTP/1.1\r\nX: a\r\r\n"} {
		var s headerScan
		if s.feed([]byte(part)) {
			t.Errorf("%q: taken for a whole header", part)
		}
	}
}

// TestOwedAnswersNotEvicted: with every connection of the endpoint owed an
// answer (whole requests, waiting for a slow snapshot), connections beyond
// MaxConns wait for one to be answered: none of those owed is closed to
// make room, and the new ones are answered after.
func TestOwedAnswersNotEvicted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	srv := Serve(ln, func(ctx context.Context) (control.Status, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return control.Status{State: "ready", Slots: 1, Ready: 1}, nil
	})
	defer srv.Close()
	dial := func(send string) net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
		return c
	}
	var owed []net.Conn
	for range MaxConns {
		owed = append(owed, dial("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	}
	const more = 10
	var later []net.Conn
	for i := range more {
		send := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
		if i%2 == 0 {
			send = "GET /healthz HTTP/1.1\r\nX-Slow: " // would be evicted first, if anything were
		}
		later = append(later, dial(send))
	}
	// The endpoint has taken every connection it will take before an
	// answer: the owed ones, and one more waiting for room (an endpoint
	// that evicts by age took all and closed the oldest).
	fd := listenerFD(t, ln)
	for {
		// A listening socket's TCP_INFO has its accept queue's length in
		// tcpi_unacked (what ss shows as Recv-Q).
		if info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO); err != nil {
			t.Fatal(err)
		} else if int(info.Unacked) <= more-1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the endpoint never took the connections")
		case <-time.After(time.Millisecond):
		}
	}
	close(release)
	for i, c := range owed {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK") {
			t.Errorf("owed connection %d: %q, %v", i, b, err)
		}
	}
	for i, c := range later {
		if i%2 == 0 {
			continue // never finishes its request: evicted or timed out
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 200 OK") {
			t.Errorf("connection %d beyond the bound: %q, %v", i, b, err)
		}
	}
}

func listenerFD(t *testing.T, ln net.Listener) int {
	t.Helper()
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(fmt.Errorf("listener fd: %w", err))
	}
	return fd
}
