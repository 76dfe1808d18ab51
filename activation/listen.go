package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// backlog is the listen(2) backlog: the kernel caps it at
// net.core.somaxconn. A deep queue is what keeps connections waiting, not
// refused, while no worker accepts (between a crash and the restart).
const backlog = 4096

// Spec is a parsed "[NAME=]ADDR" listen address.
type Spec struct {
	Name    string // the fd name given to workers in LISTEN_FDNAMES
	Network string // "tcp" or "unix"
	Address string // "127.0.0.1:8080", "[::]:443", "/run/app.sock"
}

// String returns the spec as it would be written on the command line.
func (s Spec) String() string {
	addr := s.Address
	if s.Network == "unix" {
		addr = "unix:" + addr
	}
	return s.Name + "=" + addr
}

// ParseSpec parses "[NAME=]ADDR" where ADDR is "HOST:PORT", "[IPv6]:PORT",
// ":PORT" or "unix:/path". Without a name the address itself, with ':'
// turned into '_', names the socket, so that the name stays tied to the
// address when flags are reordered.
func ParseSpec(s string) (Spec, error) {
	name, addr := "", s
	if i := strings.IndexByte(s, '='); i >= 0 && !strings.ContainsAny(s[:i], ":/[") {
		name, addr = s[:i], s[i+1:]
		if err := CheckName(name); err != nil {
			return Spec{}, fmt.Errorf("listen %q: %w", s, err)
		}
	}
	var spec Spec
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if path == "" || path[0] != '/' {
			return Spec{}, fmt.Errorf("listen %q: a unix socket needs an absolute path", s)
		}
		if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
			return Spec{}, fmt.Errorf("listen %q: unix socket path longer than %d bytes", s, len(unix.RawSockaddrUnix{}.Path)-1)
		}
		spec = Spec{Network: "unix", Address: path}
	} else {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return Spec{}, fmt.Errorf("listen %q: want HOST:PORT or unix:/PATH: %w", s, err)
		}
		if port == "" {
			return Spec{}, fmt.Errorf("listen %q: missing port", s)
		}
		spec = Spec{Network: "tcp", Address: net.JoinHostPort(host, port)}
	}
	if name == "" {
		name = strings.ReplaceAll(addr, ":", "_")
		if err := CheckName(name); err != nil {
			return Spec{}, fmt.Errorf("listen %q: give it a name (NAME=ADDR): %w", s, err)
		}
	}
	spec.Name = name
	return spec, nil
}

// Listen opens a listening socket for spec, close-on-exec and in blocking
// mode, as systemd would have passed it.
func Listen(spec Spec) (*Listener, error) {
	fd, err := listen(spec)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	return &Listener{Name: spec.Name, fd: fd}, nil
}

func listen(spec Spec) (int, error) {
	var (
		domain int
		sa     unix.Sockaddr
	)
	switch spec.Network {
	case "unix":
		if err := removeStaleSocket(spec.Address); err != nil {
			return -1, err
		}
		domain, sa = unix.AF_UNIX, &unix.SockaddrUnix{Name: spec.Address}
	case "tcp":
		addr, err := net.ResolveTCPAddr("tcp", spec.Address)
		if err != nil {
			return -1, err
		}
		domain, sa = tcpSockaddr(addr)
	default:
		return -1, fmt.Errorf("unknown network %q", spec.Network)
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if domain != unix.AF_UNIX {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen: %w", err)
	}
	return fd, nil
}

// tcpSockaddr picks the address family: an IPv4 address binds AF_INET; an
// IPv6 address, or no host at all, binds AF_INET6, which also takes IPv4
// unless net.ipv6.bindv6only says otherwise (systemd's BindIPv6Only=default).
func tcpSockaddr(addr *net.TCPAddr) (int, unix.Sockaddr) {
	if ip4 := addr.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: addr.Port}
		copy(sa.Addr[:], ip4)
		return unix.AF_INET, sa
	}
	sa := &unix.SockaddrInet6{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To16()) // nil IP: the zero address, "::"
	return unix.AF_INET6, sa
}

// removeStaleSocket removes a unix socket file that nothing listens on any
// more (left by a crash). A live socket, or a file that is not a socket, is an
// error: binding over either would steal or destroy something.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	return os.Remove(path)
}
