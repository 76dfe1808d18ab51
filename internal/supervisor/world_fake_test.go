package supervisor

import (
	"errors"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/proctree"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
)

// fakeProcess stands in for a worker process: it records the signals it
// is sent; its program runs at once; its output ends when the test says
// (outputEnds).
type fakeProcess struct {
	info    worker.Info
	tail    []string
	signals []syscall.Signal
	exited  bool
	done    chan struct{}
	// onSignal, if set, is told of each signal sent (the simulator's
	// processes act on them).
	onSignal func(syscall.Signal)
}

func newFakeProcess(pid, slot, gen int, started time.Time) *fakeProcess {
	return &fakeProcess{info: worker.Info{PID: pid, Slot: slot, Generation: gen, Started: started}, done: make(chan struct{})}
}

// outputEnds ends its output (once, whoever asks first).
func (p *fakeProcess) outputEnds() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
}

func (p *fakeProcess) Info() worker.Info { return p.info }

func (p *fakeProcess) Signal(sig syscall.Signal) error {
	p.signals = append(p.signals, sig)
	if p.onSignal != nil {
		p.onSignal(sig)
	}
	return nil
}

func (p *fakeProcess) Kill() error                        { return p.Signal(syscall.SIGKILL) }
func (p *fakeProcess) Execd() <-chan struct{}             { return closedChan }
func (p *fakeProcess) Done() <-chan struct{}              { return p.done }
func (p *fakeProcess) Exited()                            { p.exited = true }
func (p *fakeProcess) Tail() []string                     { return slices.Clone(p.tail) }
func (p *fakeProcess) Warn(string, ...any)                {}
func (p *fakeProcess) NotifyAddr() string                 { return "" }
func (p *fakeProcess) OutputStreams() []worker.Stream     { return nil }
func (p *fakeProcess) OutputFDs(func(worker.Stream, int)) {}
func (p *fakeProcess) CloseOutput()                       { p.outputEnds() }

func (p *fakeProcess) Handoff() (worker.Handoff, error) {
	i := p.info
	return worker.Handoff{PID: i.PID, Slot: i.Slot, Generation: i.Generation, Started: i.Started, NotifyFD: -1, Tail: p.Tail()}, nil
}

// fakeClock is time that moves only when the test says: advance calls the
// functions of the timers that came due, in order.
type fakeClock struct {
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
	fired   bool
	// unlisted: dropped from the clock's list once stopped or fired;
	// Reset lists it again.
	unlisted bool
}

func (c *fakeClock) afterFunc(d time.Duration, f func()) timer {
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) advance(d time.Duration) {
	c.now = c.now.Add(d)
	due := slices.DeleteFunc(slices.Clone(c.timers), func(t *fakeTimer) bool { return t.stopped || t.fired || t.at.After(c.now) })
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.fired = true
		t.f()
	}
}

func (t *fakeTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	was := t.Stop()
	t.stopped, t.fired, t.at = false, false, t.c.now.Add(d)
	if t.unlisted {
		t.unlisted = false
		t.c.timers = append(t.c.timers, t)
	}
	return was
}

// fakeWorld is the world of the fake-world tests: workers and helper
// commands are fakes, time moves when the test says, and what would
// happen off the loop (output read to its end, a memory reading) waits
// until the test lets it (offLoop).
type fakeWorld struct {
	clock   fakeClock
	pid     int
	procs   map[int]*fakeProcess
	helpers [][]string     // the argv of each helper command started
	specs   []worker.Spec  // what each worker was started from
	mem     map[int]uint64 // each worker tree's memory, for --recycle-memory
	// startErr, if set, is what a worker start fails with.
	startErr error
	// watches are the world's watch calls not answered yet; later, the
	// background calls not run yet.
	watches []*fakeWatch
	later   []func()
}

type fakeWatch struct {
	dones []<-chan struct{}
	at    time.Time
	f     func(expired bool)
}

func (fw *fakeWorld) world() world {
	return world{
		getenv:     func(string) string { return "" },
		environ:    func() []string { return nil },
		getwd:      func() (string, error) { return "/", nil },
		executable: func() (string, error) { return "/usr/bin/baton", nil },
		now:        func() time.Time { return fw.clock.now },
		afterFunc:  fw.clock.afterFunc,
		newTicker:  func(time.Duration) (<-chan time.Time, func()) { return nil, func() {} },
		watch: func(dones []<-chan struct{}, grace time.Duration, f func(bool)) {
			fw.watches = append(fw.watches, &fakeWatch{dones: dones, at: fw.clock.now.Add(grace), f: f})
		},
		background: func(f func()) { fw.later = append(fw.later, f) },
		start: func(spec worker.Spec) (process, error) {
			if fw.startErr != nil {
				return nil, fw.startErr
			}
			fw.pid++
			fw.specs = append(fw.specs, spec)
			p := newFakeProcess(fw.pid, spec.Slot, spec.Generation, fw.clock.now)
			fw.procs[fw.pid] = p
			return p, nil
		},
		adoptWorker: func(worker.Handoff, worker.Spec) (process, error) {
			return nil, errors.New("a fake world adopts no worker")
		},
		pin:        func(*Config, string) error { return nil },
		stillThere: func(GenSettings) error { return nil },
		memory:     func(pid int, _ uint64) (uint64, error) { return fw.mem[pid], nil },
		forkExec: func(_ string, argv []string, _ *syscall.ProcAttr) (int, error) {
			fw.pid++
			fw.helpers = append(fw.helpers, argv)
			return fw.pid, nil
		},
		subreaper:   func() error { return nil },
		wait4:       func(*unix.WaitStatus) (int, error) { return 0, unix.ECHILD },
		kill:        func(int, syscall.Signal) error { return nil },
		children:    func() []int { return nil },
		openAdopted: func() (*proctree.ChildrenFile, error) { return nil, errors.New("no /proc in a fake world") },
		signals:     func() (chan os.Signal, func()) { return make(chan os.Signal, 64), func() {} },
		relayed:     func() ([]int, error) { return nil, nil },
		systemd:     func() (*notify.Client, error) { return nil, os.ErrNotExist },
		listen: func(activation.Spec) (*activation.Listener, error) {
			return nil, errors.New("a fake world listens on nothing")
		},
		notifyDir: func(func(string) string) (string, error) { return "/nonexistent/notify", nil },
		removeDir: func(string) {},
		handoff:   func() (*handoffState, error) { return nil, nil },
		exec: func(*Supervisor, handoffState) error {
			return errors.New("a fake world execs nothing")
		},
		usage: func(int) (own, tree proctree.Usage, procs int) { return }, // no processes to read
	}
}

// offLoop does the first thing waiting off the loop that can happen now:
// a background call, or a watch whose channels are all closed or whose
// grace has passed on the fake clock. It reports whether there was one.
func (fw *fakeWorld) offLoop() bool {
	if len(fw.later) > 0 {
		f := fw.later[0]
		fw.later = fw.later[1:]
		f()
		return true
	}
	for i, w := range fw.watches {
		done := allClosed(w.dones)
		if done || !fw.clock.now.Before(w.at) {
			fw.watches = slices.Delete(fw.watches, i, i+1)
			w.f(!done)
			return true
		}
	}
	return false
}

func allClosed(dones []<-chan struct{}) bool {
	for _, d := range dones {
		select {
		case <-d:
		default:
			return false
		}
	}
	return true
}
