package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Listener is a socket held as a raw fd, close-on-exec, in whatever blocking
// mode it was created or received in.
type Listener struct {
	Name string
	fd   int
}

// NewListener wraps fd, which must be a socket. It takes ownership of fd and
// marks it close-on-exec; it leaves O_NONBLOCK alone.
func NewListener(fd int, name string) (*Listener, error) {
	if _, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		switch {
		case errors.Is(err, unix.ENOTSOCK):
			return nil, fmt.Errorf("fd %d (%s): not a socket", fd, name)
		case errors.Is(err, unix.EBADF):
			return nil, fmt.Errorf("fd %d (%s): not an open fd", fd, name)
		}
		return nil, fmt.Errorf("fd %d (%s): %w", fd, name, err)
	}
	unix.CloseOnExec(fd)
	return &Listener{Name: name, fd: fd}, nil
}

// FromEnv returns the sockets passed to this process by socket activation,
// each checked to be a socket and marked close-on-exec. The caller should not
// pass the LISTEN_* variables on to its own children (see ChildEnv).
func FromEnv() ([]*Listener, error) {
	passed, err := Parse(os.Getenv, os.Getpid())
	if err != nil {
		return nil, err
	}
	ls := make([]*Listener, 0, len(passed))
	for _, p := range passed {
		l, err := NewListener(p.FD, p.Name)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// FD returns the listener's fd. It stays owned by the Listener.
func (l *Listener) FD() int { return l.fd }

// Addr returns the socket's local address as "127.0.0.1:8080", "[::]:443" or
// "unix:/run/app.sock"; "?" when it cannot be read.
func (l *Listener) Addr() string {
	sa, err := unix.Getsockname(l.fd)
	if err != nil {
		return "?"
	}
	return formatSockaddr(sa)
}

// Close closes the fd. It never shuts the socket down: other processes
// (systemd, workers) may hold the same socket.
func (l *Listener) Close() error {
	if l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
	return err
}

// Net hands the socket to the net package: it returns a net.Listener with
// its own copy of the fd and closes l's. Use it rather than wrapping FD() in
// an os.File: that File would close the fd again when the garbage collector
// finalizes it, by then perhaps a connection that reused the number, which
// then hangs its reader (seen here: a draining worker waited forever).
//
// net.FileListener sets O_NONBLOCK on the socket's open file description,
// which every process holding the socket shares.
func (l *Listener) Net() (net.Listener, error) {
	if l.fd < 0 {
		return nil, fmt.Errorf("socket %s: closed", l.Name)
	}
	f := os.NewFile(uintptr(l.fd), l.Name)
	l.fd = -1
	nl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", f.Name(), err)
	}
	return nl, nil
}

func formatSockaddr(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *unix.SockaddrUnix:
		if strings.HasPrefix(a.Name, "@") || (a.Name != "" && a.Name[0] == 0) {
			return "unix:@" + strings.TrimLeft(a.Name, "@\x00")
		}
		return "unix:" + a.Name
	}
	return "?"
}

// SocketState is what a listener's socket says of itself: whether it still
// listens (SO_ACCEPTCONN; a worker that calls shutdown() on its copy stops
// it for everyone, since all copies are one socket) and whether it is in
// non-blocking mode (O_NONBLOCK, which belongs to the open file description
// that systemd, baton and every worker share: Go, Node and asyncio servers
// set it on their copy), and, for TCP, its accept queue's length (the
// backlog of the last listen() on it, by anyone holding it; 0 when the
// kernel does not say, as for unix sockets).
type SocketState struct {
	Listening   bool
	NonBlocking bool
	Backlog     int
}

// State reads the socket's state.
func (l *Listener) State() (SocketState, error) {
	acc, err := unix.GetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return SocketState{}, fmt.Errorf("listener %s: SO_ACCEPTCONN: %w", l.Name, err)
	}
	fl, err := unix.FcntlInt(uintptr(l.fd), unix.F_GETFL, 0)
	if err != nil {
		return SocketState{}, fmt.Errorf("listener %s: F_GETFL: %w", l.Name, err)
	}
	st := SocketState{Listening: acc != 0, NonBlocking: fl&unix.O_NONBLOCK != 0}
	if st.Listening {
		// For a listening TCP socket the kernel reports its maximum accept
		// queue in tcpi_sacked (tcp_get_info); other sockets fail here.
		if info, err := unix.GetsockoptTCPInfo(l.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			st.Backlog = int(info.Sacked)
		}
	}
	return st, nil
}

// Relisten puts a socket that stopped listening back into the listening
// state. A TCP socket that was shut down is closed but keeps its address,
// so listen() makes it a listener again, for every holder of the socket (as
// HAProxy resumes a paused listener); a unix socket refuses connections for
// good after shutdown(), and the error says so.
//
// A TCP socket bound to port 0 loses its port when it is shut down, and
// listen() would pick another: that is refused (and the socket shut down
// again) rather than serve on an address nobody connects to.
func (l *Listener) Relisten() error {
	was := l.Addr()
	if err := unix.Listen(l.fd, backlog); err != nil {
		return fmt.Errorf("listener %s: listen again: %w", l.Name, err)
	}
	if now := l.Addr(); now != was {
		unix.Shutdown(l.fd, unix.SHUT_RDWR) // back to what it was: not listening
		return fmt.Errorf("listener %s: its address %s was released (port 0?); listen() would have made it %s", l.Name, was, now)
	}
	st, err := l.State()
	if err != nil {
		return err
	}
	if !st.Listening {
		return fmt.Errorf("listener %s: still not listening after listen()", l.Name)
	}
	return nil
}
