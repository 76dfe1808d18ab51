package notify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Datagram is one notification as received, with who sent it.
type Datagram struct {
	Msg Message
	// Err is set when the datagram was malformed in part (see Parse) or
	// truncated; Msg then holds what could be read.
	Err error
	// PID, UID and GID are the sender's credentials as the kernel vouches
	// for them; PID is 0 if they were missing.
	//
	// SCM_CREDENTIALS carries what the sender claims, checked by the kernel
	// only for unprivileged senders: a process with CAP_SYS_ADMIN (a worker,
	// or a worker's child, running as root) may name any pid. Where the
	// kernel offers SCM_PIDFD (Linux 6.5), the receiver also gets a pidfd,
	// and PID is read from it (PIDVerified): it names the process as it was
	// when the message was sent, so a pid reused since cannot pass for it.
	// It does not undo a forged claim: the kernel makes that pidfd from the
	// pid the sender named (seen here on Linux 6.18). Workers that must not
	// speak for others run unprivileged.
	PID, UID, GID int
	PIDVerified   bool
	// Files are fds sent with the message, close-on-exec. The receiver owns
	// them and must close them.
	Files []*os.File
}

// Socket is a notification socket that a service manager gives a child as
// its NOTIFY_SOCKET.
type Socket struct {
	conn *net.UnixConn
	addr string
}

// Listen creates a notification socket at addr: a path, or "@name" for an
// abstract socket. Prefer paths when the socket is for other programs:
// systemd's own NOTIFY_SOCKET is one, and some libraries cannot address an
// abstract socket (Node's unix-dgram copies the address as a C string).
func Listen(addr string) (*Socket, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		// Older kernels lack it; the credentials alone then name the sender.
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSPIDFD, 1)
	}); err != nil || sockErr != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", addr, errors.Join(err, sockErr))
	}
	return &Socket{conn: conn, addr: addr}, nil
}

// Addr returns the address to put in a child's NOTIFY_SOCKET.
func (s *Socket) Addr() string { return s.addr }

// Close closes the socket, and removes its file for a path socket; a
// blocked Read returns net.ErrClosed.
func (s *Socket) Close() error {
	err := s.conn.Close()
	if !strings.HasPrefix(s.addr, "@") {
		os.Remove(s.addr) // gone already is fine
	}
	return err
}

// oobSize holds the credentials, the sender's pidfd and up to 253 fds
// (SCM_MAX_FD).
var oobSize = unix.CmsgSpace(unix.SizeofUcred) + unix.CmsgSpace(4) + unix.CmsgSpace(4*253)

// Read blocks for the next datagram. Its error is the socket's (net.ErrClosed
// after Close); a bad message is reported in Datagram.Err instead.
func (s *Socket) Read() (Datagram, error) {
	buf := make([]byte, MaxDatagram+1)
	oob := make([]byte, oobSize)
	// On Linux the net package reads with MSG_CMSG_CLOEXEC: fds a sender
	// attaches never leak into the children we start.
	n, oobn, flags, _, err := s.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return Datagram{}, err
	}
	var d Datagram
	var cmsgErr error
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err != nil {
		cmsgErr = fmt.Errorf("control message: %w", err)
	} else {
		pidfdPID := 0
		for _, m := range msgs {
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				d.PID, d.UID, d.GID = int(cred.Pid), int(cred.Uid), int(cred.Gid)
				continue
			}
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_PIDFD && len(m.Data) >= 4 {
				fd := int(int32(binary.NativeEndian.Uint32(m.Data)))
				pidfdPID = pidOfPidfd(fd)
				unix.Close(fd)
				continue
			}
			if fds, err := unix.ParseUnixRights(&m); err == nil {
				for _, fd := range fds {
					d.Files = append(d.Files, os.NewFile(uintptr(fd), "notify-fd"))
				}
			}
		}
		if pidfdPID > 0 { // 0: no pidfd; -1: the sender has exited since
			d.PID, d.PIDVerified = pidfdPID, true
		}
	}
	switch {
	case flags&unix.MSG_TRUNC != 0 || n > MaxDatagram:
		d.Err = fmt.Errorf("notify message longer than %d bytes, dropped", MaxDatagram)
	case flags&unix.MSG_CTRUNC != 0:
		d.Err = errors.New("notify message carried more fds than can be received, dropped")
	case cmsgErr != nil:
		d.Err = cmsgErr
	default:
		d.Msg, d.Err = Parse(buf[:n])
	}
	return d, nil
}

// pidOfPidfd reads the pid a pidfd refers to: -1 once the process has
// exited, 0 if it cannot be read. PIDFD_GET_INFO (Linux 6.13) answers in
// one call; older kernels have it in the pidfd's fdinfo, which takes an
// open, a read and a close of /proc each time.
func pidOfPidfd(fd int) int {
	if pid, ok := pidfdInfoPID(fd); ok {
		return pid
	}
	return fdinfoPID(fd)
}

// pidfdInfoPID asks PIDFD_GET_INFO for the pid (-1 once the process has
// exited); ok is false where the kernel has no such request.
func pidfdInfoPID(fd int) (pid int, ok bool) {
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	switch err := unix.IoctlPidfdInfo(fd, &info); {
	case err == nil && info.Mask&unix.PIDFD_INFO_PID != 0:
		return int(info.Pid), true
	case errors.Is(err, unix.ESRCH): // exited (or not in our pid namespace, where fdinfo says 0)
		return -1, true
	}
	return 0, false
}

// fdinfoPID reads "Pid:" in the pidfd's fdinfo: -1 once the process has
// exited, 0 if it cannot be read.
func fdinfoPID(fd int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			pid, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0
			}
			return pid
		}
	}
	return 0
}

// Dup returns a duplicate of the socket's fd, not close-on-exec, for
// handing the socket to a re-executed process; the caller owns it. The
// socket itself is left as it was (File would switch it to blocking mode).
//
// internal/fds does the same for the supervisor; this package, a public
// library, imports only the standard library and x/sys (TestImportRules).
func (s *Socket) Dup() (int, error) {
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, dupErr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { nfd, dupErr = unix.FcntlInt(fd, unix.F_DUPFD, 0) }); err != nil {
		return -1, err
	}
	return nfd, dupErr
}

// FileSocket makes a Socket of an inherited fd bound to addr (see Dup). It
// takes ownership of f.
func FileSocket(f *os.File, addr string) (*Socket, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("notify socket %s: %w", addr, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("notify socket %s: %s is not a unix socket", addr, f.Name())
	}
	return &Socket{conn: uc, addr: addr}, nil
}
