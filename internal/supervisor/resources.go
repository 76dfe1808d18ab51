package supervisor

// What each worker, and baton itself, costs: CPU as a share of one core
// over a recent window, and resident memory (the worker's own, and its
// whole process tree's for servers that fork their own workers), read from
// /proc when status is asked for. No timer samples in the background: the
// window is the time since an earlier look, at least cpuWindow (at first,
// since the worker started), so `watch baton status` shows the last second
// or two and a scrape every 15 s the last 15 s.

import (
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/proctree"
)

// cpuWindow is the shortest window a CPU share is taken over.
const cpuWindow = time.Second

// cpuLooks are two earlier readings of a process's CPU time, the newer
// last; zero until taken.
type cpuLooks [2]cpuSample

type cpuSample struct {
	at  time.Time
	cpu time.Duration
}

// share is the CPU used since an earlier look, in percent of one core,
// taking the look at now with cpu used in all; since is when the process
// started (the base of the first look).
func (l *cpuLooks) share(now time.Time, cpu time.Duration, since time.Time) float64 {
	base := cpuSample{at: since}
	switch {
	case !l[1].at.IsZero() && now.Sub(l[1].at) >= cpuWindow:
		base = l[1]
	case !l[0].at.IsZero():
		base = l[0]
	}
	if l[1].at.IsZero() || now.Sub(l[1].at) >= cpuWindow {
		l[0], l[1] = l[1], cpuSample{at: now, cpu: cpu}
	}
	d := now.Sub(base.at)
	if d <= 0 || cpu < base.cpu {
		return 0
	}
	return float64(cpu-base.cpu) / float64(d) * 100
}

// usageOf reads a process's usage and its tree's (world.usage).
func usageOf(pid int) (own, tree proctree.Usage, procs int) {
	own, _ = proctree.Of(pid)
	tree, procs = proctree.OfTree(pid)
	return own, tree, procs
}

// addResources fills in what w costs now.
func (s *Supervisor) addResources(cw *control.Worker, w *proc, now time.Time) {
	own, tree, procs := s.world.usage(w.pid)
	if procs == 0 {
		return // gone, or not readable
	}
	cw.CPUPercent = round1(w.cpu.share(now, tree.CPU, w.started))
	cw.CPUSeconds = tree.CPU.Seconds()
	cw.RSSBytes, cw.TreeRSSBytes, cw.Processes = own.RSS, tree.RSS, procs
}

// addOwnResources fills in what baton itself costs now.
func (s *Supervisor) addOwnResources(st *control.Status, now time.Time) {
	own, _, procs := s.world.usage(st.PID)
	if procs == 0 {
		return
	}
	st.CPUPercent = round1(s.cpu.share(now, own.CPU, s.started))
	st.CPUSeconds = own.CPU.Seconds()
	st.RSSBytes = own.RSS
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
