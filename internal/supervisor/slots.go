package supervisor

// The worker lifecycle within slots, run by the event loop: start a worker
// of a generation, decide when it is ready, handle its notifications and
// its exit (a crash restart after the backoff, or the crash limit), drain
// it under its deadline.

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/worker"
	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

type slot struct {
	slotKept
	w       *proc    // the worker serving in this slot
	next    *proc    // its replacement, while a rollout brings one up
	spec    *genSpec // the generation this slot serves; crash restarts use it
	restart timer
}

// slotKept is the part of a slot an in-place upgrade hands over as it is
// (handoff.go): every field is exported, for the JSON, and a field added
// here is handed over with no more code. The completeness test fails on a
// field added to slot that is neither here nor listed as not needed.
type slotKept struct {
	Index    int           `json:"index"`
	Restarts int           `json:"restarts"`
	Backoff  time.Duration `json:"backoff"`
	// StartErr is why the last start of a worker in this slot failed
	// before the worker's own program ran (baton's fork, pipes and sockets,
	// the shim's chdir and exec: worker.ExecError), until a start succeeds.
	StartErr string `json:"start_err,omitempty"`
	// Removed: a scale down took the slot away; nothing starts in it. Its
	// workers may still drain.
	Removed bool `json:"removed,omitempty"`
	// Recycles counts its workers replaced by recycling. The slot is not
	// recycled automatically, by memory or age, before RecycleHold, for the
	// reason HoldWhy (for status): its automatic recycle failed
	// (RecycleRetry, doubling). It is not recycled by memory before
	// MemHold, for the reason MemHoldWhy: its successor crossed the memory
	// ceiling within its warm-up (MemBackoff, doubling), or MemRecycles,
	// the automatic recycles by memory begun in the last hour, reached
	// their bound (recycle.go). A memory hold never holds an age recycle:
	// --recycle-after is a promise about age.
	Recycles     int           `json:"recycles,omitempty"`
	RecycleHold  time.Time     `json:"recycle_hold,omitzero"`
	HoldWhy      string        `json:"hold_why,omitempty"`
	RecycleRetry time.Duration `json:"recycle_retry,omitempty"`
	MemHold      time.Time     `json:"mem_hold,omitzero"`
	MemHoldWhy   string        `json:"mem_hold_why,omitempty"`
	MemBackoff   time.Duration `json:"mem_backoff,omitempty"`
	MemRecycles  []time.Time   `json:"mem_recycles,omitempty"`
}

type procState string

const (
	stateStarting procState = "starting"
	stateReady    procState = "ready"
	stateDraining procState = "draining"
)

// process is a worker process as the loop drives it: *worker.Process, or
// a fake in the tests (world.go).
type process interface {
	Info() worker.Info
	Signal(sig syscall.Signal) error
	Kill() error
	// Execd is closed once the worker runs its own program, Done once its
	// output is read to its end.
	Execd() <-chan struct{}
	Done() <-chan struct{}
	// Exited is told that the process was reaped.
	Exited()
	Tail() []string
	Warn(msg string, args ...any)
	NotifyAddr() string
	Handoff() (worker.Handoff, error)
	OutputStreams() []worker.Stream
	OutputFDs(f func(stream worker.Stream, fd int))
	CloseOutput()
}

// proc is the loop's record of one worker process.
type proc struct {
	procKept
	p       process
	pid     int
	started time.Time
	slot    *slot
	spec    *genSpec
	exited  bool
	timers  []timer
	cancel  context.CancelFunc // stops a readiness probe
	wdTimer timer
	// lastPing is the watchdog's last ping; the interval starts over at an
	// in-place upgrade.
	lastPing time.Time
}

// procKept is the part of a worker's record an in-place upgrade hands over
// as it is (handoff.go), like slotKept.
type procKept struct {
	State    procState `json:"state"`
	Failed   string    `json:"failed,omitempty"` // why baton killed it while starting
	Cause    string    `json:"cause,omitempty"`  // and that as a control.Cause* (the metrics' label)
	Status   string    `json:"status,omitempty"` // its own STATUS=
	Deadline time.Time `json:"deadline"`
	// DrainStart is when it was told to drain; Killed, that baton has
	// SIGKILLed it early (too many draining for the fd budget, limits.go).
	DrainStart time.Time `json:"drain_start,omitzero"`
	Killed     bool      `json:"killed,omitempty"`
	// PendingSig is held until the worker has exec'd (see signal).
	PendingSig syscall.Signal `json:"pending_sig,omitempty"`
	Watchdog   time.Duration  `json:"watchdog"` // the worker's watchdog; 0 is off

	// For recycling (recycle.go): its tree's last memory figure (0: none
	// yet), since when it is above the ceiling (zero: below it at the last
	// look), whether it crossed it within its warm-up as the successor of
	// a recycle by memory (and so backed its slot off, once; it stays set
	// when its memory drops: the recycle did not help), and its share of
	// the age limit's jitter.
	Memory          uint64    `json:"memory,omitempty"`
	MemErr          bool      `json:"mem_err,omitempty"` // a figure could not be read, and that was said
	ReadyAt         time.Time `json:"ready_at,omitzero"`
	OverSince       time.Time `json:"over_since,omitzero"`
	CrossedInWarmup bool      `json:"above_ceiling,omitempty"`
	MemSuccessor    bool      `json:"mem_successor,omitempty"` // it replaced a worker recycled by memory
	Jitter          float64   `json:"jitter,omitempty"`
}

// deathSignal is what a worker gets if baton dies (kill -9, OOM killer).
// Under systemd it is the worker's stop signal: the worker drains, finishing
// the requests it holds, while the socket waits in the FD store for the
// restarted baton; systemd's KillMode=control-group SIGKILLs whatever is
// left at TimeoutStopSec and only then restarts the service. Outside
// systemd nothing would enforce a deadline on such an orphan, so it is
// SIGKILL. INVOCATION_ID is how a process knows systemd runs it as a unit.
func (s *Supervisor) deathSignal(cfg Config) syscall.Signal {
	if s.underSystemd {
		return cfg.StopSignal
	}
	return syscall.SIGKILL
}

// startWorker starts a worker of spec's generation for sl; the caller puts
// it in place (sl.w, or sl.next during a rollout). It returns nil when the
// process could not be started, which was logged.
func (s *Supervisor) startWorker(sl *slot, spec *genSpec) *proc {
	cfg := spec.cfg
	p, err := s.world.start(worker.Spec{
		ShimPath:    cfg.ShimPath,
		ShimArgv:    cfg.ShimArgv,
		Command:     cfg.Command,
		Env:         workerEnv(s.baseEnv, cfg),
		Dir:         cfg.Directory,
		Listeners:   s.listeners,
		Slot:        sl.Index,
		Generation:  spec.gen,
		Output:      s.cfg.Output,
		NotifyDir:   s.notifyDir,
		OnNotify:    s.onNotifyFunc(),
		DeathSignal: s.deathSignal(cfg),
		Logger:      s.log,
	})
	if err != nil {
		var ee *worker.ExecError
		isExec := errors.As(err, &ee)
		if isExec && ee.BadDir {
			err = fmt.Errorf("%w: %s", err, badDirAdvice(ee.Err, spec.gen))
		}
		sl.StartErr = err.Error()
		s.log.Error("worker start failed", "slot", sl.Index, "gen", spec.gen, "err", err)
		if isExec && !ee.Resources() && s.firstStart(spec) {
			s.cannotStart(err)
		}
		return nil
	}
	sl.StartErr = ""
	w := newProc(p, sl, spec)
	w.State, w.Watchdog = stateStarting, cfg.Watchdog
	s.workers[w.pid] = w
	s.storeOutput(w)
	s.log.Info("worker started", "slot", sl.Index, "pid", w.pid, "gen", spec.gen)
	s.awaitReady(w)
	return w
}

// badDirAdvice says, by the errno a chdir into the directory generation gen
// was pinned to met, what became of it and what to do.
func badDirAdvice(errno error, gen int) string {
	const redeploy = "roll out one that exists (point current at it and baton reload) or the previous generation (baton rollback)"
	switch {
	case errors.Is(errno, syscall.ENOENT):
		return fmt.Sprintf("the release generation %d was pinned to is gone; %s", gen, redeploy)
	case errors.Is(errno, syscall.ENOTDIR):
		return fmt.Sprintf("the release generation %d was pinned to is not a directory (it, or one on its path, was replaced by a file); %s", gen, redeploy)
	case errors.Is(errno, syscall.EACCES), errors.Is(errno, syscall.EPERM):
		return fmt.Sprintf("baton's user may not enter the release generation %d was pinned to (it, or a directory on its path, lacks search permission, x); restore the permission, or %s", gen, redeploy)
	}
	return fmt.Sprintf("the release generation %d was pinned to cannot be entered; %s", gen, redeploy)
}

func newProc(p process, sl *slot, spec *genSpec) *proc {
	info := p.Info()
	return &proc{p: p, pid: info.PID, started: info.Started, slot: sl, spec: spec, procKept: procKept{Jitter: newJitter()}}
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
	sl := w.slot
	w.timers = append(w.timers, s.after(w.started.Add(cfg.ReadyTimeout).Sub(s.now()), func() {
		if w.State == stateStarting && !w.exited {
			s.notReady(w, fmt.Sprintf("not ready within --ready-timeout %s", cfg.ReadyTimeout))
		}
	}))
	switch cfg.Ready.Kind {
	case ReadyExec:
		// Deferred, not called: the caller has not put the worker in place yet.
		s.soon(func() { s.onReady(w) })
	case ReadyDelay:
		w.timers = append(w.timers, s.after(w.started.Add(cfg.Ready.Delay).Sub(s.now()), func() { s.onReady(w) }))
	case ReadyHTTP:
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		url := cfg.Ready.ProbeURL(sl.Index, w.pid)
		go probe(ctx, url, func() { s.post(func() { s.onReady(w) }) })
	case ReadyListening:
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		socks := s.socketInodes()
		go watchAccepting(ctx, w.pid, socks, func() { s.post(func() { s.onReady(w) }) })
	}
}

func (s *Supervisor) onNotify(pid int, m notify.Message) {
	w := s.workers[pid]
	if w == nil {
		return // exited since
	}
	if st, ok := m["STATUS"]; ok {
		w.Status = st
	}
	if m.Is("STOPPING", "1") {
		s.log.Info("worker stopping", "slot", w.slot.Index, "pid", pid)
	}
	if _, ok := m["WATCHDOG"]; ok || m["WATCHDOG_USEC"] != "" {
		s.onWatchdogMessage(w, m)
	}
	// READY=1 decides only under --ready notify: under a probe it must not
	// cut the probe short (gunicorn says READY=1 once booted, while the
	// probe that checks its database still fails), nor a delay or the
	// accept that --ready listening waits for.
	if m.Is("READY", "1") && w.spec.cfg.Ready.Kind == ReadyNotify {
		s.onReady(w)
	}
}

func (s *Supervisor) onReady(w *proc) {
	if w.exited || w.State != stateStarting {
		return
	}
	w.State = stateReady
	w.ReadyAt = s.now()
	if w.cancel != nil {
		w.cancel()
	}
	s.armWatchdog(w)
	s.checkListenersAfter(w) // the hygiene guard (sockets.go)
	s.log.Info("worker ready", "slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen,
		"after", s.now().Sub(w.started).Round(time.Millisecond))
	if s.rollout != nil {
		s.rollout.workerReady(w)
	}
	if !s.ReadySent && !s.stopping && s.readyCount() == len(s.slots) {
		s.ReadySent = true
		s.sendReady()
		s.log.Info("service ready", "workers", len(s.slots), "gen", s.serving.gen)
		s.runDeferredUpgrade()
	}
	s.updateStatus()
}

func (s *Supervisor) readyCount() int {
	n := 0
	for _, sl := range s.slots {
		if sl.w != nil && sl.w.State == stateReady {
			n++
		}
	}
	return n
}

func (s *Supervisor) onExit(w *proc, ws unix.WaitStatus) {
	w.exited = true
	delete(s.workers, w.pid)
	for _, t := range w.timers {
		t.Stop()
	}
	if w.cancel != nil {
		w.cancel()
	}
	w.p.Exited()
	s.keepForOutput(w.p)
	s.stopEscapees(w)
	if s.sd != nil { // only systemd's FD store holds the pipes
		go func() {
			<-w.p.Done()
			s.unstoreOutput(w)
		}()
	}
	sl := w.slot
	wasNext := w.leaveSlot()
	how := describeExit(ws)
	reason, cause := how, exitCause(ws)
	if w.Failed != "" {
		reason, cause = w.Failed, w.Cause
	}
	if w.State == stateDraining {
		s.log.Info("worker stopped", "slot", sl.Index, "pid", w.pid, "gen", w.spec.gen, "exit", how)
	} else {
		s.lost(w, wasNext, "exit", how, reason, cause)
	}
	s.updateStatus()
}

// leaveSlot takes w out of its slot, where it served or was coming up
// (next); it reports the latter.
func (w *proc) leaveSlot() (wasNext bool) {
	sl := w.slot
	wasNext = sl.next == w
	if sl.w == w {
		sl.w = nil
	}
	if wasNext {
		sl.next = nil
	}
	return wasNext
}

// notReady takes a worker that did not become ready in time out of its
// slot and drains it like an old worker (its generation's stop signal, its
// drain timeout, SIGKILL only at that deadline): it may already hold
// connections from the shared socket, since a server that never says
// READY=1 or whose probe fails on a dependency accepts like any other, and
// a SIGKILL would cut them. Its slot goes on at once: the rollout it
// belongs to aborts, or the slot restarts as after a crash.
func (s *Supervisor) notReady(w *proc, reason string) {
	w.Failed, w.Cause = reason, control.CauseNotReady
	if w.cancel != nil {
		w.cancel()
	}
	wasNext := w.leaveSlot()
	s.drain(w)
	s.lost(w, wasNext, "state", "draining", reason, control.CauseNotReady)
	s.updateStatus()
}

// lost handles a worker that left its slot without being asked: it exited,
// or it was not ready in time (how says which, under key). A worker of the
// generation being rolled out aborts the rollout, and never counts against
// the serving generation's crash limit; any other is a crash.
func (s *Supervisor) lost(w *proc, wasNext bool, key, how, reason, cause string) {
	sl := w.slot
	if s.rollout != nil && s.rollout.owns(w, wasNext) {
		s.log.Error("new worker failed", "slot", sl.Index, "pid", w.pid, "gen", w.spec.gen, key, how, "reason", reason)
		s.Totals.CountNewWorkerFailure(cause)
		s.rollout.workerFailed(w, reason)
		return
	}
	msg := "worker exited unexpectedly"
	if key != "exit" {
		msg = "worker not ready in time: draining it"
	}
	s.log.Error(msg, "slot", sl.Index, "pid", w.pid, "gen", w.spec.gen,
		key, how, "reason", reason, "uptime", s.now().Sub(w.started).Round(time.Millisecond))
	s.Totals.CountCrash(cause)
	s.onCrash(sl, s.now().Sub(w.started))
}

// onCrash counts a crash against the limit and schedules the slot's restart.
func (s *Supervisor) onCrash(sl *slot, uptime time.Duration) {
	now := s.now()
	kept := s.Crashes[:0]
	for _, t := range s.Crashes {
		if now.Sub(t) < s.cfg.CrashLimit.Per {
			kept = append(kept, t)
		}
	}
	s.Crashes = append(kept, now)
	if len(s.Crashes) > s.cfg.CrashLimit.N {
		if s.exitErr == nil {
			s.exitErr = fmt.Errorf("%w: %d worker crashes within %s (--crash-limit %d/%s)",
				ErrCrashLimit, len(s.Crashes), s.cfg.CrashLimit.Per, s.cfg.CrashLimit.N, s.cfg.CrashLimit.Per)
			s.log.Error("crash limit reached: stopping", "crashes", len(s.Crashes), "within", s.cfg.CrashLimit.Per)
		}
		s.beginStop()
		return
	}
	if uptime >= s.cfg.RestartBackoff.Max {
		sl.Backoff = s.cfg.RestartBackoff.Min // it had a healthy run
	}
	sl.Restarts++
	s.Totals.Restarts++
	s.scheduleStart(sl)
}

// firstStart reports whether spec is generation 1 of a service that has
// never been ready: what baton was started with, not yet proven.
func (s *Supervisor) firstStart(spec *genSpec) bool {
	return !s.ReadySent && spec.gen == 1 && s.rollout == nil
}

// cannotStart ends a first start whose worker cannot be exec'd with its
// configuration (a missing directory, an environment too large, a shim
// that is not there): trying again cannot help, so baton stops and exits
// with the reason (exit code 1, a bad configuration) rather than retry
// for ever, never ready. The same failure later (a crash restart, a
// scale-up) keeps the slot retrying in its backoff, the reason in status:
// the other slots may still serve, and a reload or a rollback is the fix;
// in a rollout it fails the rollout, the reason in its answer.
func (s *Supervisor) cannotStart(err error) {
	if s.exitErr == nil {
		s.exitErr = fmt.Errorf("%w: %w", ErrCannotStart, err)
		s.log.Error("workers cannot be started with this configuration: stopping", "err", err)
	}
	s.beginStop()
}

// retryStart schedules another start of a slot whose worker could not even
// be started: fork, pipes or sockets failed in baton itself (EMFILE, the
// process limit). No worker crashed, so it does not count against
// --crash-limit (it once made baton exit with "11 worker crashes" that were
// all its own EMFILE); the slot waits with its doubling backoff, and status
// shows why it is empty.
func (s *Supervisor) retryStart(sl *slot) { s.scheduleStart(sl) }

// scheduleStart starts a worker in sl after the slot's backoff, which then
// doubles.
func (s *Supervisor) scheduleStart(sl *slot) {
	if s.stopping || sl.Removed || sl.restart != nil {
		return
	}
	delay := sl.Backoff
	sl.Backoff = min(2*sl.Backoff, s.cfg.RestartBackoff.Max)
	s.log.Info("restarting worker", "slot", sl.Index, "in", delay, "restarts", sl.Restarts)
	var fire func()
	fire = func() {
		sl.restart = nil
		switch {
		case s.stopping || sl.Removed || sl.w != nil:
			return // stopping, scaled away, or a rollout has put a worker in the slot since
		case sl.next != nil:
			// A rollout or a recycle brings a worker up here: look again
			// later, for if it fails, nothing else fills the slot.
			sl.restart = s.after(delay, fire)
			return
		}
		s.fillSlot(sl)
		s.updateStatus()
	}
	sl.restart = s.after(delay, fire)
}

// fillSlot starts a worker of the slot's generation in the empty slot sl,
// or schedules another try when baton cannot start one.
func (s *Supervisor) fillSlot(sl *slot) {
	if sl.w = s.startWorker(sl, sl.spec); sl.w == nil {
		s.retryStart(sl)
	}
}

// drain sends the stop signal and arms the SIGKILL deadline.
func (s *Supervisor) drain(w *proc) {
	if w.State == stateDraining {
		return
	}
	w.State = stateDraining
	w.DrainStart = s.now()
	w.Deadline = w.DrainStart.Add(w.spec.cfg.DrainTimeout)
	s.signal(w, w.spec.cfg.StopSignal)
	s.armDrainDeadline(w)
	s.boundDraining()
}

// signal sends sig to a worker once it runs its own program: sent to the
// exec shim, a signal can be lost in its execve (Go handles it on another
// thread, which execve ends). The exec pipe says when it is safe.
func (s *Supervisor) signal(w *proc, sig syscall.Signal) {
	select {
	case <-w.p.Execd():
	default:
		if w.PendingSig == 0 {
			go func() {
				<-w.p.Execd()
				s.post(func() {
					if !w.exited {
						s.signal(w, w.PendingSig)
					}
				})
			}()
		}
		w.PendingSig = sig
		return
	}
	if err := w.p.Signal(sig); err != nil {
		s.log.Warn("signal worker", "slot", w.slot.Index, "pid", w.pid, "sig", sig.String(), "err", err)
	}
}

// armDrainDeadline SIGKILLs a draining worker at its deadline. Each worker
// drains under its own generation's settings.
func (s *Supervisor) armDrainDeadline(w *proc) {
	w.timers = append(w.timers, s.after(w.Deadline.Sub(s.now()), func() {
		if !w.exited {
			s.log.Warn("drain deadline passed: killing worker", "slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen, "timeout", w.spec.cfg.DrainTimeout)
			s.Totals.DrainKills++
			w.p.Kill()
		}
	}))
}

// keepForOutput remembers an exited worker until its output is drained.
func (s *Supervisor) keepForOutput(p process) {
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
	grace := make(chan struct{}) // on the world's clock, as afterDone's
	defer s.world.afterFunc(outputGrace, func() { close(grace) }).Stop()
	expired := false
	recovered := make(chan struct{})
	go func() { s.recovering.Wait(); close(recovered) }()
	select {
	case <-recovered: // a previous baton's workers' output, read to its end
	case <-grace:
		expired = true
	}
	for _, p := range s.exited {
		if !expired {
			select {
			case <-p.Done():
				continue
			case <-grace:
				expired = true
			}
		}
		p.CloseOutput()
		<-p.Done()
	}
}

// exitCause is why a worker that baton did not kill exited.
func exitCause(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return control.CauseSignal
	}
	return control.CauseExit
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
