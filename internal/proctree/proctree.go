// Package proctree reads, from /proc, a process and the processes it
// started: who they are, and what they cost (CPU time, resident memory).
// Servers that fork their own workers (gunicorn, uwsgi, puma) cost what
// their whole tree costs.
package proctree

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxTree bounds a walk: a fork bomb under a worker must not make baton
// read /proc without end.
const maxTree = 4096

// Tree is pid and its descendants, parents first (at most 4096), read from
// each thread's children list; a process that has exited is left out.
func Tree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids) && len(pids) < maxTree; i++ {
		pids = append(pids, Children(pids[i])...)
	}
	return pids
}

// Children is pid's children, those of every thread (a child's parent is
// the thread that forked it); none if pid is gone or /proc unreadable.
func Children(pid int) []int {
	var pids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		pids = appendChildren(pids, fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
	}
	return pids
}

// ChildrenFile is the children list of pid's main thread (the thread group
// leader), kept open to be read again and again: one pread each time,
// where opening it anew walks /proc, opens, reads and closes. For a child
// subreaper it holds every orphan handed to it: the kernel gives an orphan
// to the subreaper's first thread that is not exiting (find_alive_thread),
// which is the leader while that runs, and a Go program's main thread runs
// for as long as the program does. Children that other threads forked are
// not in it (Children has them).
type ChildrenFile struct {
	f   *os.File
	buf []byte
}

// OpenMainThreadChildren opens the children list of pid's main thread.
func OpenMainThreadChildren(pid int) (*ChildrenFile, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil, err
	}
	return &ChildrenFile{f: f, buf: make([]byte, 4096)}, nil
}

// Read returns the pids the list holds now (none if it cannot be read).
// A read at offset 0 makes the kernel list the children afresh.
func (c *ChildrenFile) Read() []int {
	n := 0
	for {
		m, err := c.f.ReadAt(c.buf[n:], int64(n)) // reads on to the end (io.EOF) or a full buffer
		n += m
		if err != nil {
			break
		}
		c.buf = append(c.buf, make([]byte, len(c.buf))...)
	}
	return appendPIDs(nil, c.buf[:n])
}

// Close closes the list.
func (c *ChildrenFile) Close() error { return c.f.Close() }

// appendChildren appends the pids listed in a thread's children file.
func appendChildren(pids []int, path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return pids // the thread or process is gone
	}
	return appendPIDs(pids, b)
}

// appendPIDs appends the pids in a children list (space separated).
func appendPIDs(pids []int, list []byte) []int {
	for f := range strings.FieldsSeq(string(list)) {
		if c, err := strconv.Atoi(f); err == nil {
			pids = append(pids, c)
		}
	}
	return pids
}

// Usage is what processes cost: CPU time used (user and system, of the
// live processes; children they reaped are not counted) and resident
// memory.
type Usage struct {
	CPU time.Duration
	RSS uint64 // bytes
}

// Add returns u plus v.
func (u Usage) Add(v Usage) Usage { return Usage{CPU: u.CPU + v.CPU, RSS: u.RSS + v.RSS} }

// userHZ is the unit of /proc/PID/stat's times: USER_HZ, 100 on every
// architecture Linux runs Debian on (sysconf(_SC_CLK_TCK) reports it; it is
// fixed in the kernel's ABI).
const userHZ = 100

var pageSize = uint64(os.Getpagesize())

// Of reads one process's usage: CPU time from /proc/PID/stat, resident
// memory from /proc/PID/statm. stat's rss field is the kernel's cheap,
// per-CPU approximation: it read 0 for a process that had run for a while
// on a 6.x kernel and is hundreds of pages off on others, while statm sums
// the counters exactly.
func Of(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: the fields after it follow the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return Usage{}, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return Usage{}, fmt.Errorf("/proc/%d/stat: %d fields after the name, want 13 or more", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return Usage{}, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	statm, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return Usage{}, err
	}
	// statm: size, resident, shared, ... in pages.
	m := strings.Fields(string(statm))
	if len(m) < 2 {
		return Usage{}, fmt.Errorf("/proc/%d/statm: %q, want size and resident", pid, statm)
	}
	resident, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		return Usage{}, fmt.Errorf("/proc/%d/statm: resident %q", pid, m[1])
	}
	return Usage{
		CPU: time.Duration(utime+stime) * time.Second / userHZ,
		RSS: resident * pageSize,
	}, nil
}

// OfTree reads the usage of pid and of its descendants, summed, and how
// many processes that is. Processes that exit during the walk are left out.
func OfTree(pid int) (Usage, int) {
	var sum Usage
	n := 0
	for _, p := range Tree(pid) {
		if u, err := Of(p); err == nil {
			sum = sum.Add(u)
			n++
		}
	}
	return sum, n
}
