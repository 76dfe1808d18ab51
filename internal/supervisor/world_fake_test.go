package supervisor

import (
	"errors"
	"slices"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/worker"
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
}

func newFakeProcess(pid, slot, gen int, started time.Time) *fakeProcess {
	return &fakeProcess{info: worker.Info{PID: pid, Slot: slot, Generation: gen, Started: started}, done: make(chan struct{})}
}

func (p *fakeProcess) outputEnds() { close(p.done) }

func (p *fakeProcess) Info() worker.Info { return p.info }

func (p *fakeProcess) Signal(sig syscall.Signal) error {
	p.signals = append(p.signals, sig)
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
func (p *fakeProcess) CloseOutput()                       {}

func (p *fakeProcess) Handoff() (worker.Handoff, error) {
	return worker.Handoff{}, errors.New("a fake process cannot be handed over")
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
	return was
}
