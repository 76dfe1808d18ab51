package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxHelperOutput bounds what is kept of a helper command's output.
const maxHelperOutput = 8 << 10

// helper is a short-lived command baton runs itself, such as --check. It is
// started and reaped like a worker, by the loop: os/exec's Wait would race
// the loop's wait4(-1).
type helper struct {
	pid int
	r   *os.File // the read end of its output
	out *bytes.Buffer
	// readDone is closed when the output reader has read to the end.
	readDone chan struct{}
	timer    timer
	onExit   func(ok bool, reason string)
}

// runHelper runs argv in dir (empty: baton's own) with env, kills it after
// timeout, and calls onExit on the loop with whether it exited 0 and its
// output (or, when it failed, why, with its output).
func (s *Supervisor) runHelper(argv []string, dir string, env []string, timeout time.Duration, onExit func(ok bool, out string)) {
	command := strings.Join(argv, " ")
	r, w, err := os.Pipe()
	if err != nil {
		onExit(false, fmt.Sprintf("run %q: %v", command, err))
		return
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		onExit(false, fmt.Sprintf("run %q: %v", command, err))
		return
	}
	pid, err := s.world.forkExec(argv[0], argv, &syscall.ProcAttr{
		Env:   env,
		Dir:   dir,
		Files: []uintptr{devnull.Fd(), w.Fd(), w.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
	devnull.Close()
	w.Close()
	if err != nil {
		r.Close()
		onExit(false, fmt.Sprintf("run %q: %v", command, err))
		return
	}
	h := &helper{pid: pid, r: r, out: &bytes.Buffer{}, readDone: make(chan struct{}), onExit: onExit}
	go func() {
		defer close(h.readDone)
		defer r.Close()
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			if room := maxHelperOutput - h.out.Len(); room > 0 {
				h.out.Write(buf[:min(n, room)])
			}
			if err != nil {
				return
			}
		}
	}()
	h.timer = s.after(timeout, func() {
		if s.helpers[pid] == h {
			s.log.Warn("helper command timed out: killing it", "pid", pid, "command", command, "timeout", timeout)
			s.killHelper(h)
		}
	})
	s.helpers[pid] = h
}

func (s *Supervisor) killHelper(h *helper) {
	s.world.kill(-h.pid, unix.SIGKILL) // the group may be gone already; then so is the helper
}

func (s *Supervisor) onHelperExit(h *helper, ws unix.WaitStatus) {
	delete(s.helpers, h.pid)
	h.timer.Stop()
	// The output is complete once every holder of the pipe has closed it;
	// wait for that off the loop, so that a leftover grandchild holding it
	// cannot wedge baton.
	s.afterDone(h.readDone, outputGrace, func(expired bool) {
		if expired {
			h.r.Close() // ends the reader at once, so out is ours to read
			<-h.readDone
		}
		out := strings.TrimSpace(h.out.String())
		if ws.Exited() && ws.ExitStatus() == 0 {
			h.onExit(true, out)
			return
		}
		if out == "" {
			out = "(no output)"
		}
		h.onExit(false, fmt.Sprintf("%s: %s", describeExit(ws), out))
	})
}
