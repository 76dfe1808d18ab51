// Package listening tells, by the kernel's own account, whether a process
// or one it started waits for connections on given sockets: the readiness
// of servers that send no READY=1 (baton's --ready listening).
//
// Two signs count, read from /proc:
//
//   - a thread blocked in accept(2) or accept4(2) on one of the sockets
//     (/proc/PID/task/TID/syscall names the call and its fd): servers that
//     accept in a blocking loop;
//   - one of the sockets in an epoll set of the process (the "tfd: ... ino:"
//     lines of /proc/PID/fdinfo/FD for an epoll fd): event-loop servers
//     (Go, Node, asyncio, twisted, lighttpd, nginx).
//
// Where it cannot be exact: a server registers the socket with epoll when
// it sets up its loop, which may come before it serves (Go's net package
// registers a listener when it wraps the fd; twisted when it starts
// listening, before the reactor runs); a server that waits in poll(2) or
// select(2), or through io_uring, shows neither sign and never counts as
// ready. Prefer READY=1 or an HTTP probe where the server offers one.
package listening

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/internal/proctree"
)

// Sockets are the inode numbers of the sockets to look for.
type Sockets map[uint64]bool

// Inodes returns the sockets behind fds.
func Inodes(fds ...int) (Sockets, error) {
	set := Sockets{}
	for _, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("fd %d: %w", fd, err)
		}
		set[st.Ino] = true
	}
	return set, nil
}

// acceptCalls are the numbers of accept and accept4, as
// /proc/PID/task/TID/syscall shows them.
var acceptCalls = map[string]map[string]bool{
	"amd64": {"43": true, "288": true},
	"arm64": {"202": true, "242": true},
}[runtime.GOARCH]

// Accepting reports whether pid or a descendant of it waits for
// connections on one of socks. A process that is gone, or cannot be read,
// does not count.
func Accepting(pid int, socks Sockets) bool {
	for _, p := range proctree.Tree(pid) {
		if blockedInAccept(p, socks) || inEpollSet(p, socks) {
			return true
		}
	}
	return false
}

// blockedInAccept: a thread of pid sits in accept on one of socks.
func blockedInAccept(pid int, socks Sockets) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b)) // "43 0x3 0x7ffd... ..." while in a call
		if len(f) < 2 || !acceptCalls[f[0]] {
			continue
		}
		fd, err := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 32)
		if err == nil && socks[fdInode(pid, int(fd))] {
			return true
		}
	}
	return false
}

// fdInode is the inode of a socket fd of pid, 0 if it is not a socket.
func fdInode(pid, fd int) uint64 {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return 0
	}
	n, ok := strings.CutPrefix(link, "socket:[")
	if !ok {
		return 0
	}
	ino, _ := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64)
	return ino
}

// inEpollSet: one of socks is registered in an epoll fd of pid.
func inEpollSet(pid int, socks Sockets) bool {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, e := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(info))
		for sc.Scan() {
			line := sc.Text() // "tfd:        3 events:       19 data: ... ino:61af sdev:7"
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			for f := range strings.FieldsSeq(line) {
				if hex, ok := strings.CutPrefix(f, "ino:"); ok {
					if ino, err := strconv.ParseUint(hex, 16, 64); err == nil && socks[ino] {
						return true
					}
				}
			}
		}
	}
	return false
}
