package notify

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Client sends notifications to one NOTIFY_SOCKET. Methods on a nil *Client
// do nothing and return nil, so code can notify unconditionally.
type Client struct {
	addr string
}

// sendTimeout bounds a send to a receiver whose queue is full: a wedged
// receiver must not wedge the sender.
const sendTimeout = 2e9 // ns

// FromEnv returns a Client for $NOTIFY_SOCKET. When it is unset the error
// matches os.ErrNotExist: the process is not running under a service manager.
func FromEnv() (*Client, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, fmt.Errorf("NOTIFY_SOCKET: %w", os.ErrNotExist)
	}
	return Open(addr)
}

// Open returns a Client for the socket at addr: an absolute path, or an
// abstract socket written "@name".
func Open(addr string) (*Client, error) {
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or @abstract name", addr)
	}
	if len(addr) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: longer than a unix socket address", addr)
	}
	return &Client{addr: addr}, nil
}

// Addr returns the socket address the client sends to.
func (c *Client) Addr() string {
	if c == nil {
		return ""
	}
	return c.addr
}

// Send sends state, such as "READY=1\nSTATUS=serving".
func (c *Client) Send(state string) error {
	return c.SendFDs(state)
}

// SendFDs sends state with fds attached (SCM_RIGHTS), as FDSTORE=1 needs.
// The receiver gets duplicates; the caller keeps its fds.
func (c *Client) SendFDs(state string, fds ...int) error {
	if c == nil {
		return nil
	}
	// A socket per message, as libsystemd does: systemd may re-create its
	// socket (daemon-reexec), which a long-lived connected socket would miss.
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("notify %s: socket: %w", c.addr, err)
	}
	defer unix.Close(s)
	tv := unix.NsecToTimeval(sendTimeout)
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return fmt.Errorf("notify %s: SO_SNDTIMEO: %w", c.addr, err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// x/sys/unix turns a leading '@' into the abstract namespace's NUL.
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: c.addr}, unix.MSG_NOSIGNAL); err != nil {
		if errors.Is(err, unix.EAGAIN) {
			err = errors.New("receiver's queue stayed full")
		}
		return fmt.Errorf("notify %s: %w", c.addr, err)
	}
	return nil
}
