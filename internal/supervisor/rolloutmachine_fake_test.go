package supervisor

import (
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// The rollout state machine driven through its host seam: no processes, no
// time. A fake host records what the rollout does; timers and the
// callbacks the supervisor would post to its loop wait in a queue until the
// test runs them, so two events can be played in either order. The process
// tests (rollout_process_test.go) stay as the integration layer.

type fakeHost struct {
	t       *testing.T
	cfg     Config
	loadErr error
	check   func(error) // the --check in progress
	gen     int
	clock   fakeClock
	queue   []func() // posted to "the loop", not run yet
	pid     int
	started []*proc
	drained []*proc
	reborn  []*slot // slots restarted as after a crash
	broken  bool    // listenerProblems reports one
	ends    []fakeEnd
	slots   []*slot // what slotCount, addSlots and removeSlots work on
	removed []*slot // slots removeSlots took away
}

type fakeEnd struct {
	res control.Rollout
	err error
}

func (h *fakeHost) load() (Config, error) { return h.cfg, h.loadErr }

func (h *fakeHost) runCheck(cfg Config, done func(error)) {
	if cfg.Check == "" {
		done(nil)
		return
	}
	h.check = done
}

func (h *fakeHost) newGen(cfg Config) *genSpec {
	h.gen++
	return &genSpec{gen: h.gen, cfg: cfg}
}

func (h *fakeHost) startWorker(sl *slot, spec *genSpec) *proc {
	h.pid++
	w := newProc(newFakeProcess(h.pid, sl.Index, spec.gen, h.clock.now), sl, spec)
	w.State = stateStarting
	h.started = append(h.started, w)
	return w
}

func (h *fakeHost) drain(w *proc) {
	w.State = stateDraining
	h.drained = append(h.drained, w)
}

func (h *fakeHost) restartSlot(sl *slot) { h.reborn = append(h.reborn, sl) }

func (h *fakeHost) slotCount() int { return len(h.slots) }

func (h *fakeHost) addSlots(n int, spec *genSpec) []*slot {
	var added []*slot
	for range n {
		sl := &slot{slotKept: slotKept{Index: len(h.slots)}, spec: spec}
		h.slots = append(h.slots, sl)
		added = append(added, sl)
	}
	return added
}

func (h *fakeHost) removeSlots(keep int) {
	for _, sl := range h.slots[keep:] {
		for _, w := range []*proc{sl.next, sl.w} {
			if w != nil {
				h.drain(w)
			}
		}
		sl.w, sl.next = nil, nil
	}
	h.removed = append(h.removed, h.slots[keep:]...)
	h.slots = h.slots[:keep]
}

// afterOutput queues f as the supervisor posts it when the output ends.
func (h *fakeHost) afterOutput(w *proc, f func()) { h.queue = append(h.queue, f) }

// after queues f when its time comes, as the loop gets a posted timer.
func (h *fakeHost) after(d time.Duration, f func()) timer {
	return h.clock.afterFunc(d, func() { h.queue = append(h.queue, f) })
}

func (h *fakeHost) listenerProblems() []string {
	if h.broken {
		return []string{"web is not listening"}
	}
	return nil
}

func (h *fakeHost) progressed() {}

func (h *fakeHost) ended(r *rollout, res control.Rollout, err error) {
	if n := framesIn("(*rollout).entry"); n != 1 {
		h.t.Errorf("the rollout ended %d phase entries deep: entries must not nest", n)
	}
	h.ends = append(h.ends, fakeEnd{res: res, err: err})
}

func (h *fakeHost) logger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (h *fakeHost) now() time.Time { return h.clock.now }

// advance moves the clock; due timers post their callbacks to the queue.
func (h *fakeHost) advance(d time.Duration) { h.clock.advance(d) }

// run runs what is queued, as the loop would.
func (h *fakeHost) run() {
	for len(h.queue) > 0 {
		f := h.queue[0]
		h.queue = h.queue[1:]
		f()
	}
}

// machine is a rollout of n slots serving generation 1, with the workers
// serving them.
type machine struct {
	h     *fakeHost
	r     *rollout
	slots []*slot
}

func newMachine(t *testing.T, n int, cfg Config) *machine {
	if cfg.Workers == 0 {
		cfg.Workers = n // as the supervisor's load keeps the size
	}
	h := &fakeHost{t: t, cfg: cfg, gen: 1, clock: fakeClock{now: time.Unix(1e9, 0)}, pid: 100}
	from := &genSpec{gen: 1, cfg: cfg}
	m := &machine{h: h}
	for i := range n {
		sl := &slot{slotKept: slotKept{Index: i}, spec: from}
		sl.w = newProc(newFakeProcess(i+1, i, 1, h.clock.now), sl, from)
		sl.w.State = stateReady
		m.slots = append(m.slots, sl)
	}
	h.slots = slices.Clone(m.slots)
	m.r = newRollout(h, from, m.slots, nil)
	return m
}

// newWorker is the nth worker the rollout started (0 is the first).
func (m *machine) newWorker(n int) *proc {
	if n >= len(m.h.started) {
		m.h.t.Fatalf("worker %d asked for; the rollout started %d", n, len(m.h.started))
	}
	return m.h.started[n]
}

func (m *machine) ready(n int) {
	w := m.newWorker(n)
	w.State = stateReady
	m.r.workerReady(w)
}

// fail is a new worker's exit as onExit hands it over: out of its slot
// first, with its last output.
func (m *machine) fail(n int, lastLine string) {
	w := m.newWorker(n)
	w.p.(*fakeProcess).tail = []string{lastLine}
	if w.slot.next == w {
		w.slot.next = nil
	}
	if w.slot.w == w {
		w.slot.w = nil
	}
	m.r.workerFailed(w, "exit status 1")
}

func (m *machine) gens() []int {
	var g []int
	for _, sl := range m.h.slots {
		if sl.w == nil {
			g = append(g, 0)
			continue
		}
		g = append(g, sl.w.spec.gen)
	}
	return g
}

// end is the one report the rollout made.
func (m *machine) end() fakeEnd {
	m.h.t.Helper()
	if len(m.h.ends) != 1 {
		m.h.t.Fatalf("the rollout reported %d times, want once: %+v", len(m.h.ends), m.h.ends)
	}
	return m.h.ends[0]
}

func canaryCfg() Config {
	return Config{MaxSurge: 1, Canary: time.Second}
}

func TestRolloutMachine(t *testing.T) {
	tests := []struct {
		name  string
		slots int
		cfg   Config
		play  func(m *machine)
		// What must hold at the end.
		state     string   // of the report
		err       string   // in the report's error
		gens      []int    // serving in each slot
		drained   int      // workers told to drain
		reborn    int      // slots restarted as after a crash
		unstarted bool     // no worker was started
		notIn     []string // not in the report's error
	}{
		{
			name: "two batches ok", slots: 3, cfg: Config{MaxSurge: 2},
			play: func(m *machine) {
				m.r.begin()
				m.ready(0)
				m.ready(1)
				m.ready(2)
			},
			state: "ok", gens: []int{2, 2, 2}, drained: 3,
		},
		{
			name: "a bad config ends it before anything starts", slots: 2, cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.h.loadErr = errors.New(`config /etc/baton/app.toml: unknown key "wokers"`)
				m.r.begin()
			},
			state: "failed", err: `unknown key "wokers"`, gens: []int{1, 1}, unstarted: true,
		},
		{
			name: "stop while checking: the check's late answer changes nothing", slots: 2,
			cfg: Config{MaxSurge: 1, Check: "sleep 5"},
			play: func(m *machine) {
				m.r.begin()
				check := m.h.check
				m.r.stop()
				check(nil)
			},
			state: "stopped", err: "baton is stopping", gens: []int{1, 1}, unstarted: true,
		},
		{
			name: "a failure as the canary timer fires: the failure first", slots: 2, cfg: canaryCfg(),
			play: func(m *machine) {
				m.r.begin()
				m.ready(0) // canary
				m.h.advance(time.Second)
				m.fail(0, "panic: boom") // handled before the timer's callback
				m.h.run()                // the canary callback, then the output
			},
			state: "failed", err: "panic: boom", gens: []int{1, 1}, drained: 0,
		},
		{
			name: "a failure as the canary timer fires: the timer first", slots: 2, cfg: canaryCfg(),
			play: func(m *machine) {
				m.r.begin()
				m.ready(0)
				m.h.advance(time.Second)
				m.h.run()                // promoted: slot 0 moved, worker 1 starting
				m.fail(0, "panic: boom") // the promoted worker dies: roll slot 0 back
				m.ready(2)               // its generation-1 replacement
				m.h.run()
			},
			state: "failed", err: "panic: boom", gens: []int{1, 1},
			drained: 2, // the old slot-0 worker, then the starting worker 1
		},
		{
			name: "stop while a failure waits for its output", slots: 2, cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.r.begin()
				m.fail(0, "panic: late")
				m.r.stop()
				m.h.run() // the output arrives after the end
			},
			state: "stopped", err: "baton is stopping", gens: []int{1, 1}, notIn: []string{"panic: late"},
		},
		{
			name: "the report waits for the failed worker's last output", slots: 1, cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.r.begin()
				m.fail(0, "listen tcp: address already in use")
				if len(m.h.ends) != 0 {
					m.h.t.Fatal("the rollout reported before the worker's output was read")
				}
				m.h.run()
			},
			state: "failed", err: "worker 0 (pid 101, generation 2): exit status 1; last output: listen tcp: address already in use", gens: []int{1},
		},
		{
			name: "a rollback ends when the previous generation is back in the moved slot", slots: 3,
			cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.r.begin()
				m.ready(0)               // slot 0 moved
				m.fail(1, "panic: boom") // slot 1's new worker: roll back
				m.ready(2)               // slot 0's generation-1 worker
				m.h.run()
			},
			state: "failed", err: "panic: boom", gens: []int{1, 1, 1},
			drained: 2, // slot 0's old worker when promoted, its generation-2 worker when rolled back
		},
		{
			name: "a rollback worker that fails leaves the new one serving its slot", slots: 2,
			cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.r.begin()
				m.ready(0)
				m.fail(1, "panic: new")
				m.h.run()
				m.fail(2, "panic: old too") // slot 0's generation-1 worker
			},
			state: "failed", err: "panic: new", gens: []int{2, 1}, drained: 1,
		},
		{
			name: "a slot left with no worker at all restarts as after a crash", slots: 2,
			cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.r.begin()
				m.ready(0)
				m.fail(0, "panic: moved") // slot 0's new worker, serving already
				m.h.run()
				m.fail(2, "panic: old too") // slot 0's generation-1 replacement
			},
			state: "failed", err: "panic: moved", gens: []int{0, 1}, reborn: 1,
			drained: 2, // slot 0's old worker when promoted, slot 1's incoming one at the abort
		},
		{
			name: "every slot moved but nothing listens: failed", slots: 1, cfg: Config{MaxSurge: 1},
			play: func(m *machine) {
				m.h.broken = true
				m.r.begin()
				m.ready(0)
			},
			state: "failed", err: "generation 2 serves, but web is not listening", gens: []int{2}, drained: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine(t, tt.slots, tt.cfg)
			tt.play(m)
			end := m.end()
			if end.res.State != tt.state {
				t.Errorf("state %q, want %q (error %v)", end.res.State, tt.state, end.err)
			}
			if tt.err != "" && (end.err == nil || !strings.Contains(end.err.Error(), tt.err)) {
				t.Errorf("error %v, want it to say %q", end.err, tt.err)
			}
			for _, s := range tt.notIn {
				if end.err != nil && strings.Contains(end.err.Error(), s) {
					t.Errorf("error %v says %q", end.err, s)
				}
			}
			if tt.state == "ok" && end.err != nil {
				t.Errorf("ok with error %v", end.err)
			}
			if g := m.gens(); !slices.Equal(g, tt.gens) {
				t.Errorf("slots serve generations %v, want %v", g, tt.gens)
			}
			if len(m.h.drained) != tt.drained {
				t.Errorf("%d workers drained, want %d", len(m.h.drained), tt.drained)
			}
			if len(m.h.reborn) != tt.reborn {
				t.Errorf("%d slots restarted as after a crash, want %d", len(m.h.reborn), tt.reborn)
			}
			if tt.unstarted && len(m.h.started) > 0 {
				t.Errorf("%d workers started, want none", len(m.h.started))
			}
			for _, sl := range m.slots {
				if sl.next != nil {
					t.Errorf("slot %d still has an incoming worker after the end", sl.Index)
				}
			}
			// Nothing moves an ended rollout.
			m.h.advance(time.Hour)
			m.h.run()
			m.r.stop()
			if len(m.h.ends) != 1 {
				t.Errorf("an ended rollout reported again: %+v", m.h.ends[1:])
			}
		})
	}
}

// TestRolloutTransitions: every phase change goes through enter, and one
// the table does not allow is a bug that panics at once.
func TestRolloutTransitions(t *testing.T) {
	m := newMachine(t, 1, Config{MaxSurge: 1})
	m.r.begin()
	defer func() {
		if recover() == nil {
			t.Error("rolling to canary after ok did not panic")
		}
	}()
	m.ready(0)
	if m.r.phase != phaseOK {
		t.Fatalf("phase %s, want ok", m.r.phase)
	}
	m.r.enter(phaseCanary)
}

// framesIn counts the calls of the function named fn (its name ends so) on
// the calling goroutine's stack.
func framesIn(fn string) int {
	pcs := make([]uintptr, 256)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	n := 0
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			n++
		}
		if !more {
			return n
		}
	}
}
