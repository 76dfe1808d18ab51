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
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
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
)

// outputGrace is how long, after the last worker exited, baton keeps reading
// output that the workers' own leftover children may still write.
const outputGrace = time.Second

// tailGrace is how long an abort waits for a failed worker's last output.
const tailGrace = 200 * time.Millisecond

// Supervisor is one `baton run`.
type Supervisor struct {
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

	events chan func()
	later  []func() // run by the loop after the current event
	done   chan struct{}

	serving   *genSpec // the last generation that served in every slot
	lastGen   int      // the highest generation number given out
	slots     []*slot
	workers   map[int]*proc   // every live worker we started, by pid
	helpers   map[int]*helper // every live helper command (--check), by pid
	rollout   *rollout        // the rollout in progress, if any
	last      *control.Rollout
	lastEnded time.Time
	awaiting  []chan<- rolloutResult // await-reload callers, for the next rollout
	exited    []*worker.Process
	crashes   []time.Time
	readySent bool
	stopping  bool
	stopSigs  int    // stop signals received
	status    string // last STATUS= sent
	exitErr   error
}

type slot struct {
	index    int
	w        *proc    // the worker serving in this slot
	next     *proc    // its replacement, while a rollout brings one up
	spec     *genSpec // the generation this slot serves; crash restarts use it
	restarts int
	backoff  time.Duration
	restart  *time.Timer
}

type procState string

const (
	stateStarting procState = "starting"
	stateReady    procState = "ready"
	stateDraining procState = "draining"
)

// proc is the loop's record of one worker process.
type proc struct {
	p        *worker.Process
	slot     *slot
	spec     *genSpec
	state    procState
	exited   bool
	failed   string // why baton killed it while starting
	status   string // its own STATUS=
	deadline time.Time
	timers   []*time.Timer
	cancel   context.CancelFunc // stops a readiness probe

	wdInterval time.Duration // the worker's watchdog; 0 is off
	wdTimer    *time.Timer
	lastPing   time.Time
}

// New returns a Supervisor ready to Run. load gives the configuration, at
// start and again at every rollout (a config file is re-read, say); an error
// at start is returned, an error at a rollout aborts the rollout.
func New(load func() (Config, error)) (*Supervisor, error) {
	cfg, err := load()
	if err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find baton's own binary: %w", err)
	}
	return &Supervisor{
		exe:     exe,
		cfg:     cfg,
		reload:  load,
		log:     log,
		source:  map[*activation.Listener]string{},
		baseEnv: worker.Env(os.Environ(), cfg.Output != nil),
		events:  make(chan func(), 64),
		done:    make(chan struct{}),
		workers: map[int]*proc{},
		helpers: map[int]*helper{},
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

	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGCHLD, unix.SIGUSR2)
	defer signal.Stop(sigs)

	s.started = time.Now()
	handoff, err := readHandoff()
	if err != nil {
		return err
	}
	sd, err := notify.FromEnv()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.sd = sd
	var wdTick <-chan time.Time
	if sd != nil {
		interval, err := notify.WatchdogInterval(os.Getenv, os.Getpid())
		if err != nil {
			return err
		}
		if interval > 0 {
			t := time.NewTicker(interval / 2)
			defer t.Stop()
			wdTick = t.C
			s.log.Info("pinging systemd's watchdog", "every", interval/2)
		}
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		s.log.Warn("cannot become a child subreaper; orphans of workers go to init", "err", err)
	}
	if s.cfg.Control != "" {
		// Before any worker starts: a control socket that another baton
		// serves is an error with nothing to undo. After a re-exec, the old
		// image's socket is stale and replaced.
		srv, err := control.Listen(s.cfg.Control, s, s.log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	defer s.closeListeners()
	if handoff != nil {
		s.notifyDir = handoff.NotifyDir
	} else if s.notifyDir, err = makeNotifyDir(); err != nil {
		return err
	}
	defer os.RemoveAll(s.notifyDir) // not reached by an exec in place, which keeps it
	if handoff != nil {
		if err := s.adopt(handoff); err != nil {
			return err
		}
		s.pingSystemd()
		s.reap() // workers that exited during the exec
	} else if err := s.start(); err != nil {
		return err
	}
	s.updateStatus()

	ctxDone := ctx.Done()
	for {
		for len(s.later) > 0 {
			f := s.later[0]
			s.later = s.later[1:]
			f()
		}
		if s.stopping && len(s.workers) == 0 && len(s.helpers) == 0 {
			break
		}
		select {
		case sig := <-sigs:
			s.onSignal(sig.(syscall.Signal))
		case f := <-s.events:
			f()
		case <-wdTick:
			s.pingSystemd()
		case <-ctxDone:
			ctxDone = nil
			s.log.Info("stop requested", "reason", context.Cause(ctx))
			s.beginStop()
		}
	}
	close(s.done)
	s.waitOutput()
	if s.exitErr == nil {
		s.log.Info("stopped")
	}
	return s.exitErr
}

// makeNotifyDir makes the private directory of the workers' notification
// sockets: under systemd's RuntimeDirectory= when there is one, else in the
// temporary directory. Path sockets, as systemd's own NOTIFY_SOCKET is:
// some libraries cannot address an abstract socket.
func makeNotifyDir() (string, error) {
	if rd := os.Getenv("RUNTIME_DIRECTORY"); rd != "" {
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
	s.storeListeners()
	s.lastGen = 1
	s.serving = &genSpec{gen: 1, cfg: s.cfg}
	s.slots = make([]*slot, s.cfg.Workers)
	for i := range s.slots {
		s.slots[i] = &slot{index: i, spec: s.serving, backoff: s.cfg.RestartBackoff.Min}
	}
	s.log.Info("starting", "workers", s.cfg.Workers, "gen", 1, "command", s.cfg.Command, "ready", s.cfg.Ready.String())
	for _, sl := range s.slots {
		sl.w = s.startWorker(sl, sl.spec)
		if sl.w == nil {
			s.onCrash(sl, 0)
		}
	}
	return nil
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

// soon runs f on the loop once the current event is handled. Unlike post,
// the loop itself may call it.
func (s *Supervisor) soon(f func()) { s.later = append(s.later, f) }

// after runs f on the loop after d, unless the loop has ended.
func (s *Supervisor) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { s.post(f) })
}

func (s *Supervisor) onSignal(sig syscall.Signal) {
	switch sig {
	case unix.SIGCHLD:
		s.reap()
	case unix.SIGTERM, unix.SIGINT:
		s.stopSigs++
		if s.stopSigs > 1 {
			s.log.Warn("second stop signal: killing all workers", "sig", sig.String())
			for _, w := range s.workers {
				w.p.Kill()
			}
			return
		}
		s.log.Info("stop requested", "sig", sig.String())
		s.beginStop()
	case unix.SIGHUP:
		s.log.Info("rollout requested", "sig", sig.String())
		s.requestRollout(nil)
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
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
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

// startWorker starts a worker of spec's generation for sl; the caller puts
// it in place (sl.w, or sl.next during a rollout). It returns nil when the
// process could not be started, which was logged.
func (s *Supervisor) startWorker(sl *slot, spec *genSpec) *proc {
	cfg := spec.cfg
	p, err := worker.Start(worker.Spec{
		ShimPath:   cfg.ShimPath,
		ShimArgv:   cfg.ShimArgv,
		Command:    cfg.Command,
		Env:        workerEnv(s.baseEnv, cfg),
		Listeners:  s.listeners,
		Slot:       sl.index,
		Generation: spec.gen,
		Output:     s.cfg.Output,
		NotifyDir:  s.notifyDir,
		OnNotify:   s.onNotifyFunc(),
		Logger:     s.log,
	})
	if err != nil {
		s.log.Error("worker start failed", "slot", sl.index, "gen", spec.gen, "err", err)
		return nil
	}
	w := &proc{p: p, slot: sl, spec: spec, state: stateStarting, wdInterval: cfg.Watchdog}
	s.workers[p.PID] = w
	s.log.Info("worker started", "slot", sl.index, "pid", p.PID, "gen", spec.gen)
	s.awaitReady(w)
	return w
}

// onNotify returns the callback that posts a worker's notifications into
// the loop.
func (s *Supervisor) onNotifyFunc() func(*worker.Process, notify.Message) {
	return func(p *worker.Process, m notify.Message) {
		s.post(func() { s.onNotify(p.PID, m) })
	}
}

// awaitReady arms what decides a starting worker's readiness: the ready
// timeout (counted from its start) and its generation's readiness mode.
func (s *Supervisor) awaitReady(w *proc) {
	cfg := w.spec.cfg
	sl, p := w.slot, w.p
	w.timers = append(w.timers, s.after(time.Until(p.Started.Add(cfg.ReadyTimeout)), func() {
		if w.state == stateStarting && !w.exited {
			w.failed = fmt.Sprintf("not ready within --ready-timeout %s", cfg.ReadyTimeout)
			s.log.Error("worker not ready in time: killing it", "slot", sl.index, "pid", p.PID, "gen", w.spec.gen, "timeout", cfg.ReadyTimeout)
			w.p.Kill()
		}
	}))
	switch cfg.Ready.Kind {
	case ReadyExec:
		// Deferred, not called: the caller has not put the worker in place yet.
		s.soon(func() { s.onReady(w) })
	case ReadyDelay:
		w.timers = append(w.timers, s.after(time.Until(p.Started.Add(cfg.Ready.Delay)), func() { s.onReady(w) }))
	case ReadyHTTP:
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		url := cfg.Ready.ProbeURL(sl.index, p.PID)
		go probe(ctx, url, func() { s.post(func() { s.onReady(w) }) })
	}
}

func (s *Supervisor) onNotify(pid int, m notify.Message) {
	w := s.workers[pid]
	if w == nil {
		return // exited since
	}
	if st, ok := m["STATUS"]; ok {
		w.status = st
	}
	if m.Is("STOPPING", "1") {
		s.log.Info("worker stopping", "slot", w.slot.index, "pid", pid)
	}
	if _, ok := m["WATCHDOG"]; ok || m["WATCHDOG_USEC"] != "" {
		s.onWatchdogMessage(w, m)
	}
	if m.Is("READY", "1") {
		s.onReady(w)
	}
}

func (s *Supervisor) onReady(w *proc) {
	if w.exited || w.state != stateStarting {
		return
	}
	w.state = stateReady
	if w.cancel != nil {
		w.cancel()
	}
	s.armWatchdog(w)
	s.log.Info("worker ready", "slot", w.slot.index, "pid", w.p.PID, "gen", w.p.Generation,
		"after", time.Since(w.p.Started).Round(time.Millisecond))
	if w.slot.next == w && s.rollout != nil {
		s.rollout.onReady(s, w)
	}
	if !s.readySent && !s.stopping && s.readyCount() == len(s.slots) {
		s.readySent = true
		s.status = s.statusLine()
		if err := s.sd.Send("READY=1\nSTATUS=" + s.status); err != nil {
			s.log.Error("notify systemd", "err", err)
		}
		s.log.Info("service ready", "workers", len(s.slots), "gen", s.serving.gen)
	}
	s.updateStatus()
}

func (s *Supervisor) readyCount() int {
	n := 0
	for _, sl := range s.slots {
		if sl.w != nil && sl.w.state == stateReady {
			n++
		}
	}
	return n
}

func (s *Supervisor) onExit(w *proc, ws unix.WaitStatus) {
	w.exited = true
	delete(s.workers, w.p.PID)
	for _, t := range w.timers {
		t.Stop()
	}
	if w.cancel != nil {
		w.cancel()
	}
	w.p.Exited()
	s.keepForOutput(w.p)
	sl := w.slot
	wasNext := sl.next == w
	if sl.w == w {
		sl.w = nil
	}
	if wasNext {
		sl.next = nil
	}
	how := describeExit(ws)
	reason := how
	if w.failed != "" {
		reason = w.failed
	}
	switch {
	case w.state == stateDraining:
		s.log.Info("worker stopped", "slot", sl.index, "pid", w.p.PID, "gen", w.p.Generation, "exit", how)
	case s.rollout != nil && (wasNext || w.spec == s.rollout.to):
		// A worker of the generation being rolled out failed: that aborts
		// the rollout, and never counts against the serving generation's
		// crash limit.
		s.log.Error("new worker failed", "slot", sl.index, "pid", w.p.PID, "gen", w.p.Generation, "exit", how, "reason", reason)
		// The reason quotes the worker's last output lines, which may still
		// be in the pipe when the exit is reaped: give them a moment.
		r := s.rollout
		r.pending++ // the rollout cannot end ok while this is on its way
		go func() {
			select {
			case <-w.p.Done():
			case <-time.After(tailGrace):
			}
			s.post(func() {
				r.pending--
				if s.rollout == r {
					r.onFailure(s, w, reason)
				} else if sl.w == nil && sl.next == nil && !s.stopping {
					s.onCrash(sl, time.Since(w.p.Started)) // the rollout was ended by a stop
				}
			})
		}()
	default:
		s.log.Error("worker exited unexpectedly", "slot", sl.index, "pid", w.p.PID, "gen", w.p.Generation,
			"exit", how, "reason", reason, "uptime", time.Since(w.p.Started).Round(time.Millisecond))
		s.onCrash(sl, time.Since(w.p.Started))
	}
	s.updateStatus()
}

// onCrash counts a crash against the limit and schedules the slot's restart.
func (s *Supervisor) onCrash(sl *slot, uptime time.Duration) {
	now := time.Now()
	kept := s.crashes[:0]
	for _, t := range s.crashes {
		if now.Sub(t) < s.cfg.CrashLimit.Per {
			kept = append(kept, t)
		}
	}
	s.crashes = append(kept, now)
	if len(s.crashes) > s.cfg.CrashLimit.N {
		if s.exitErr == nil {
			s.exitErr = fmt.Errorf("%w: %d worker crashes within %s (--crash-limit %d/%s)",
				ErrCrashLimit, len(s.crashes), s.cfg.CrashLimit.Per, s.cfg.CrashLimit.N, s.cfg.CrashLimit.Per)
			s.log.Error("crash limit reached: stopping", "crashes", len(s.crashes), "within", s.cfg.CrashLimit.Per)
		}
		s.beginStop()
		return
	}
	if s.stopping {
		return
	}
	if uptime >= s.cfg.RestartBackoff.Max {
		sl.backoff = s.cfg.RestartBackoff.Min // it had a healthy run
	}
	delay := sl.backoff
	sl.backoff = min(2*sl.backoff, s.cfg.RestartBackoff.Max)
	sl.restarts++
	s.log.Info("restarting worker", "slot", sl.index, "in", delay, "restarts", sl.restarts)
	sl.restart = s.after(delay, func() {
		sl.restart = nil
		if s.stopping || sl.w != nil || sl.next != nil {
			return // stopping, or a rollout has put a worker in the slot since
		}
		if sl.w = s.startWorker(sl, sl.spec); sl.w == nil {
			s.onCrash(sl, 0)
		}
		s.updateStatus()
	})
}

// beginStop asks every worker to drain; the loop ends when all have exited.
func (s *Supervisor) beginStop() {
	if s.stopping {
		return
	}
	s.stopping = true
	if s.rollout != nil {
		s.rollout.finish(s, errors.New("baton is stopping"))
	}
	if err := s.sd.Send("STOPPING=1"); err != nil {
		s.log.Error("notify systemd", "err", err)
	}
	s.log.Info("stopping", "workers", len(s.workers), "drain_timeout", s.cfg.DrainTimeout)
	for _, sl := range s.slots {
		if sl.restart != nil {
			sl.restart.Stop()
			sl.restart = nil
		}
	}
	for _, w := range s.workers {
		s.drain(w)
	}
	for _, h := range s.helpers {
		h.kill()
	}
	s.updateStatus()
}

// drain sends the stop signal and arms the SIGKILL deadline.
func (s *Supervisor) drain(w *proc) {
	if w.state == stateDraining {
		return
	}
	w.state = stateDraining
	w.deadline = time.Now().Add(w.spec.cfg.DrainTimeout)
	if err := w.p.Signal(w.spec.cfg.StopSignal); err != nil {
		s.log.Warn("stop signal", "slot", w.slot.index, "pid", w.p.PID, "err", err)
	}
	s.armDrainDeadline(w)
}

// armDrainDeadline SIGKILLs a draining worker at its deadline. Each worker
// drains under its own generation's settings.
func (s *Supervisor) armDrainDeadline(w *proc) {
	w.timers = append(w.timers, s.after(time.Until(w.deadline), func() {
		if !w.exited {
			s.log.Warn("drain deadline passed: killing worker", "slot", w.slot.index, "pid", w.p.PID, "gen", w.p.Generation, "timeout", w.spec.cfg.DrainTimeout)
			w.p.Kill()
		}
	}))
}

// keepForOutput remembers an exited worker until its output is drained.
func (s *Supervisor) keepForOutput(p *worker.Process) {
	kept := s.exited[:0]
	for _, q := range s.exited {
		select {
		case <-q.Done():
		default:
			kept = append(kept, q)
		}
	}
	s.exited = append(kept, p)
}

// waitOutput gives leftover output a moment, then stops reading it.
func (s *Supervisor) waitOutput() {
	grace := time.NewTimer(outputGrace)
	defer grace.Stop()
	expired := false
	for _, p := range s.exited {
		if !expired {
			select {
			case <-p.Done():
				continue
			case <-grace.C:
				expired = true
			}
		}
		p.CloseOutput()
		<-p.Done()
	}
}

func describeExit(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
