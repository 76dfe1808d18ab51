package supervisor

// What workers leave behind. A worker that double-forks a daemon (setsid,
// then its parent exits) leaves a process in no worker's process group, so
// the SIGKILL of the group at the drain deadline misses it, and outside
// systemd nothing else would ever stop it. baton is the child subreaper,
// so such a process becomes baton's child; baton tells whose it was by the
// NOTIFY_SOCKET in its environment (each worker has its own socket path,
// and children inherit it) and stops it when that worker has exited: the
// worker's generation's stop signal, then SIGKILL after escapeeGrace. What
// cannot be told (its environment replaced) is killed when baton stops.
//
// Under systemd the unit's cgroup bounds all of them anyway (KillMode=
// control-group); a cgroup per worker (Delegate=yes, cgroup.kill) would
// also give exact per-worker accounting, and is not built yet.

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// escapeeGrace is how long a left-behind process has between the stop
// signal and SIGKILL.
const escapeeGrace = time.Second

// adoptedChildren lists the children of baton's main thread, which hold
// every orphan the kernel handed to baton as subreaper (and the workers
// that thread happened to fork). It runs at every worker's exit, so the
// list is kept open and read again (one file, read from offset 0): reading
// every thread's list, each opened anew, made the search most of what a
// swap cost beyond the previous release (issue 22).
func (s *Supervisor) adoptedChildren() []int {
	if s.adopted == nil {
		f, err := s.world.openAdopted()
		if err != nil {
			return nil // no /proc, or a kernel without children lists: nothing can be told
		}
		s.adopted = f
	}
	return s.adopted.Read()
}

// notifySocketOf reads NOTIFY_SOCKET from pid's environment ("" if it has
// none or it cannot be read).
func notifySocketOf(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("NOTIFY_SOCKET=")); ok {
			return string(v)
		}
	}
	return ""
}

// stopEscapees stops the processes the exited worker w left behind.
func (s *Supervisor) stopEscapees(w *proc) {
	addr := w.p.NotifyAddr()
	for _, pid := range s.adoptedChildren() {
		if s.workers[pid] != nil || s.helpers[pid] != nil || notifySocketOf(pid) != addr {
			continue
		}
		sig := w.spec.cfg.StopSignal
		s.log.Warn("stopping a process the worker left behind", "slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen,
			"left", pid, "sig", sig.String())
		s.world.kill(pid, sig) // gone already: nothing to stop
		s.after(escapeeGrace, func() {
			if notifySocketOf(pid) == addr { // still there (a reused pid would not have it)
				s.log.Warn("killing a process the worker left behind", "slot", w.slot.Index, "left", pid)
				s.world.kill(pid, unix.SIGKILL)
			}
		})
	}
}

// killLeftovers SIGKILLs every child baton still has once its workers have
// all exited, and reaps them, waiting at most outputGrace.
func (s *Supervisor) killLeftovers() {
	left := s.world.children()
	if len(left) == 0 {
		return
	}
	for _, pid := range left {
		s.log.Warn("killing a process left behind by a worker", "left", pid)
		s.world.kill(pid, unix.SIGKILL)
	}
	deadline := time.Now().Add(outputGrace)
	for len(s.world.children()) > 0 && time.Now().Before(deadline) {
		var ws unix.WaitStatus
		if pid, _ := s.world.wait4(&ws); pid <= 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}
