// Package supervisor runs baton's worker slots. One goroutine, the event
// loop in Run, owns all state: slots, workers, timers' effects, what systemd
// has been told. Everything else (signals, notify readers, timers, probes,
// control requests) posts closures into the loop and never touches state.
//
// The loop is also the process-wide reaper: on SIGCHLD it calls
// wait4(-1, WNOHANG) until nothing is left, so workers and any orphan
// re-parented to baton (it is a child subreaper) are reaped at once.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/listening"
	"github.com/batonsd/baton/internal/proctree"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

// Sentinel errors that callers map to exit codes.
var (
	// ErrCrashLimit: more worker crashes than --crash-limit allows.
	ErrCrashLimit = errors.New("crash limit reached")
	// ErrNoListener: no listening socket could be had.
	ErrNoListener = errors.New("no listener")
	// ErrCannotStart: at the first start, a worker could not be exec'd
	// with the configuration (its directory, its environment's size).
	ErrCannotStart = errors.New("workers cannot be started")
)

// closedChan is always ready to receive from.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// outputGrace is how long, after the last worker exited, baton keeps reading
// output that the workers' own leftover children may still write.
const outputGrace = time.Second

// tailGrace is how long an abort waits for a failed worker's last output.
const tailGrace = 200 * time.Millisecond

// Supervisor is one `baton run`.
type Supervisor struct {
	world     world                  // the environment, the clock, process start
	cfg       Config                 // the newest configuration
	reload    func() (Config, error) // re-reads it for a rollout
	log       *slog.Logger
	exe       string    // the binary an upgrade re-executes
	started   time.Time // when this image started
	notifyDir string    // where the workers' notification sockets live

	sd        *notify.Client // systemd; nil when not under a service manager
	listeners []*activation.Listener
	source    map[*activation.Listener]string // where each listener came from
	baseEnv   []string
	// underSystemd: systemd runs baton as a unit (INVOCATION_ID is set).
	underSystemd bool
	// fdLimit is RLIMIT_NOFILE (0 if unknown): it bounds the workers at
	// start and the draining ones after.
	fdLimit uint64

	sigs chan os.Signal  // what the loop acts on (see signals.go)
	ctl  *control.Server // the control socket; nil without one
	// metricsLn is the metrics endpoint's listener (--metrics); nil
	// without one.
	metricsLn *net.TCPListener
	// recovering reads the output pipes of a previous baton's workers.
	recovering sync.WaitGroup
	events     chan func()
	later      []func() // run by the loop after the current event
	done       chan struct{}

	serving *genSpec // the last generation that served in every slot
	// previous is the generation that served before serving, what `baton
	// rollback` rolls out again; nil until a rollout has replaced one.
	previous *genSpec
	slots    []*slot
	workers  map[int]*proc   // every live worker we started, by pid
	helpers  map[int]*helper // every live helper command (--check), by pid
	rollout  *rollout        // the rollout in progress, if any
	// recycles are the recycles asked for and not begun (recycle.go);
	// sampling, that the workers' memory is being read.
	recycles []recycleReq
	sampling bool
	// wantSize is a `baton scale` not begun yet (0: none);
	// pendingConfigured the configuration's workers at the reload in
	// progress (scale.go).
	wantSize, pendingConfigured int
	// requests are the callers waiting on rollouts (reload.go).
	requests rolloutRequests
	toStart  []*slot // slots of a fresh start not started yet
	exited   []process
	// upgradeDeferred: SIGUSR2 came during a rollout or the start; the
	// upgrade runs when that has ended.
	upgradeDeferred bool
	upgrading       bool // an upgrade asks the binary on disk for its protocol
	stopping        bool
	// lameDuck is the end of --lame-duck, armed while baton reports that it
	// stops and every worker still serves, at lameDuckEnds; nil otherwise.
	lameDuck     timer
	lameDuckEnds time.Time
	stopSigs     int    // stop signals received
	status       string // last STATUS= sent
	// sockets is what the listeners last said of themselves; socketProblems
	// the listeners that do not listen (sockets.go).
	sockets        map[*activation.Listener]sockState
	inodes         listening.Sockets // the listeners' inodes, for --ready listening
	socketProblems []string
	exitErr        error
	costs          costBook // earlier looks at CPU time, for status (resources.go)
	// adopted is baton's main thread's children list, kept open for the
	// left-behind search (escapees.go); nil until the first look.
	adopted *proctree.ChildrenFile
	supervisorKept
}

// supervisorKept is what the Supervisor hands over as it is at an in-place
// upgrade (handoff.go), like slotKept: every field exported for the JSON.
type supervisorKept struct {
	// ProcessStarted is when the process started, before any in-place
	// upgrade: its CPU time counts from then (the new image once showed
	// 57914% CPU, dividing it by its own age).
	ProcessStarted time.Time `json:"process_started"`
	// StartDir is the directory baton started in: the workers' directory
	// without --directory (pin.go). getcwd in a new image may name another
	// (a $PWD symlink that has moved on since) or none (a pruned release).
	StartDir string `json:"start_dir"`
	LastGen  int    `json:"last_gen"` // the highest generation number given out
	// ConfiguredWorkers is the configuration's workers at the last reload
	// that ended ok (or the start), so that a change made before an
	// upgrade still scales at the next reload (scale.go).
	ConfiguredWorkers int              `json:"configured_workers"`
	Last              *control.Rollout `json:"last,omitempty"` // the last rollout's result
	LastEnded         time.Time        `json:"last_ended,omitzero"`
	Crashes           []time.Time      `json:"crashes"` // recent crashes, for the crash limit
	ReadySent         bool             `json:"ready_sent"`
	Totals            control.Totals   `json:"totals"`
}

// New returns a Supervisor ready to Run. load gives the configuration, at
// start and again at every rollout (a config file is re-read, say); an error
// at start is returned, an error at a rollout aborts the rollout.
func New(load func() (Config, error)) (*Supervisor, error) { return newIn(realWorld(), load) }

func newIn(wd world, load func() (Config, error)) (*Supervisor, error) {
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	// The directory baton started in is where the workers work unless
	// --directory says otherwise. Getwd prefers $PWD when it names the same
	// directory, so a baton started in a `current` symlink follows it.
	startDir, err := wd.getwd()
	if err != nil {
		startDir = "" // a deleted directory: the workers inherit it, as before
	}
	// A re-executed image takes its generations, pinned, from the handoff:
	// what the directory or the files say now is for the next rollout, and
	// an error in them must not end a running service.
	if wd.getenv(handoffEnv) == "" {
		if err := wd.pin(&cfg, startDir); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	exe, err := wd.executable()
	if err != nil {
		return nil, fmt.Errorf("find baton's own binary: %w", err)
	}
	return &Supervisor{
		world: wd,
		exe:   exe,
		cfg:   cfg,
		// What the configuration says of workers at the start; a reload
		// that says otherwise scales.
		supervisorKept: supervisorKept{StartDir: startDir, ConfiguredWorkers: cfg.Workers},
		reload:         load,
		log:            log,
		source:         map[*activation.Listener]string{},
		baseEnv:        worker.Env(wd.environ(), cfg.Output != nil),
		underSystemd:   wd.getenv("INVOCATION_ID") != "",
		fdLimit:        openFileLimit(),
		events:         make(chan func(), 64),
		done:           make(chan struct{}),
		workers:        map[int]*proc{},
		helpers:        map[int]*helper{},
		sockets:        map[*activation.Listener]sockState{},
	}, nil
}

// Run starts every slot and supervises until stopped by SIGTERM or SIGINT,
// by ctx, or by the crash limit (ErrCrashLimit). A nil error means a stop on
// request.
func (s *Supervisor) Run(ctx context.Context) error {
	// Workers are forked from this thread with a parent-death signal, which
	// Linux ties to the forking thread: keep the loop on one thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	in, cleanUp, err := s.setUp(ctx)
	defer cleanUp()
	if err != nil {
		return err
	}
	for s.step(in) != stepEnded {
	}
	return s.finish()
}

// loopIn is what the loop waits on besides its own queues (events, the
// start queue).
type loopIn struct {
	ctx      context.Context
	ctxDone  <-chan struct{}
	wdTick   <-chan time.Time
	sockTick <-chan time.Time
	// idle, when ready, lets step return when no event is: nil (never
	// ready) in Run, which waits; a simulation that drives the loop itself
	// makes it ready.
	idle <-chan struct{}
}

// setUp readies the loop: signals, systemd, the control socket, the
// metrics endpoint, the notify directory, then adoption of an earlier
// image's workers or a fresh start. cleanUp undoes what was done, in
// reverse order, whether or not setUp failed; Run calls it last.
func (s *Supervisor) setUp(ctx context.Context) (in *loopIn, cleanUp func(), err error) {
	var undo []func()
	cleanUp = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	var stopSigs func()
	s.sigs, stopSigs = s.world.signals()
	undo = append(undo, stopSigs)

	s.started = s.now()
	s.ProcessStarted = s.started
	handoff, err := s.world.handoff()
	if err != nil {
		return nil, cleanUp, err
	}
	sd, err := s.world.systemd()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, cleanUp, err
	}
	s.sd = sd
	wdTick, stopWatchdog, err := s.watchdogTicker()
	if err != nil {
		return nil, cleanUp, err
	}
	undo = append(undo, stopWatchdog)
	if err := s.world.subreaper(); err != nil {
		s.log.Warn("cannot become a child subreaper; orphans of workers go to init", "err", err)
	}
	if err := s.openControl(handoff); err != nil {
		return nil, cleanUp, err
	}
	if s.ctl != nil {
		undo = append(undo, func() { s.ctl.Close() })
	}
	stopMetrics, err := s.serveMetrics(handoff)
	if err != nil {
		return nil, cleanUp, err
	}
	undo = append(undo, stopMetrics, s.closeListeners)
	if handoff != nil {
		s.notifyDir = handoff.NotifyDir
	} else if s.notifyDir, err = s.world.notifyDir(s.world.getenv); err != nil {
		return nil, cleanUp, err
	}
	// Not reached by an exec in place, which keeps it.
	undo = append(undo, func() { s.world.removeDir(s.notifyDir) })
	if handoff != nil {
		if err := s.adopt(handoff); err != nil {
			return nil, cleanUp, err
		}
		s.pingSystemd()
		s.reap() // workers that exited during the exec
	} else if err := s.start(); err != nil {
		return nil, cleanUp, err
	}
	s.updateStatus()
	s.checkListeners()
	s.armRecycleCheck()
	sockTick, stopSockTick := s.world.newTicker(listenCheck)
	undo = append(undo, stopSockTick)
	return &loopIn{ctx: ctx, ctxDone: ctx.Done(), wdTick: wdTick, sockTick: sockTick}, cleanUp, nil
}

// finish is what Run does once the loop has ended: what workers left
// behind is killed, their last output read.
func (s *Supervisor) finish() error {
	close(s.done)
	if s.adopted != nil {
		s.adopted.Close() // a /proc file read only: nothing to lose
	}
	s.killLeftovers()
	s.waitOutput()
	if s.exitErr == nil {
		s.log.Info("stopped")
	}
	return s.exitErr
}

// watchdogTicker ticks at half systemd's watchdog interval (WatchdogSec=),
// when there is one; stop stops it.
func (s *Supervisor) watchdogTicker() (tick <-chan time.Time, stop func(), err error) {
	if s.sd == nil {
		return nil, func() {}, nil
	}
	interval, err := notify.WatchdogInterval(s.world.getenv, os.Getpid())
	if err != nil || interval <= 0 {
		return nil, func() {}, err
	}
	tick, stop = s.world.newTicker(interval / 2)
	s.log.Info("pinging systemd's watchdog", "every", interval/2)
	return tick, stop, nil
}

// openControl opens the control socket, or adopts the one an old image
// handed over, with what queued on it during the exec.
func (s *Supervisor) openControl(handoff *handoffState) (err error) {
	switch {
	case handoff != nil && handoff.ControlFD >= 0:
		s.ctl, err = control.Adopt(handoff.ControlFD, s.cfg.Control, s, s.log)
	case s.cfg.Control != "":
		// Before any worker starts: a control socket that another baton
		// serves is an error with nothing to undo.
		s.ctl, err = control.Listen(s.cfg.Control, s, s.log)
	}
	return err
}

// What a step did.
type stepResult int

const (
	stepHandled stepResult = iota // an event, or what the last one deferred
	stepIdle                      // nothing was ready (in.idle only)
	stepEnded                     // baton has stopped: no worker or helper is left
)

// step is one turn of the event loop, where every change to the
// supervisor's state runs, one event at a time: it runs what the last
// event deferred (soon), ends the loop once baton has stopped and no
// worker or helper is left, and otherwise handles the next event, waiting
// for one unless in.idle is ready. Run calls it until the end; a
// simulation calls it between the events it makes (sim_fake_test.go).
func (s *Supervisor) step(in *loopIn) stepResult {
	for len(s.later) > 0 {
		f := s.later[0]
		s.later = s.later[1:]
		f()
	}
	if s.stopping && len(s.workers) == 0 && len(s.helpers) == 0 {
		return stepEnded
	}
	var startc <-chan struct{} // ready while slots wait to be started
	if len(s.toStart) > 0 && !s.stopping {
		startc = closedChan
	}
	select {
	case <-startc:
		s.startQueued()
	case sig := <-s.sigs:
		s.onSignal(sig.(syscall.Signal))
	case f := <-s.events:
		f()
	case <-in.wdTick:
		s.pingSystemd()
	case <-in.sockTick:
		s.checkListeners()
	case <-in.ctxDone:
		in.ctxDone = nil
		s.log.Info("stop requested", "reason", context.Cause(in.ctx))
		s.requestStop()
	case <-in.idle:
		return stepIdle
	}
	return stepHandled
}

// makeNotifyDir makes the private directory of the workers' notification
// sockets: under systemd's RuntimeDirectory= when there is one, else in the
// temporary directory. Path sockets, as systemd's own NOTIFY_SOCKET is:
// some libraries cannot address an abstract socket.
func makeNotifyDir(getenv func(string) string) (string, error) {
	if rd := getenv("RUNTIME_DIRECTORY"); rd != "" {
		first, _, _ := strings.Cut(rd, ":")
		dir := filepath.Join(first, "notify")
		os.RemoveAll(dir) // a crashed predecessor's sockets
		if err := os.Mkdir(dir, 0o700); err != nil {
			return "", fmt.Errorf("notify socket directory: %w", err)
		}
		return dir, nil
	}
	dir, err := os.MkdirTemp("", "baton-notify-")
	if err != nil {
		return "", fmt.Errorf("notify socket directory: %w", err)
	}
	return dir, nil
}

// start opens the listeners and starts every slot: a fresh start, not a
// re-exec.
func (s *Supervisor) start() error {
	if err := s.openListeners(); err != nil {
		return err
	}
	if err := checkFDLimit(s.cfg, len(s.listeners), s.fdLimit); err != nil {
		return err
	}
	s.storeListeners()
	s.makeSlots()
	return nil
}

// makeSlots makes generation 1 and its slots, queued to start.
func (s *Supervisor) makeSlots() {
	s.LastGen = 1
	s.serving = &genSpec{gen: 1, cfg: s.cfg}
	s.slots = make([]*slot, s.cfg.Workers)
	for i := range s.slots {
		s.slots[i] = &slot{slotKept: slotKept{Index: i, Backoff: s.cfg.RestartBackoff.Min}, spec: s.serving}
	}
	s.log.Info("starting", "workers", s.cfg.Workers, "gen", 1, "command", s.cfg.Command, "ready", s.cfg.Ready.String())
	s.toStart = append(s.toStart, s.slots...)
}

// startBatch is how many queued slots the loop starts before it looks at
// signals and requests again.
const startBatch = 8

// startQueued starts the next few slots of a fresh start. The loop calls
// it between events, so a SIGTERM while hundreds of workers start is acted
// on at once, and once stopping nothing more starts.
func (s *Supervisor) startQueued() {
	for i := 0; i < startBatch && len(s.toStart) > 0 && !s.stopping; i++ {
		sl := s.toStart[0]
		s.toStart = s.toStart[1:]
		if sl.w != nil || sl.next != nil {
			continue
		}
		s.fillSlot(sl)
	}
	s.updateStatus()
}

// post runs f on the loop. It reports false once the loop has ended.
func (s *Supervisor) post(f func()) bool {
	select {
	case s.events <- f:
		return true
	case <-s.done:
		return false
	}
}

// tell sends state to systemd (nothing without a service manager) and logs
// a failure: systemd not hearing a STATUS= or READY=1 is worth a line, never
// worth stopping for.
func (s *Supervisor) tell(state string) {
	if err := s.sd.Send(state); err != nil {
		s.log.Error("notify systemd", "err", err)
	}
}

// ErrShuttingDown answers requests that arrive after the loop has ended.
var ErrShuttingDown = errors.New("baton is shutting down")

// ask runs f on the loop with a reply channel and waits for its answer, or
// for ctx: how the control socket's requests reach the loop.
func ask[T any](ctx context.Context, s *Supervisor, f func(reply chan<- T)) (T, error) {
	reply := make(chan T, 1)
	var zero T
	if !s.post(func() { f(reply) }) {
		return zero, ErrShuttingDown
	}
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// soon runs f on the loop once the current event is handled. Unlike post,
// the loop itself may call it.
func (s *Supervisor) soon(f func()) { s.later = append(s.later, f) }

// after runs f on the loop after d, unless the loop has ended.
func (s *Supervisor) after(d time.Duration, f func()) timer {
	return s.world.afterFunc(d, func() { s.post(f) })
}

// timer is a call of after to come; Stop cancels it (it reports false when
// the call is already on its way), Reset makes it come d from now.
type timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// afterDone calls f on the loop once done is closed or, at the latest,
// after grace on the world's clock (then expired is true): the one way the
// loop waits for output, a worker's or a helper's, without being held by a
// process that keeps a pipe open.
func (s *Supervisor) afterDone(done <-chan struct{}, grace time.Duration, f func(expired bool)) {
	s.world.watch([]<-chan struct{}{done}, grace, func(expired bool) {
		s.post(func() { f(expired) })
	})
}

// stopTimer stops *t, if armed, and forgets it.
func stopTimer(t *timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

func (s *Supervisor) now() time.Time { return s.world.now() }

func (s *Supervisor) onSignal(sig syscall.Signal) {
	switch sig {
	case unix.SIGCHLD:
		s.reap()
	case unix.SIGTERM, unix.SIGINT:
		s.stopAsked(slog.String("sig", sig.String()))
	case unix.SIGHUP, unix.SIGUSR1:
		// SIGUSR1 too: unlike SIGHUP it survives a re-exec (signals.go).
		s.log.Info("rollout requested", "sig", sig.String())
		s.requestRollout(nil)
	case unix.SIGWINCH:
		// The marker of collectSignals, or a terminal's resize: nothing to do.
	case unix.SIGUSR2:
		s.log.Info("upgrade requested", "sig", sig.String())
		s.requestUpgrade(nil, nil)
	default:
		s.log.Warn("signal ignored: this baton cannot act on it yet", "sig", sig.String())
	}
}

// reap collects every exited child.
func (s *Supervisor) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := s.world.wait4(&ws)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children left; 0: none exited
		}
		if w := s.workers[pid]; w != nil {
			s.onExit(w, ws)
		} else if h := s.helpers[pid]; h != nil {
			s.onHelperExit(h, ws)
		} else {
			s.log.Debug("reaped orphan", "pid", pid, "exit", describeExit(ws))
		}
	}
}
