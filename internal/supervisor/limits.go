package supervisor

import (
	"fmt"
	"slices"

	"github.com/batonsd/baton/internal/metrics"
	"golang.org/x/sys/unix"
)

// MaxWorkers bounds --workers. Far above what one host runs as one service,
// it turns a typo (--workers 100000000) into a clear error instead of a
// start loop that forks until the process limit.
const MaxWorkers = 4096

// The fds baton holds: fdsPerWorker for each live worker (its notification
// socket and the read ends of its stdout and stderr pipes, plus the exec
// pipe while it starts), fdsBase besides (listeners come on top: the
// journal, the control socket and its connections, signal and epoll fds,
// a --check helper's pipes, the Go runtime's own), and with --metrics its
// listener and connections (metrics.MaxConns at most).
const (
	fdsPerWorker = 4
	fdsBase      = 16
)

// fdsNeeded is what cfg's workers take at full strength with a rollout's
// surge, before any draining worker.
func fdsNeeded(cfg Config, listeners int) uint64 {
	surge := cfg.MaxSurge
	if cfg.BlueGreen {
		surge = cfg.Workers
	}
	return uint64(fdsOwn(cfg, listeners) + fdsPerWorker*(cfg.Workers+min(surge, cfg.Workers)))
}

// fdsOwn is what baton holds besides its workers.
func fdsOwn(cfg Config, listeners int) int {
	n := fdsBase + listeners
	if cfg.Metrics != "" {
		n += 1 + metrics.MaxConns
	}
	return n
}

// openFileLimit is RLIMIT_NOFILE's soft limit, which the Go runtime has
// already raised to the hard limit at start; 0 if unknown.
func openFileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// checkFDLimit tells, before any worker starts, whether limit (RLIMIT_NOFILE)
// can carry cfg's workers: under `prlimit --nofile=64` baton used to run
// out of fds in its own pipes and report it as worker crashes.
func checkFDLimit(cfg Config, listeners int, limit uint64) error {
	need := fdsNeeded(cfg, listeners)
	if limit == 0 || limit >= need {
		return nil
	}
	return fmt.Errorf("--workers %d: baton needs about %d open files for them (%d per worker and per surge, %d more of its own), "+
		"but RLIMIT_NOFILE is %d: raise LimitNOFILE= or lower --workers", cfg.Workers, need, fdsPerWorker, fdsOwn(cfg, listeners), limit)
}

// drainingBudget is how many draining workers the fds left over by the
// serving ones can hold; at least one, so that a rollout can always move.
func (s *Supervisor) drainingBudget() int {
	if s.fdLimit == 0 {
		return int(^uint(0) >> 1)
	}
	need := fdsNeeded(s.cfg, len(s.listeners))
	if s.fdLimit <= need {
		return 1
	}
	return max(1, int((s.fdLimit-need)/fdsPerWorker))
}

// boundDraining SIGKILLs the draining workers that started draining first
// while more drain than the fd budget holds. Workers that ignore their stop
// signal and a long --drain-timeout, over many reloads, used to pin fds
// until baton had none left.
func (s *Supervisor) boundDraining() {
	if s.stopping {
		return // every worker drains, and nothing new starts: no fd is added
	}
	// A worker already killed holds its fds until it is reaped and its
	// output read: it counts, but cannot be killed again; so does one
	// reaped whose output is still being read.
	var draining []*proc
	held := 0
	for _, w := range s.workers {
		if w.State == stateDraining {
			held++
			if !w.Killed {
				draining = append(draining, w)
			}
		}
	}
	for _, p := range s.exited { // reaped, output not read to its end yet
		select {
		case <-p.Done():
		default:
			held++
		}
	}
	over := min(held-s.drainingBudget(), len(draining))
	if over <= 0 {
		return
	}
	slices.SortFunc(draining, func(a, b *proc) int { return a.DrainStart.Compare(b.DrainStart) })
	for _, w := range draining[:over] {
		s.log.Warn("too many draining workers for RLIMIT_NOFILE: killing the one draining longest",
			"slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen, "draining", held, "budget", s.drainingBudget(), "limit", s.fdLimit)
		w.Killed = true
		s.Totals.DrainKills++
		w.p.Kill()
	}
}
