// Package fds duplicates file descriptors for an in-place re-exec: a copy
// is not close-on-exec, so it crosses execve, while everything else baton
// holds is. The original is left as it was: os.File.Fd and net's File
// would switch it to blocking mode, which the workers sharing a listener
// would feel.
package fds

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Dup duplicates fd, not close-on-exec; the caller owns the copy.
func Dup(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD, 0) }

// DupConn duplicates the fd of c (a socket, a listener, an *os.File), not
// close-on-exec; the caller owns the copy.
func DupConn(c syscall.Conn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, dupErr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { nfd, dupErr = Dup(int(fd)) }); err != nil {
		return -1, err
	}
	return nfd, dupErr
}
