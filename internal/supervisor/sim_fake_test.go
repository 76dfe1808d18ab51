package supervisor

// The simulator: the real Supervisor (rollouts, slots, recycles, rollbacks,
// scales, the lame duck, the handoff) in a world that a seeded random
// source owns. A seed makes a configuration and a schedule of events
// (workers ready, late or never; crashes at any moment; drains that end at
// once, late or at the deadline; notify messages; memory crossing the
// ceiling; control requests from several callers; signals; the clock; a
// listener shut down; a pin or an exec that fails; the upgrade's re-exec,
// the state handed over through the real encoding and taken up by a fresh
// Supervisor). The world answers the loop's starts, kills and helpers on
// the same seed. The loop runs through the same step function as Run,
// between events, until nothing is ready; after each step the invariants
// (simInvariants) are checked, and once the schedule ends the world heals
// (every worker ready, every drain ended, time moves on) and the service
// must reach the state the last request asked for.
//
// A failure names the invariant, the seed and the event, shrinks the
// schedule to the fewest events that still fail it, and prints that trace;
//
//	go test ./internal/supervisor -run TestSim -sim.seed=N -v
//
// replays seed N with the engine's log. -sim.seeds=N runs N seeds (from
// -sim.first); -short runs a few thousand. Seeds that once failed go in
// simRegressions, which always run. docs/design.md has the whole story.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
)

var (
	simSeed  = flag.Uint64("sim.seed", 0, "replay this one seed of the simulator, with its trace and the engine's log")
	simSeeds = flag.Int("sim.seeds", 0, "how many seeds the simulator runs (0: 3000 with -short or -race, 30000 otherwise)")
	simFirst = flag.Uint64("sim.first", 1, "the first seed the simulator runs")
	// simEvents keeps only these events of -sim.seed's schedule: a shrunk
	// schedule, as a failure prints it.
	simMaxFail = flag.Int("sim.maxfail", 3, "stop after this many failing seeds")
	simEvents  = flag.String("sim.events", "", "with -sim.seed, play only these events of its schedule (comma-separated indices)")
)

// simRegressions are seeds that once failed: they run every time, before
// the others. A seed is a schedule only under this generator: a change to
// simSchedule, simWeights or the world's choices replays every seed
// differently, and the list must be found again (each fix put back, the
// seeds that fail without it).
var simRegressions = []uint64{
	104, 449, 2424, // a rollback whose previous-generation worker failed left its slot serving the failed generation for good (quiescence; ok answers while it did)
	8, 127, // an upgrade while a slot waited for its crash restart doubled its backoff again (handoff round trip)
	142320, // an earlier form of the first fix: the slot waited while an upgrade asked the binary its version, and a scale was answered ok meanwhile
}

// simInvariants are what the simulator checks, by the names its failures
// give.
const (
	invFloor      = "ready floor"                        // a slot's ready worker is never taken away before its successor is ready (crashes and stops aside)
	invAnswered   = "every caller answered exactly once" // no second answer; none left unanswered once the service is quiet
	invTruthful   = "every answer truthful"              // ok only when the generation it names serves every slot, at the size it names
	invPinned     = "every worker started with its generation's settings"
	invNoStart    = "no worker started once a stop began"     //
	invSignalled  = "every worker told to stop during a stop" // each live worker drains and was sent its stop signal
	invLeftover   = "no worker left running at the end"       //
	invCrashLimit = "the crash limit counted as documented"   // more crashes than --crash-limit within its window stops baton
	invRoundTrip  = "the handoff state round-trips"           // through the real encoding and a fresh Supervisor's adoption
	invQuiescence = "quiescence reaches the last request's state"
	invPanic      = "the engine does not panic"
	invLivelock   = "the loop comes to rest"
)

// simKind is what an event of the schedule does.
type simKind int

const (
	evTime         simKind = iota // the clock moves by d, firing what comes due in order
	evReady                       // a starting worker says READY=1
	evCrash                       // a live worker exits unasked (b: how)
	evDrained                     // a draining worker exits
	evNotify                      // a notify message (b: which)
	evMemory                      // a worker's memory crosses the ceiling, or all fall below it
	evHelper                      // a helper command exits (b: 0 ok, else failed)
	evReload                      // a reload request (b: the configuration changes or not)
	evAwaitReload                 // an await-reload request
	evScale                       // a scale request to b workers
	evRecycle                     // a recycle request (slot a, or all when b is 1)
	evRollback                    // a rollback request
	evUpgrade                     // an upgrade request on the control socket
	evStop                        // a stop request on the control socket
	evStatus                      // a status request
	evSignal                      // a signal (b: which)
	evShutListener                // a worker shuts the shared listener down; the listener check runs
	evPinFails                    // the next pin fails
	evExecFails                   // the next exec fails
	evCancel                      // Run's context ends
	nKinds
)

var simKindNames = [...]string{"time", "ready", "crash", "drained", "notify", "memory", "helper", "reload", "await-reload",
	"scale", "recycle", "rollback", "upgrade", "stop", "status", "signal", "shut listener", "pin fails", "exec fails", "context done"}

// simWeights is how often each kind comes in a schedule.
var simWeights = [nKinds]int{evTime: 22, evReady: 22, evCrash: 6, evDrained: 10, evNotify: 4, evMemory: 4, evHelper: 9,
	evReload: 6, evAwaitReload: 2, evScale: 4, evRecycle: 4, evRollback: 3, evUpgrade: 5, evStop: 1, evStatus: 2,
	evSignal: 4, evShutListener: 1, evPinFails: 2, evExecFails: 1, evCancel: 1}

var simSignals = []syscall.Signal{unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGHUP, unix.SIGUSR2, unix.SIGTERM, unix.SIGINT}

type simEvent struct {
	kind simKind
	a, b int
	d    time.Duration
}

func (e simEvent) String() string {
	switch e.kind {
	case evTime:
		return fmt.Sprintf("time +%s", e.d)
	case evSignal:
		return "signal " + unix.SignalName(simSignals[e.b%len(simSignals)])
	case evScale:
		return fmt.Sprintf("scale %d", e.b)
	case evCrash:
		return fmt.Sprintf("crash #%d (%s)", e.a, simCrashHow(e.b))
	case evReload:
		return fmt.Sprintf("reload (%s)", [...]string{"same configuration", "new environment", "new workers"}[e.b%3])
	case evRecycle:
		if e.b == 1 {
			return "recycle all"
		}
		return fmt.Sprintf("recycle slot %d", e.a)
	case evHelper:
		return fmt.Sprintf("helper #%d exits %d", e.a, e.b)
	case evNotify:
		return fmt.Sprintf("notify #%d %s", e.a, [...]string{"STATUS", "WATCHDOG=1", "from a stranger", "READY=1"}[e.b%4])
	case evMemory:
		if e.b == 1 {
			return "memory: all below the ceiling"
		}
		return fmt.Sprintf("memory: #%d above the ceiling", e.a)
	case evShutListener:
		return "shut listener, " + [...]string{"checked at once", "found at the next readiness"}[e.b%2]
	case evReady, evDrained:
		return fmt.Sprintf("%s #%d", simKindNames[e.kind], e.a)
	}
	return simKindNames[e.kind]
}

func simCrashHow(b int) string { return [...]string{"exit 1", "exit 0", "SIGSEGV"}[b%3] }

// simSetup is the configuration a seed runs.
type simSetup struct {
	workers, surge, crashN, failPct int
	blueGreen, check, memory        bool
	canary, lameDuck                time.Duration
}

func (c simSetup) String() string {
	return fmt.Sprintf("workers %d, surge %d, blue-green %v, canary %s, lame duck %s, check %v, recycle-memory %v, crash limit %d/min, start failures %d%%",
		c.workers, c.surge, c.blueGreen, c.canary, c.lameDuck, c.check, c.memory, c.crashN, c.failPct)
}

// simSchedule is what seed makes: a configuration and a schedule.
func simSchedule(seed uint64) (simSetup, []simEvent) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	setup := simSetup{
		workers: 1 + r.IntN(4), surge: 1 + r.IntN(2), crashN: 3 + r.IntN(8), failPct: []int{0, 0, 3, 10}[r.IntN(4)],
		blueGreen: r.IntN(5) == 0, check: r.IntN(3) == 0, memory: r.IntN(3) == 0,
		canary: []time.Duration{0, 0, 2 * time.Second}[r.IntN(3)], lameDuck: []time.Duration{0, 0, 3 * time.Second}[r.IntN(3)],
	}
	total := 0
	for _, w := range simWeights {
		total += w
	}
	events := make([]simEvent, 20+r.IntN(130))
	for i := range events {
		k, x := simKind(0), r.IntN(total)
		for ; x >= simWeights[k]; k++ {
			x -= simWeights[k]
		}
		e := simEvent{kind: k, a: r.IntN(8), b: r.IntN(8)}
		switch k {
		case evTime:
			if r.IntN(6) == 0 {
				e.d = time.Duration(5+r.IntN(70)) * time.Second // past deadlines
			} else {
				e.d = time.Duration(1+r.IntN(3000)) * time.Millisecond
			}
		case evHelper:
			e.b = max(0, e.b-5) // mostly exit 0
		case evScale:
			e.b = 1 + r.IntN(5)
		case evRecycle, evMemory:
			e.b = r.IntN(3) % 2
		}
		events[i] = e
	}
	return setup, events
}

// simAddr is the address every run listens on: one port, so that a
// listener put back after a shutdown keeps it, and a trace names the same.
var simAddr = sync.OnceValue(func() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
})

// simFailure is an invariant that did not hold.
type simFailure struct {
	invariant, detail string
}

// simExeced unwinds the old image's loop at its exec, as execve would.
type simExeced struct{ st handoffState }

// simProc is a worker or helper process of the simulated world.
type simProc struct {
	p       *fakeProcess // nil for a helper
	argv    []string     // a helper's
	dying   bool         // killed: it exits at the next rest
	exited  bool
	stopped bool // it got a stop signal
}

// simCaller is one control request and what it was answered.
type simCaller struct {
	id      int
	what    string
	event   int
	rollout chan rolloutResult
	upgrade chan error
	stop    chan control.Stopping
	answers int
	ok      *control.Rollout // its ok answer
	cut     string           // the connection ended unanswered (the exec, baton's exit)
}

type sim struct {
	seed    uint64
	setup   simSetup
	events  []simEvent
	rng     *rand.Rand // the world's own choices: start and exec failures
	fw      *fakeWorld
	s       *Supervisor
	in      *loopIn
	cleanUp func()
	sigs    chan os.Signal
	tick    chan time.Time // the listener check's ticker
	cfg     Config         // what a reload reads
	log     *slog.Logger

	procs    map[int]*simProc
	exits    []int // exited, not reaped: what wait4 returns, with ws
	exitWS   map[int]unix.WaitStatus
	crashed  map[int]bool   // the pids the schedule crashed
	gens     map[int]string // what each generation's workers are started with
	callers  []*simCaller
	hot      int // the worker above the memory ceiling (0: none)
	pinFail  bool
	execFail bool
	ended    bool
	images   int
	event    int // the event being played
	trace    []string
	verbose  bool
	// lingering are exited workers whose output has not ended yet; cancel
	// ends Run's context.
	lingering []*fakeProcess
	cancel    context.CancelFunc
}

// simRun plays a schedule; it returns the failure, if any, and the trace.
func simRun(seed uint64, setup simSetup, events []simEvent, verbose bool) (fail *simFailure, at int, trace []string) {
	sim := &sim{seed: seed, setup: setup, events: events, rng: rand.New(rand.NewPCG(seed, 0x3a1d)),
		procs: map[int]*simProc{}, exitWS: map[int]unix.WaitStatus{}, crashed: map[int]bool{}, gens: map[int]string{},
		verbose: verbose, event: -1}
	sim.fw = &fakeWorld{clock: fakeClock{now: time.Unix(1e9, 0)}, pid: 1000, procs: map[int]*fakeProcess{}, mem: map[int]uint64{}}
	sim.log = slog.New(slog.DiscardHandler)
	if verbose {
		sim.log = slog.New(slog.NewTextHandler(&simLogWriter{sim}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	defer func() {
		if sim.s != nil {
			sim.s.closeListeners()
		}
		if sim.cleanUp != nil {
			sim.cleanUp()
		}
		switch x := recover().(type) {
		case nil:
		case simFailure:
			fail = &x
		default:
			fail = &simFailure{invPanic, fmt.Sprintf("%v\n%s", x, simStack())}
		}
		at, trace = sim.event, sim.trace
	}()
	sim.boot()
	for i, e := range events {
		if sim.ended {
			break
		}
		sim.event = i
		sim.play(e)
	}
	sim.event = len(events)
	sim.heal()
	return nil, 0, nil
}

type simLogWriter struct{ sim *sim }

func (w *simLogWriter) Write(b []byte) (int, error) {
	w.sim.trace = append(w.sim.trace, "    log: "+strings.TrimSpace(string(b)))
	return len(b), nil
}

// simStack is where a panic came from, in the engine's own files.
func simStack() string {
	var lines []string
	all := strings.Split(string(debug.Stack()), "\n")
	for i, l := range all {
		if i > 0 && strings.Contains(l, "internal/supervisor/") && !strings.Contains(l, "_test.go") {
			fn := strings.TrimSpace(all[i-1])
			if j := strings.LastIndex(fn, "("); j > 0 {
				fn = fn[strings.LastIndex(fn[:j], "/")+1 : j]
			}
			file, _, _ := strings.Cut(strings.TrimSpace(l), " ")
			lines = append(lines, fmt.Sprintf("    %s %s", fn, file[strings.LastIndex(file, "/")+1:]))
		}
	}
	return strings.Join(lines, "\n")
}

func (sim *sim) fail(invariant, format string, args ...any) {
	panic(simFailure{invariant, fmt.Sprintf(format, args...)})
}

func (sim *sim) config() Config {
	c := sim.setup
	cfg := Config{Workers: c.workers, MaxSurge: c.surge, BlueGreen: c.blueGreen, Canary: c.canary, LameDuck: c.lameDuck,
		Listen: []activation.Spec{{Name: "http", Network: "tcp", Address: simAddr()}}, Version: "sim", Logger: sim.log}
	cfg.Command = []string{"worker"}
	cfg.ShimPath, cfg.ShimArgv = "/bin/true", []string{"shim"}
	cfg.ReadyTimeout, cfg.DrainTimeout, cfg.StopSignal = 30*time.Second, 10*time.Second, syscall.SIGTERM
	cfg.RestartBackoff = Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	cfg.CrashLimit = CrashLimit{N: c.crashN, Per: time.Minute}
	if c.check {
		cfg.Check = "check"
	}
	if c.memory {
		cfg.RecycleMemory = 100
	}
	return cfg
}

// world is the simulated world of one image; handoff is the state it
// takes up (nil: a fresh start).
func (sim *sim) world(handoff *handoffState) world {
	w := sim.fw.world()
	w.getenv = func(k string) string {
		if k == handoffEnv && handoff != nil {
			return "3"
		}
		return ""
	}
	w.signals = func() (chan os.Signal, func()) {
		sim.sigs = make(chan os.Signal, 64)
		return sim.sigs, func() {}
	}
	w.newTicker = func(d time.Duration) (<-chan time.Time, func()) {
		if d != listenCheck {
			return nil, func() {}
		}
		sim.tick = make(chan time.Time, 1)
		return sim.tick, func() {}
	}
	w.listen = activation.Listen // one real socket, so that shutting it down is real
	w.handoff = func() (*handoffState, error) { return handoff, nil }
	w.start = sim.start
	w.adoptWorker = func(h worker.Handoff, _ worker.Spec) (process, error) {
		if sp := sim.procs[h.PID]; sp != nil && sp.p != nil && !sp.exited {
			return sp.p, nil
		}
		return nil, fmt.Errorf("adopt worker %d: no such process", h.PID)
	}
	w.forkExec = sim.forkExec
	w.wait4 = sim.wait4
	w.kill = sim.kill
	w.exec = sim.exec
	w.pin = func(*Config, string) error {
		if sim.pinFail {
			sim.pinFail = false
			return errors.New("directory /srv/app/current: no such file or directory (simulated)")
		}
		return nil
	}
	w.memory = func(pid int, ceiling uint64) (uint64, error) {
		if pid == sim.hot {
			return 2 * ceiling, nil
		}
		return ceiling / 2, nil
	}
	return w
}

// up makes a Supervisor in the simulated world (taking up st, a handed-over
// state, unless nil) and sets its loop up, failing invariant if it cannot.
func (sim *sim) up(st *handoffState, invariant, whose string) *Supervisor {
	s, err := newIn(sim.world(st), func() (Config, error) { return sim.cfg, nil })
	if err != nil {
		sim.fail(invariant, "%snew: %v", whose, err)
	}
	sim.s = s
	ctx, cancel := context.WithCancel(context.Background())
	sim.cancel = cancel
	in, cleanUp, err := s.setUp(ctx)
	sim.cleanUp = cleanUp
	if err != nil {
		sim.fail(invariant, "%sset-up: %v", whose, err)
	}
	in.idle = closedChan
	sim.in = in
	return s
}

func (sim *sim) boot() {
	sim.cfg = sim.config()
	sim.up(nil, invPanic, "")
	sim.note("start: %s", sim.setup)
	sim.rest()
}

// start is the world's worker start: it fails as often as the setup says.
func (sim *sim) start(spec worker.Spec) (process, error) {
	if sim.s != nil && sim.s.stopping {
		sim.fail(invNoStart, "slot %d, generation %d started while baton stops", spec.Slot, spec.Generation)
	}
	settings := fmt.Sprintf("%q in %q with %q", spec.Command, spec.Dir, spec.Env)
	if was, ok := sim.gens[spec.Generation]; ok && was != settings {
		sim.fail(invPinned, "generation %d started with %s, earlier with %s", spec.Generation, settings, was)
	}
	sim.gens[spec.Generation] = settings
	if x := sim.rng.IntN(100); x < sim.setup.failPct {
		err := syscall.EAGAIN // baton's own fork failed: the slot retries
		if x%4 == 3 {
			err = syscall.ENOENT // the program cannot be exec'd
		}
		return nil, &worker.ExecError{Path: "worker", Err: err}
	}
	sim.fw.pid++
	p := newFakeProcess(sim.fw.pid, spec.Slot, spec.Generation, sim.fw.clock.now)
	sp := &simProc{p: p}
	p.onSignal = func(sig syscall.Signal) {
		switch {
		case sp.exited || sp.dying:
		case sig == syscall.SIGKILL:
			sp.dying = true
		default:
			sp.stopped = true
		}
	}
	sim.procs[p.info.PID] = sp
	return p, nil
}

func (sim *sim) forkExec(_ string, argv []string, attr *syscall.ProcAttr) (int, error) {
	sim.fw.pid++
	if slices.Contains(argv, "version") {
		out := fmt.Sprintf("baton sim\nhandoff-protocol %d\nhandoff-reads %s\n", HandoffProtocol, HandoffReads)
		if _, err := unix.Write(int(attr.Files[1]), []byte(out)); err != nil {
			sim.fail(invPanic, "write the helper's output: %v", err)
		}
	}
	sim.procs[sim.fw.pid] = &simProc{argv: argv}
	return sim.fw.pid, nil
}

func (sim *sim) wait4(ws *unix.WaitStatus) (int, error) {
	if len(sim.exits) == 0 {
		return 0, nil
	}
	pid := sim.exits[0]
	sim.exits = sim.exits[1:]
	*ws = sim.exitWS[pid]
	return pid, nil
}

func (sim *sim) kill(pid int, sig syscall.Signal) error {
	sp := sim.procs[max(pid, -pid)]
	if sp == nil || sp.exited {
		return unix.ESRCH
	}
	if sig == syscall.SIGKILL {
		sp.dying = true
	}
	return nil
}

// exec hands the state over as the real exec does (the same encoding, read
// back by decodeState) and unwinds the old image.
func (sim *sim) exec(_ *Supervisor, st handoffState) error {
	if sim.execFail {
		sim.execFail = false
		return errors.New("exec /usr/bin/baton: no such file or directory (simulated); the running baton goes on")
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(st); err != nil {
		sim.fail(invRoundTrip, "encode: %v", err)
	}
	got, err := decodeState(&buf)
	if err != nil {
		sim.fail(invRoundTrip, "decode: %v", err)
	}
	if diff := gocmp.Diff(st, *got, gocmp.Exporter(func(reflect.Type) bool { return true }), cmpopts.EquateEmpty()); diff != "" {
		sim.fail(invRoundTrip, "through the encoding (-before +after):\n%s", diff)
	}
	panic(simExeced{*got})
}

// takeOver is the new image: a fresh Supervisor takes the state up, as
// after execve. What the old image had armed or had running off its loop
// dies with it; callers still waiting see their connection end.
func (sim *sim) takeOver(x simExeced) {
	old := sim.s
	for _, t := range sim.fw.clock.timers {
		t.stopped = true
	}
	sim.fw.watches, sim.fw.later = nil, nil
	old.closeListeners() // close-on-exec; the state holds their duplicates
	for _, c := range sim.callers {
		if c.answers == 0 && c.cut == "" {
			c.cut = "the exec"
		}
	}
	sim.images++
	st := x.st
	s := sim.up(&st, invRoundTrip, "the new image's ")
	after, made, err := s.handoffState(nil)
	for _, fd := range made {
		unix.Close(fd)
	}
	if err != nil {
		sim.fail(invRoundTrip, "the new image's state: %v", err)
	}
	if diff := gocmp.Diff(simNormal(st), simNormal(after), gocmp.Exporter(func(reflect.Type) bool { return true }), cmpopts.EquateEmpty()); diff != "" {
		sim.fail(invRoundTrip, "the new image's state differs from the one handed over (-before +after):\n%s", diff)
	}
	sim.note("exec: image %d took over %d workers", sim.images+1, len(s.workers))
}

// simNormal is st with what may differ between two images' states that
// are the same left out: the fd numbers, and the orders maps give.
func simNormal(st handoffState) handoffState {
	for i := range st.Listeners {
		st.Listeners[i].FD = 0
	}
	for i := range st.Workers {
		sl := st.Slots[st.Workers[i].SlotAt]
		st.Workers[i].SlotAt = sl.Index
		if sl.Removed {
			st.Workers[i].SlotAt = -1 - sl.Index
		}
	}
	slices.SortFunc(st.Workers, func(a, b handoffWorker) int { return a.PID - b.PID })
	slices.SortFunc(st.Slots, func(a, b handoffSlot) int {
		return cmp.Or(cmpBool(a.Removed, b.Removed), a.Index-b.Index, a.PID-b.PID, a.Gen-b.Gen, strings.Compare(fmt.Sprint(a), fmt.Sprint(b)))
	})
	slices.SortFunc(st.Gens, func(a, b handoffGen) int { return a.Gen - b.Gen })
	return st
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// stepOnce is one step of the loop; an exec in it hands over.
func (sim *sim) stepOnce() (r stepResult) {
	defer func() {
		if e := recover(); e != nil {
			x, ok := e.(simExeced)
			if !ok {
				panic(e)
			}
			sim.takeOver(x)
			r = stepHandled
		}
	}()
	before := sim.readySlots()
	r = sim.s.step(sim.in)
	if r != stepEnded { // an idle step may have run what the last event deferred
		sim.check(before)
	}
	return r
}

// pending reports whether the loop has something ready.
func (sim *sim) pending() bool {
	s := sim.s
	if sim.in.ctxDone != nil && sim.in.ctx.Err() != nil {
		return true
	}
	return len(s.later) > 0 || len(s.events) > 0 || len(sim.sigs) > 0 || len(sim.tick) > 0 || (len(s.toStart) > 0 && !s.stopping)
}

// rest runs the loop until nothing is ready, then what waits off the loop
// (output ended, a memory reading) and the deaths of killed processes, one
// at a time, until nothing is left to happen without the schedule.
func (sim *sim) rest() {
	for i := 0; !sim.ended; i++ {
		if i > 100000 {
			sim.fail(invLivelock, "the loop is still busy after %d steps", i)
		}
		switch sim.stepOnce() {
		case stepEnded:
			sim.end()
			return
		case stepHandled:
			continue
		}
		if sim.pending() || sim.fw.offLoop() {
			continue
		}
		if pid := sim.nextDying(); pid != 0 {
			sim.exit(pid, unix.WaitStatus(syscall.SIGKILL))
			continue
		}
		return
	}
}

func (sim *sim) nextDying() int {
	for _, pid := range slices.Sorted(maps.Keys(sim.procs)) {
		if sp := sim.procs[pid]; sp.dying && !sp.exited {
			return pid
		}
	}
	return 0
}

// exit ends a process: its output ends, the loop gets SIGCHLD.
func (sim *sim) exit(pid int, ws unix.WaitStatus) {
	sp := sim.procs[pid]
	sp.exited = true
	if sp.p != nil {
		// Its output ends with it, or later: a child of its own may hold
		// the pipe (it ends at the next event, or when baton cuts it).
		if sim.rng.IntN(4) == 0 {
			sim.lingering = append(sim.lingering, sp.p)
		} else {
			sp.p.outputEnds()
		}
	} else if h := sim.s.helpers[pid]; h != nil {
		select { // the helper's output is read to its end before its exit is reaped
		case <-h.readDone:
		case <-time.After(10 * time.Second):
			sim.fail(invLivelock, "helper %d's output never ended", pid)
		}
	}
	sim.exits = append(sim.exits, pid)
	sim.exitWS[pid] = ws
	sim.sigs <- unix.SIGCHLD
}

// end is the loop's end: Run's finish, and no process may be left.
func (sim *sim) end() {
	sim.ended = true
	for _, p := range sim.lingering {
		p.outputEnds() // at the latest when the reader is cut (waitOutput's grace)
	}
	sim.s.finish()
	for _, pid := range slices.Sorted(maps.Keys(sim.procs)) {
		if sp := sim.procs[pid]; !sp.exited && !sp.dying {
			sim.fail(invLeftover, "pid %d (%v) runs on after baton's loop ended", pid, sp.argv)
		}
	}
	for _, c := range sim.callers {
		if c.answers == 0 && c.cut == "" {
			c.cut = "baton's exit"
		}
	}
	sim.note("baton exited: %v", sim.s.exitErr)
}

// readySlots is each slot's ready worker.
func (sim *sim) readySlots() map[*slot]int {
	m := map[*slot]int{}
	for _, sl := range sim.s.slots {
		if sl.w != nil && sl.w.State == stateReady {
			m[sl] = sl.w.pid
		}
	}
	return m
}

// check is the invariants after a step.
func (sim *sim) check(before map[*slot]int) {
	s := sim.s
	sim.checkCallers()
	if !s.leaving() {
		for _, sl := range slices.SortedFunc(maps.Keys(before), func(a, b *slot) int { return a.Index - b.Index }) {
			if pid := before[sl]; !sl.Removed && !sim.crashed[pid] && (sl.w == nil || sl.w.State != stateReady) {
				sim.fail(invFloor, "slot %d had ready worker %d and now has %s", sl.Index, pid, describeSlot(sl))
			}
		}
	}
	if s.stopping {
		for _, pid := range slices.Sorted(maps.Keys(s.workers)) {
			w := s.workers[pid]
			sp := sim.procs[pid]
			if w.State != stateDraining || !sp.stopped && !sp.dying && w.PendingSig == 0 {
				sim.fail(invSignalled, "worker %d is %s, signals %v, while baton stops", pid, w.State, sp.p.signals)
			}
		}
	}
	if len(s.Crashes) > s.cfg.CrashLimit.N && !s.stopping {
		sim.fail(invCrashLimit, "%d crashes within %s and baton does not stop (--crash-limit %d)", len(s.Crashes), s.cfg.CrashLimit.Per, s.cfg.CrashLimit.N)
	}
}

func describeSlot(sl *slot) string {
	if sl.w == nil {
		return "none"
	}
	return fmt.Sprintf("worker %d of generation %d, %s", sl.w.pid, sl.w.spec.gen, sl.w.State)
}

// checkCallers takes the answers that came, and checks each.
func (sim *sim) checkCallers() {
	s := sim.s
	for _, c := range sim.callers {
		for {
			var got string
			select {
			case res := <-c.rollout:
				got = fmt.Sprintf("%s %v", res.r.State, res.err)
				if (res.err == nil) != (res.r.State == phaseOK.String()) {
					sim.fail(invTruthful, "caller %d (%s) got state %q with error %v", c.id, c.what, res.r.State, res.err)
				}
				if res.err == nil {
					r := res.r
					c.ok = &r
					for _, sl := range s.slots {
						// A slot left serving another generation by a
						// rollback that could not bring its own back is
						// being brought back (convergeSlots): allowed once
						// a try has failed (it is tried again after its
						// hold), never before the first.
						held := sl.w != nil && sl.w.spec != sl.spec && !sl.RecycleHold.IsZero()
						if sl.spec.gen != r.To || sl.w != nil && sl.w.spec != sl.spec && !held {
							sim.fail(invTruthful, "caller %d (%s) told ok, generation %d, but slot %d is of generation %d (%s)", c.id, c.what, r.To, sl.Index, sl.spec.gen, describeSlot(sl))
						}
					}
					if r.Workers > 0 && r.Workers != len(s.slots) {
						sim.fail(invTruthful, "caller %d (%s) told ok, %d workers, but there are %d slots", c.id, c.what, r.Workers, len(s.slots))
					}
				}
			case err := <-c.upgrade:
				got = fmt.Sprintf("%v", err)
			case st := <-c.stop:
				got = st.Doing
			default:
			}
			if got == "" {
				break
			}
			c.answers++
			sim.note("caller %d (%s) answered: %s", c.id, c.what, got)
			if c.answers > 1 {
				sim.fail(invAnswered, "caller %d (%s) answered %d times", c.id, c.what, c.answers)
			}
		}
	}
}

// ask posts a control request to the loop, as the control socket does.
func (sim *sim) ask(what string, f func(c *simCaller)) {
	c := &simCaller{id: len(sim.callers) + 1, what: what, event: sim.event,
		rollout: make(chan rolloutResult, 4), upgrade: make(chan error, 4), stop: make(chan control.Stopping, 4)}
	sim.callers = append(sim.callers, c)
	s := sim.s
	if !s.post(func() { f(c) }) {
		c.cut = "baton's exit"
	}
	sim.rest()
}

// post runs f on the loop, as a notify reader or a timer does.
func (sim *sim) post(f func()) {
	sim.s.post(f)
	sim.rest()
}

func (sim *sim) note(format string, args ...any) {
	sim.trace = append(sim.trace, fmt.Sprintf("  [%d] +%s %s", sim.event, sim.fw.clock.now.Sub(time.Unix(1e9, 0)), fmt.Sprintf(format, args...)))
}

// pick is the a-th (modulo) of the pids that fit, in order; 0 if none.
func (sim *sim) pick(a int, fits func(w *proc) bool) int {
	var pids []int
	for _, pid := range slices.Sorted(maps.Keys(sim.s.workers)) {
		if w := sim.s.workers[pid]; fits(w) && !sim.procs[pid].dying {
			pids = append(pids, pid)
		}
	}
	if len(pids) == 0 {
		return 0
	}
	return pids[a%len(pids)]
}

// play plays one event, then lets the loop rest.
func (sim *sim) play(e simEvent) {
	s := sim.s
	sim.note("%s  | %s", e, sim.summary())
	if len(sim.lingering) > 0 && e.kind != evTime { // the time for outputGrace to pass
		for _, p := range sim.lingering {
			p.outputEnds()
		}
		sim.lingering = nil
		sim.rest()
	}
	switch e.kind {
	case evTime:
		sim.advance(e.d)
	case evReady:
		if pid := sim.pick(e.a, func(w *proc) bool { return w.State == stateStarting }); pid != 0 {
			sim.post(func() { s.onNotify(pid, notify.Message{"READY": "1"}) })
		}
	case evCrash:
		if pid := sim.pick(e.a, func(*proc) bool { return true }); pid != 0 {
			sim.crashed[pid] = true
			ws := []unix.WaitStatus{1 << 8, 0, unix.WaitStatus(syscall.SIGSEGV)}[e.b%3]
			sim.exit(pid, ws)
			sim.rest()
		}
	case evDrained:
		if pid := sim.pick(e.a, func(w *proc) bool { return w.State == stateDraining && sim.procs[w.pid].stopped }); pid != 0 {
			sim.exit(pid, 0)
			sim.rest()
		}
	case evNotify:
		pid := sim.pick(e.a, func(*proc) bool { return true })
		m := []notify.Message{{"STATUS": "serving"}, {"WATCHDOG": "1"}, {"READY": "1"}, {"READY": "1"}}[e.b%4]
		if e.b%4 == 2 || pid == 0 {
			pid = 1 // not one of baton's workers
		}
		sim.post(func() { s.onNotify(pid, m) })
	case evMemory:
		sim.hot = 0
		if e.b == 0 {
			sim.hot = sim.pick(e.a, func(w *proc) bool { return w.State == stateReady })
		}
	case evHelper:
		var pids []int
		for _, pid := range slices.Sorted(maps.Keys(s.helpers)) {
			if !sim.procs[pid].dying {
				pids = append(pids, pid)
			}
		}
		if len(pids) > 0 {
			sim.exit(pids[e.a%len(pids)], unix.WaitStatus(e.b<<8))
			sim.rest()
		}
	case evReload:
		switch e.b % 3 {
		case 1:
			sim.cfg.Env = []string{fmt.Sprintf("RELEASE=%d", sim.event)}
		case 2:
			sim.cfg.Workers = 1 + e.a%4
		}
		sim.ask("reload", func(c *simCaller) { s.requestRollout(c.rollout) })
	case evAwaitReload:
		sim.ask("await-reload", func(c *simCaller) { s.awaitRollout(c.rollout) })
	case evScale:
		sim.ask(fmt.Sprintf("scale %d", e.b), func(c *simCaller) { s.requestScale(e.b, c.rollout) })
	case evRecycle:
		sim.ask(e.String(), func(c *simCaller) { s.requestRecycle(e.a%5, e.b == 1, c.rollout) })
	case evRollback:
		sim.ask("rollback", func(c *simCaller) { s.requestRollback(c.rollout) })
	case evUpgrade:
		sim.ask("upgrade", func(c *simCaller) { s.requestUpgrade(nil, c.upgrade) })
	case evStop:
		sim.ask("stop", func(c *simCaller) { s.stopRequest(c.stop) })
	case evStatus:
		sim.post(func() { s.snapshot() })
	case evSignal:
		sim.sigs <- simSignals[e.b%len(simSignals)]
		sim.rest()
	case evShutListener:
		if len(s.listeners) > 0 {
			unix.Shutdown(s.listeners[0].FD(), unix.SHUT_RD)
			if e.b%2 == 0 { // else the check at the next worker's readiness finds it
				sim.tick <- sim.fw.clock.now
				sim.rest()
			}
		}
	case evPinFails:
		sim.pinFail = true
	case evExecFails:
		sim.execFail = true
	case evCancel:
		sim.cancel()
		sim.rest()
	}
}

// advance moves the clock by d, firing each timer and output wait that
// comes due in order, the loop resting after each.
func (sim *sim) advance(d time.Duration) {
	c := &sim.fw.clock
	target := c.now.Add(d)
	for i := 0; !sim.ended; i++ {
		if i > 10000 {
			sim.fail(invLivelock, "timers keep coming due")
		}
		c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
			gone := t.stopped || t.fired
			if gone {
				t.unlisted = true
			}
			return gone
		})
		var next *fakeTimer
		for _, t := range c.timers {
			if !t.at.After(target) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		at := target
		if next != nil {
			at = next.at
		}
		for _, w := range sim.fw.watches {
			if w.at.Before(at) {
				at, next = w.at, nil
			}
		}
		if at.After(c.now) {
			c.now = at
		}
		if next != nil {
			next.fired = true
			next.f()
		}
		sim.rest()
		if next == nil && !c.now.Before(target) {
			return
		}
	}
}

// summary is the state in a few words, for the trace.
func (sim *sim) summary() string {
	s := sim.s
	var b strings.Builder
	for _, sl := range s.slots {
		fmt.Fprintf(&b, "%d:", sl.spec.gen)
		for _, w := range []*proc{sl.w, sl.next} {
			if w == nil {
				b.WriteString("-")
				continue
			}
			fmt.Fprintf(&b, "%d%c", w.pid, w.State[0])
		}
		b.WriteString(" ")
	}
	draining := 0
	for _, w := range s.workers {
		if w.State == stateDraining {
			draining++
		}
	}
	fmt.Fprintf(&b, "draining %d", draining)
	if s.rollout != nil {
		fmt.Fprintf(&b, ", rollout %s", s.rollout.phase)
	}
	if s.stopping {
		b.WriteString(", stopping")
	} else if s.lameDuck != nil {
		b.WriteString(", lame duck")
	}
	if s.upgrading {
		b.WriteString(", upgrading")
	}
	return b.String()
}

// heal is the world at peace once the schedule has ended: every starting
// worker becomes ready, every helper exits 0, every told worker drains,
// memory falls, time moves on; the service must come to rest in the state
// its last request asked for, or stop if it was stopping.
func (sim *sim) heal() {
	sim.note("heal  | %s", sim.summary())
	sim.hot = 0
	for i := 0; i < 400 && !sim.ended; i++ {
		s := sim.s
		if !s.leaving() && sim.settled() {
			sim.checkSettled()
			return
		}
		if pid := sim.pick(0, func(w *proc) bool { return w.State == stateStarting }); pid != 0 {
			sim.post(func() { s.onNotify(pid, notify.Message{"READY": "1"}) })
			continue
		}
		if pid := sim.pick(0, func(w *proc) bool { return w.State == stateDraining && sim.procs[w.pid].stopped }); pid != 0 {
			sim.exit(pid, 0)
			sim.rest()
			continue
		}
		if pids := slices.Sorted(maps.Keys(s.helpers)); len(pids) > 0 && !sim.procs[pids[0]].dying {
			sim.exit(pids[0], 0)
			sim.rest()
			continue
		}
		sim.advance(time.Second)
	}
	if !sim.ended {
		s := sim.s
		var mixed []string
		for _, sl := range s.slots {
			if sl.w != nil && sl.w.spec != sl.spec {
				mixed = append(mixed, fmt.Sprintf("slot %d of generation %d serves worker %d of %d (hold until +%s)", sl.Index, sl.spec.gen, sl.w.pid, sl.w.spec.gen, sl.RecycleHold.Sub(time.Unix(1e9, 0))))
			}
		}
		sim.fail(invQuiescence, "not at rest after the schedule: %s; %d recycles queued, upgrading %v, deferred %v, %d helpers, %d awaiting; %s",
			sim.summary(), len(s.recycles), s.upgrading, s.upgradeDeferred, len(s.helpers), len(s.requests.awaiting), strings.Join(mixed, "; "))
	}
}

// settled reports whether nothing is under way.
func (sim *sim) settled() bool {
	s := sim.s
	if s.rollout != nil || len(s.recycles) > 0 || s.upgrading || s.upgradeDeferred || len(s.helpers) > 0 || len(s.requests.awaiting) > 0 {
		return false
	}
	for _, w := range s.workers {
		if w.State != stateReady {
			return false
		}
	}
	for _, sl := range s.slots {
		if sl.w == nil || sl.w.State != stateReady || sl.w.spec != sl.spec {
			return false
		}
	}
	return true
}

// checkSettled is the state at rest: every slot serves the serving
// generation, the last ok request's size holds, every caller has heard.
func (sim *sim) checkSettled() {
	s := sim.s
	sim.checkCallers()
	for _, sl := range s.slots {
		if sl.spec != s.serving || sl.w.spec != s.serving {
			sim.fail(invQuiescence, "slot %d serves generation %d (worker %d of %d), the serving one is %d", sl.Index, sl.spec.gen, sl.w.pid, sl.w.spec.gen, s.serving.gen)
		}
	}
	if l := s.Last; l != nil {
		want := l.Workers
		if l.State != phaseOK.String() {
			want = l.WorkersFrom
		}
		if want > 0 && len(s.slots) != want {
			sim.fail(invQuiescence, "%d slots at rest; the last rollout (%s %s) left %d", len(s.slots), l.Kind, l.State, want)
		}
	}
	for _, c := range sim.callers {
		if c.answers == 0 && c.cut == "" {
			sim.fail(invAnswered, "caller %d (%s, at event %d) never answered", c.id, c.what, c.event)
		}
	}
	if len(s.requests.waiters) > 0 || len(s.requests.own) > 0 || s.requests.again || s.wantSize > 0 {
		sim.fail(invQuiescence, "requests left at rest: %d waiting, %d own, again %v, size %d", len(s.requests.waiters), len(s.requests.own), s.requests.again, s.wantSize)
	}
	sim.note("at rest | %s", sim.summary())
}

// simShrink drops events from a failing schedule while it still fails the
// same invariant, chunks first, then one at a time. It returns the indices
// of the events kept.
func simShrink(seed uint64, setup simSetup, events []simEvent, keep []int, invariant string, budget int) []int {
	fails := func(k []int) bool {
		budget--
		f, _, _ := simRun(seed, setup, simPick(events, k), false)
		return f != nil && f.invariant == invariant
	}
	for n := len(keep) / 2; n >= 1 && budget > 0; n /= 2 {
		for i := 0; i+n <= len(keep) && budget > 0; {
			try := slices.Concat(keep[:i], keep[i+n:])
			if fails(try) {
				keep = try
			} else {
				i += n
			}
		}
	}
	return keep
}

func simPick(events []simEvent, keep []int) []simEvent {
	out := make([]simEvent, len(keep))
	for i, k := range keep {
		out[i] = events[k]
	}
	return out
}

// simReport runs seed (only the events keep names, if not nil); on a
// failure it shrinks the schedule and says all a replay needs. It returns
// the failure.
func simReport(t *testing.T, seed uint64, keep []int, verbose bool) *simFailure {
	t.Helper()
	setup, events := simSchedule(seed)
	if keep == nil {
		for i := range events {
			keep = append(keep, i)
		}
	}
	f, at, trace := simRun(seed, setup, simPick(events, keep), verbose)
	if verbose {
		t.Logf("seed %d: %s; %d events\n%s", seed, setup, len(keep), strings.Join(trace, "\n"))
	}
	if f == nil {
		return nil
	}
	shrunk := simShrink(seed, setup, events, keep[:min(at+1, len(keep))], f.invariant, 2000)
	sf, sat, strace := simRun(seed, setup, simPick(events, shrunk), false)
	if sf == nil { // not expected: a schedule plays the same every time
		shrunk, sf, sat, strace = keep, f, at, trace
	}
	var evs, idx []string
	for _, k := range shrunk {
		evs = append(evs, fmt.Sprintf("  %d. %s", k, events[k]))
		idx = append(idx, fmt.Sprint(k))
	}
	t.Errorf("simulator, seed %d: %s\n  at event %d of %d: %s\n  setup: %s\n  shrunk to %d events (fails at %d: %s):\n%s\n  its trace:\n%s\n  replay: go test ./internal/supervisor -run 'TestSim$' -sim.seed=%d -v [-sim.events=%s]",
		seed, f.invariant, at, len(keep), f.detail, setup, len(shrunk), sat, sf.detail, strings.Join(evs, "\n"), strings.Join(lastLines(strace, 60), "\n"), seed, strings.Join(idx, ","))
	return f
}

func lastLines(lines []string, n int) []string { return lines[max(0, len(lines)-n):] }

// TestSim runs the simulator on the regression seeds, then on -sim.seeds
// seeds from -sim.first (or on -sim.seed alone).
func TestSim(t *testing.T) {
	if *simSeed != 0 {
		var keep []int
		for f := range strings.SplitSeq(*simEvents, ",") {
			if f != "" {
				k, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("-sim.events %q: %v", *simEvents, err)
				}
				keep = append(keep, k)
			}
		}
		simReport(t, *simSeed, keep, true)
		return
	}
	for _, seed := range simRegressions {
		simReport(t, seed, nil, false)
	}
	n := *simSeeds
	if n == 0 {
		n = 30000
		if testing.Short() || raceEnabled {
			// The simulator runs on one goroutine: the race detector finds
			// nothing in it and makes each seed some 10 times slower.
			n = 3000
		}
	}
	start, failed := time.Now(), 0
	for seed := *simFirst; seed < *simFirst+uint64(n); seed++ {
		if simReport(t, seed, nil, false) != nil {
			if failed++; failed >= *simMaxFail {
				t.Fatalf("stopping after %d failing seeds (%d schedules run)", failed, seed-*simFirst+1)
			}
		}
	}
	t.Logf("%d seeds from %d in %s", n, *simFirst, time.Since(start).Round(time.Millisecond))
}

// TestSimDeterministic: a seed replays exactly, which replays and the
// shrinking rest on.
func TestSimDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		setup, events := simSchedule(seed)
		f1, at1, t1 := simRun(seed, setup, events, false)
		f2, at2, t2 := simRun(seed, setup, events, false)
		if !slices.Equal(t1, t2) || at1 != at2 || (f1 == nil) != (f2 == nil) {
			for i := range min(len(t1), len(t2)) {
				if t1[i] != t2[i] {
					t.Fatalf("seed %d runs differently the second time, from line %d:\n%s\n%s", seed, i, t1[i], t2[i])
				}
			}
			t.Fatalf("seed %d runs differently the second time (%d and %d lines)", seed, len(t1), len(t2))
		}
	}
}
