package supervisor

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/proctree"
	"github.com/batonsd/baton/internal/sigrelay"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
)

// world is everything the supervisor takes from outside itself, in one
// place (the seams tableflip has): the environment, the clock and its
// timers, how worker and helper processes start, are signalled and are
// reaped, the signals and systemd's notify socket, the listeners, what
// /proc says, the pin's file system and the handoff's exec. New uses the
// real one; tests pass fakes that play races, or whole random schedules,
// without processes or time (world_fake_test.go, sim_fake_test.go).
//
// The loop does nothing outside through any other path, with three
// exceptions that only a real process meets: the package init that takes
// the signals early in a re-executed image (signals.go), the probes of
// --ready http and --ready listening (probe.go), and the FD store's and
// the control socket's own sockets.
type world struct {
	getenv  func(string) string
	environ func() []string
	// getwd is baton's working directory at start; executable, the binary
	// an upgrade re-executes.
	getwd      func() (string, error)
	executable func() (string, error)
	now        func() time.Time
	// afterFunc calls f on its own goroutine after d; Supervisor.after
	// posts it into the loop.
	afterFunc func(d time.Duration, f func()) timer
	// newTicker ticks every d until stop.
	newTicker func(d time.Duration) (c <-chan time.Time, stop func())
	// watch calls f, off the loop, once every channel in dones is closed
	// or, at the latest, after grace on the world's clock (then expired is
	// true): how the loop waits for output to end (afterDone).
	watch func(dones []<-chan struct{}, grace time.Duration, f func(expired bool))
	// background runs f off the loop (a memory reading); f posts what it
	// found.
	background func(f func())
	start      func(worker.Spec) (process, error)
	// adoptWorker takes up a worker an earlier image handed over.
	adoptWorker func(worker.Handoff, worker.Spec) (process, error)
	// forkExec starts a helper command (--check, the upgrade's version
	// question); the loop reaps it.
	forkExec func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error)
	// subreaper makes baton the child subreaper: orphans of its workers
	// become its children.
	subreaper func() error
	// wait4 reaps one exited child without waiting: wait4(-1, WNOHANG).
	wait4 func(ws *unix.WaitStatus) (int, error)
	// kill sends sig to pid (a negative pid: its process group).
	kill func(pid int, sig syscall.Signal) error
	// children lists baton's children, every thread's; openAdopted opens
	// its main thread's children list (escapees.go).
	children    func() []int
	openAdopted func() (*proctree.ChildrenFile, error)
	// signals is the loop's signal channel, and how to stop it; relayed,
	// the signals an earlier image's relay caught during the exec.
	signals func() (c chan os.Signal, stop func())
	relayed func() ([]int, error)
	// systemd is the service manager's notify socket; nil without one.
	systemd func() (*notify.Client, error)
	// listen opens a --listen address.
	listen func(activation.Spec) (*activation.Listener, error)
	// notifyDir makes the directory of the workers' notification sockets;
	// removeDir removes it when baton exits.
	notifyDir func(getenv func(string) string) (string, error)
	removeDir func(dir string)
	// handoff reads the state an earlier image handed over (nil: this is
	// a fresh start); exec hands st over and re-executes the binary, and
	// returns only if it could not.
	handoff func() (*handoffState, error)
	exec    func(s *Supervisor, st handoffState) error
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
		getenv:     os.Getenv,
		environ:    os.Environ,
		getwd:      os.Getwd,
		executable: os.Executable,
		now:        time.Now,
		afterFunc:  func(d time.Duration, f func()) timer { return time.AfterFunc(d, f) },
		newTicker: func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		},
		watch:      watchDone,
		background: func(f func()) { go f() },
		start: func(spec worker.Spec) (process, error) {
			p, err := worker.Start(spec)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return p, nil
		},
		adoptWorker: func(h worker.Handoff, spec worker.Spec) (process, error) {
			p, err := worker.Adopt(h, spec)
			if err != nil {
				return nil, err
			}
			return p, nil
		},
		forkExec:  syscall.ForkExec,
		subreaper: func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
		wait4: func(ws *unix.WaitStatus) (int, error) {
			return unix.Wait4(-1, ws, unix.WNOHANG, nil)
		},
		kill:        func(pid int, sig syscall.Signal) error { return unix.Kill(pid, sig) },
		children:    func() []int { return proctree.Children(os.Getpid()) },
		openAdopted: func() (*proctree.ChildrenFile, error) { return proctree.OpenMainThreadChildren(os.Getpid()) },
		signals: func() (chan os.Signal, func()) {
			c := signals()
			return c, func() { signal.Stop(c) }
		},
		relayed:   sigrelay.Received,
		systemd:   notify.FromEnv,
		listen:    activation.Listen,
		notifyDir: makeNotifyDir,
		removeDir: func(dir string) { os.RemoveAll(dir) },
		handoff:   func() (*handoffState, error) { return readHandoff(os.Getenv) },
		exec:      (*Supervisor).execState,
		usage:     usageOf,
		pin: func(cfg *Config, startDir string) error {
			return pin(cfg, startDir, os.Environ())
		},
		stillThere: stillThere,
		memory:     treeMemory,
	}
}

// watchDone is the real world's watch.
func watchDone(dones []<-chan struct{}, grace time.Duration, f func(expired bool)) {
	expiredc := make(chan struct{})
	t := time.AfterFunc(grace, func() { close(expiredc) })
	go func() {
		expired := false
		for _, done := range dones {
			select {
			case <-done:
				continue
			case <-expiredc:
				expired = true
			}
			break
		}
		if !expired {
			t.Stop()
		}
		f(expired)
	}()
}
