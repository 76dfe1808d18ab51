package supervisor

import (
	"os"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/proctree"
	"github.com/batonsd/baton/internal/worker"
)

// world is what the supervisor takes from outside itself, in one place
// (the seams tableflip has): the environment, the clock, and how a worker
// process starts. New uses the real one; tests pass fakes to play races
// without processes or time (world_fake_test.go).
type world struct {
	getenv  func(string) string
	environ func() []string
	now     func() time.Time
	// afterFunc calls f on its own goroutine after d; Supervisor.after
	// posts it into the loop.
	afterFunc func(d time.Duration, f func()) timer
	start     func(worker.Spec) (process, error)
	// forkExec starts a helper command (--check, the upgrade's version
	// question); the loop reaps it.
	forkExec func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error)
	// usage reads what a process costs, and its tree (resources.go).
	usage func(pid int) (own, tree proctree.Usage, procs int)
	// pin resolves a configuration's directory, program and environment
	// files for a new generation (pin.go); startDir is baton's working
	// directory at start.
	pin func(cfg *Config, startDir string) error
	// stillThere checks that a pinned generation's directory and program
	// still exist, without resolving anything again (a rollback's).
	stillThere func(g GenSettings) error
	// memory reads what a worker's process tree holds, for
	// --recycle-memory: its PSS, or its RSS when that is not above ceiling
	// (recycle.go).
	memory func(pid int, ceiling uint64) (uint64, error)
}

func realWorld() world {
	return world{
		getenv:    os.Getenv,
		environ:   os.Environ,
		now:       time.Now,
		afterFunc: func(d time.Duration, f func()) timer { return time.AfterFunc(d, f) },
		start: func(spec worker.Spec) (process, error) {
			p, err := worker.Start(spec)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return p, nil
		},
		forkExec: syscall.ForkExec,
		usage:    usageOf,
		pin: func(cfg *Config, startDir string) error {
			return pin(cfg, startDir, os.Environ())
		},
		stillThere: stillThere,
		memory:     treeMemory,
	}
}
