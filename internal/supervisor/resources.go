package supervisor

// What each worker, and baton itself, costs: CPU as a share of one core
// over a recent window, and resident memory (the worker's own, and its
// whole process tree's for servers that fork their own workers), read from
// /proc when status is asked for. No timer samples in the background: the
// window is the time since an earlier look, at least cpuWindow (at first,
// since the worker started), so `watch baton status` shows the last second
// or two and a scrape every 15 s the last 15 s.

import (
	"cmp"
	"fmt"
	"maps"
	"sync"
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
	At  time.Time     `json:"at"`
	CPU time.Duration `json:"cpu"`
}

// share is the CPU used since an earlier look, in percent of one core,
// taking the look at now with cpu used in all; since is when the process
// started (the base of the first look).
func (l *cpuLooks) share(now time.Time, cpu time.Duration, since time.Time) float64 {
	base := cpuSample{At: since}
	switch {
	case !l[1].At.IsZero() && now.Sub(l[1].At) >= cpuWindow:
		base = l[1]
	case !l[0].At.IsZero():
		base = l[0]
	}
	if l[1].At.IsZero() || now.Sub(l[1].At) >= cpuWindow {
		l[0], l[1] = l[1], cpuSample{At: now, CPU: cpu}
	}
	d := now.Sub(base.At)
	if d <= 0 || cpu < base.CPU {
		return 0
	}
	return float64(cpu-base.CPU) / float64(d) * 100
}

// usageOf reads a process's usage and its tree's (world.usage).
func usageOf(pid int) (own, tree proctree.Usage, procs int) {
	own, _ = proctree.Of(pid)
	tree, procs = proctree.OfTree(pid)
	return own, tree, procs
}

// costBook holds the earlier CPU looks at each worker, by pid, and at
// baton. Status reads /proc off the loop (the trees of 64 workers take tens
// of milliseconds to read, which the loop must not wait for), so the book
// has its own lock; concurrent status requests take turns. An in-place
// upgrade hands the looks over (handoff.go), so the first status after it
// shows the last window, not an average since the worker started.
type costBook struct {
	mu sync.Mutex
	costLooks
}

type costLooks struct {
	Own   cpuLooks          `json:"own"`
	Looks map[int]*cpuLooks `json:"looks,omitempty"`
}

// handOver is a copy of the looks, for the handoff.
func (b *costBook) handOver() costLooks {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := costLooks{Own: b.Own, Looks: make(map[int]*cpuLooks, len(b.Looks))}
	for pid, l := range b.Looks {
		c.Looks[pid] = new(*l)
	}
	return c
}

// addCosts fills in what each worker listed in st, and baton itself, cost
// now; at is when st was taken. Looks at workers no longer listed are
// dropped.
func (s *Supervisor) addCosts(st *control.Status, at time.Time) {
	b := &s.costs
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Looks == nil {
		b.Looks = map[int]*cpuLooks{}
	}
	live := map[int]bool{}
	for _, list := range [][]control.Worker{st.Workers, st.Incoming, st.Draining} {
		for i := range list {
			cw := &list[i]
			if cw.PID == 0 {
				continue
			}
			live[cw.PID] = true
			own, tree, procs := s.world.usage(cw.PID)
			if procs == 0 {
				continue // gone, or not readable
			}
			l := b.Looks[cw.PID]
			if l == nil {
				l = new(cpuLooks)
				b.Looks[cw.PID] = l
			}
			started := at.Add(-time.Duration(cw.UptimeSeconds * float64(time.Second)))
			cw.CPUPercent = round1(l.share(at, tree.CPU, started))
			cw.CPUSeconds = tree.CPU.Seconds()
			cw.RSSBytes, cw.TreeRSSBytes, cw.Processes = own.RSS, tree.RSS, procs
		}
	}
	maps.DeleteFunc(b.Looks, func(pid int, _ *cpuLooks) bool { return !live[pid] })
	if own, _, procs := s.world.usage(st.PID); procs > 0 {
		// Since the process started, not this image: an in-place upgrade
		// keeps the CPU time used before it.
		st.CPUPercent = round1(b.Own.share(at, own.CPU, cmp.Or(st.ProcessStarted, st.Started)))
		st.CPUSeconds = own.CPU.Seconds()
		st.RSSBytes = own.RSS
	}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// treeMemory is the memory of pid's process tree measured against ceiling
// (world.memory): PSS, which counts the pages a pre-fork server's master
// shares with its children once (RSS counts them in every process: a
// gunicorn of 4 workers held 40 MB by PSS and 130 MB by RSS), but read only
// when the tree's RSS, which is never less, passes the ceiling: smaps_rollup
// walks the page tables, about 15 us per MB (2.6 ms for that gunicorn,
// 15 ms for a 1 GB process), where statm costs some 40 us a process.
func treeMemory(pid int, ceiling uint64) (uint64, error) {
	rss, procs := proctree.OfTree(pid)
	if procs == 0 {
		return 0, fmt.Errorf("worker %d: gone", pid)
	}
	if rss.RSS <= ceiling {
		return rss.RSS, nil
	}
	m, err := proctree.MemoryOf(pid)
	return m.PSS, err
}
