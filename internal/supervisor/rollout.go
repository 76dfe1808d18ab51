package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// A rollout replaces the worker of each of its target slots with one of a
// new generation. It is a state machine; every change of phase goes through
// enter, and the events that drive it are its exported-in-spirit methods
// below (checked, workerReady, workerFailed, failureExplained,
// canaryElapsed, stop). What it does to the world goes through its host
// (the supervisor; a fake in the tests), so the races between events can be
// played in any order without processes or time.
//
//	checking     the config is re-read and its --check runs; then the new
//	             generation is made
//	rolling      batches of --max-surge targets (all of them for blue-green):
//	             start the new workers, wait until all are ready, then send
//	             the old ones the stop signal (they drain in the background
//	             under their own deadline) and go on with the next batch
//	canary       after the first batch is ready, watch it for --canary
//	             before its old workers are stopped
//	rolling back a new worker failed: new workers not yet serving are
//	             stopped, targets already moved get a worker of the previous
//	             generation again, ready before the new one is stopped
//	ok, failed   the end states: the rollout reports to its host once, and
//	             nothing moves it any more
//
// A rollout may also change the number of slots (`baton scale`, or a
// changed `workers` in the configuration): slots added to reach the new
// size are targets like the others, with no old worker to stop; the slots
// above the new size are not targets, keep serving while it runs, and are
// removed (their workers drained) when it ends ok. A rollout that fails
// removes the slots it added: the old size keeps serving. A scale alone
// (scaleOnly) makes no new generation: its only targets are the added
// slots, which start workers of the serving generation.
//
// A failure aborts at once; only the rollout's report waits until the
// failed worker's last output is read, because the reason quotes it.
type rollout struct {
	host     rolloutHost
	from, to *genSpec
	phase    phase
	started  time.Time
	targets  []*slot // the slots to move, in order
	moved    []*slot // targets serving the new generation
	batch    []*slot // targets whose new workers are starting
	canary   timer   // armed in the canary phase
	canaried bool
	err      error // why it failed
	failed   *proc // whose failure err describes, until its output is read
	// given is the configuration to roll out when it is neither re-read
	// nor checked: the serving one (the workers must be replaced, nothing
	// deployed), or the previous generation's pinned settings (rollback).
	given *Config
	// rollbackOf is the generation whose settings a rollback rolls out.
	rollbackOf int
	// changes says what the new generation's pinned settings change.
	changes []string
	// recycle is why a recycle replaces its targets' workers in the serving
	// generation (control.Recycle*; empty: not a recycle), recycleWhy the
	// figure behind it; replaced, the workers it replaced and their
	// successors (recycle.go).
	recycle, recycleWhy string
	replaced            []control.Replacement
	// scaleOnly: only the number of slots changes, to size; no new
	// generation, nothing re-read.
	scaleOnly bool
	// size is the number of slots when it ends ok (0: as the configuration
	// rolled out says); fromSize the number when it began rolling.
	size, fromSize int
	// next is a phase change asked for while enter runs an entry: enter
	// makes it once that entry has returned, so no entry runs inside
	// another.
	next     phase
	entering bool
}

// phase is where a rollout is; String is what `baton status` shows.
type phase int

const (
	phaseNew phase = iota
	phaseChecking
	phaseRolling
	phaseCanary
	phaseRollingBack
	phaseOK
	phaseFailed
)

var phaseNames = [...]string{"new", "checking", "rolling", "canary", "rolling back", "ok", "failed"}

func (p phase) String() string { return phaseNames[p] }

// ended reports whether p is an end state.
func (p phase) ended() bool { return p >= phaseOK }

// transitions are the phase changes a rollout may make.
var transitions = map[phase][]phase{
	phaseNew:         {phaseChecking, phaseFailed}, // failed: stopped before it began (followNext)
	phaseChecking:    {phaseRolling, phaseFailed},
	phaseRolling:     {phaseCanary, phaseRollingBack, phaseOK, phaseFailed},
	phaseCanary:      {phaseRolling, phaseRollingBack, phaseFailed},
	phaseRollingBack: {phaseFailed},
}

// rolloutHost is what a rollout needs of the supervisor: effects, not
// state. The slots and workers it is handed are the supervisor's; the
// rollout changes only which worker a target slot has (w, next) and its
// generation (spec).
type rolloutHost interface {
	// load re-reads and checks the configuration to roll out; its Workers
	// is the number of slots the rollout ends with.
	load() (Config, error)
	// runCheck runs cfg's --check, if any, and calls done on the loop.
	runCheck(cfg Config, done func(error))
	// newGen makes the next generation of cfg.
	newGen(cfg Config) *genSpec
	// startWorker starts a worker of spec in sl; nil if it could not.
	startWorker(sl *slot, spec *genSpec) *proc
	// drain sends a worker the stop signal under its drain deadline.
	drain(w *proc)
	// restartSlot starts a worker in an empty slot after its backoff.
	restartSlot(sl *slot)
	// slotCount is the number of slots; addSlots appends n empty slots of
	// spec and returns them; removeSlots drains the workers of the slots
	// from index keep on and removes those slots.
	slotCount() int
	addSlots(n int, spec *genSpec) []*slot
	removeSlots(keep int)
	// afterOutput calls f on the loop once w's output is read to its end,
	// or after a bound.
	afterOutput(w *proc, f func())
	// after calls f on the loop after d.
	after(d time.Duration, f func()) timer
	// listenerProblems says why a listener does not listen, if one does not.
	listenerProblems() []string
	// progressed tells systemd and `baton status` that the rollout moved.
	progressed()
	// ended takes the result, once, when the rollout reaches an end state.
	ended(r *rollout, res control.Rollout, err error)
	logger() *slog.Logger
	now() time.Time
}

// newRollout makes a rollout from the serving generation from. given, if
// not nil, is the configuration to roll out (see rollout.given); else it is
// re-read and checked.
func newRollout(h rolloutHost, from *genSpec, targets []*slot, given *Config) *rollout {
	return &rollout{host: h, from: from, started: h.now(), targets: slices.Clone(targets), given: given}
}

// enter is every phase change. An entry often ends in the next change (a
// check with nothing to run, a batch that is ready at once, a rollback with
// nothing to bring back): that change waits until the entry has returned,
// and enter runs it next, so entries never nest on one stack.
func (r *rollout) enter(p phase) {
	if r.entering {
		if r.next != phaseNew {
			panic(fmt.Sprintf("rollout: %s to %s while going to %s", r.phase, p, r.next)) // a bug in this file
		}
		r.next = p
		return
	}
	r.entering = true
	defer func() { r.entering = false }()
	for ; p != phaseNew; p, r.next = r.next, phaseNew {
		if !slices.Contains(transitions[r.phase], p) {
			panic(fmt.Sprintf("rollout: %s to %s", r.phase, p)) // a bug in this file
		}
		r.phase = p
		r.entry(p)
	}
}

// ending reports whether the rollout has ended or is about to.
func (r *rollout) ending() bool { return r.phase.ended() || r.next.ended() }

// entry is what phase p begins with.
func (r *rollout) entry(p phase) {
	log := r.host.logger()
	switch p {
	case phaseChecking:
		r.host.progressed()
		if r.scaleOnly || r.recycle != "" {
			r.checked(r.from.cfg, nil)
			return
		}
		if r.given != nil {
			r.checked(*r.given, nil)
			return
		}
		cfg, err := r.host.load()
		if err != nil {
			r.checked(cfg, err) // it names the file, key or flag already
			return
		}
		r.host.runCheck(cfg, func(err error) { r.checked(cfg, err) })
	case phaseRolling:
		if r.batchReady() {
			r.promote() // the canary batch stayed up
			return
		}
		r.nextBatch()
	case phaseCanary:
		r.canaried = true
		log.Info("canary: watching the first batch", "gen", r.to.gen, "slots", len(r.batch), "for", r.to.cfg.Canary)
		r.canary = r.host.after(r.to.cfg.Canary, r.canaryElapsed)
		r.host.progressed()
	case phaseRollingBack:
		stopTimer(&r.canary)
		log.Error("rollout aborted", "from", r.from.gen, "to", r.to.gen, "err", r.err, "workers", r.fromSize)
		for _, sl := range r.targets {
			if n := sl.next; n != nil {
				sl.next = nil
				r.host.drain(n)
			}
		}
		r.batch = nil
		for _, sl := range r.moved {
			if r.added(sl) || r.to == r.from {
				continue // removed when the rollout ends, or already of the serving generation (a recycle)
			}
			sl.spec = r.from // crash restarts from now on use the previous generation
			if sl.next = r.host.startWorker(sl, r.from); sl.next == nil && sl.w == nil {
				r.host.restartSlot(sl)
			}
		}
		r.host.progressed()
		r.maybeEnd()
	case phaseOK, phaseFailed:
		stopTimer(&r.canary)
		switch {
		case p == phaseOK && r.size < r.fromSize:
			log.Info("scaled down: stopping the workers above the new size", "workers", r.size, "was", r.fromSize)
			r.host.removeSlots(r.size)
		case p == phaseFailed && r.fromSize > 0 && r.host.slotCount() > r.fromSize:
			r.host.removeSlots(r.fromSize)
		}
		res := r.describe()
		if r.err != nil {
			res.Error = r.err.Error()
		}
		r.host.ended(r, res, r.err)
	}
}

// begin starts the rollout: the configuration is checked first.
func (r *rollout) begin() { r.enter(phaseChecking) }

// checked is the end of the checking phase: err from re-reading the
// configuration or from its --check.
func (r *rollout) checked(cfg Config, err error) {
	if r.phase != phaseChecking {
		return // ended meanwhile (baton is stopping)
	}
	if err != nil {
		r.end(err)
		return
	}
	if r.scaleOnly || r.recycle != "" {
		r.to = r.from
	} else {
		r.to = r.host.newGen(cfg)
	}
	r.resize()
	log := r.host.logger()
	switch {
	case r.scaleOnly:
		log.Info("scaling", "workers", r.size, "was", r.fromSize, "gen", r.to.gen)
	case r.recycle != "":
		for _, sl := range r.targets {
			pid := 0
			if sl.w != nil {
				pid = sl.w.pid
			}
			log.Info("recycling worker: its successor starts first", "slot", sl.Index, "pid", pid, "gen", r.to.gen,
				"reason", r.recycle, "why", r.recycleWhy)
		}
	default:
		r.changes = changes(r.from.cfg.GenSettings, r.to.cfg.GenSettings)
		args := []any{"from", r.from.gen, "to", r.to.gen, "command", r.to.cfg.Command, "directory", r.to.cfg.Directory,
			"env", envDigest(r.to.cfg.Env), "changed", strings.Join(r.changes, "; "), "surge", r.surge(), "workers", r.size, "was", r.fromSize}
		if r.rollbackOf != 0 {
			log.Info("rollback begun: rolling out an earlier generation's settings again", append(args, "settings_of", r.rollbackOf)...)
		} else {
			log.Info("rollout begun", args...)
		}
	}
	r.enter(phaseRolling)
}

// resize adds the slots the new size needs, as targets, and leaves the
// slots above it out of the targets (they go when the rollout ends ok).
func (r *rollout) resize() {
	r.fromSize = r.host.slotCount()
	switch {
	case r.size > 0: // asked for
	case r.given != nil, r.recycle != "":
		r.size = r.fromSize
	default:
		r.size = r.to.cfg.Workers
	}
	switch {
	case r.size > r.fromSize:
		r.targets = append(r.targets, r.host.addSlots(r.size-r.fromSize, r.to)...)
	case r.size < r.fromSize:
		r.targets = slices.DeleteFunc(r.targets, func(sl *slot) bool { return sl.Index >= r.size })
	}
}

// added reports whether the rollout added sl.
func (r *rollout) added(sl *slot) bool { return sl.Index >= r.fromSize }

func (r *rollout) surge() int {
	if r.recycle != "" {
		return 1 // one at a time: capacity never dips
	}
	if r.to.cfg.BlueGreen {
		return len(r.targets)
	}
	return r.to.cfg.MaxSurge
}

// nextBatch starts the new workers of the next batch, or ends the rollout
// when every target has moved.
func (r *rollout) nextBatch() {
	var todo []*slot
	for _, sl := range r.targets {
		if !slices.Contains(r.moved, sl) {
			todo = append(todo, sl)
		}
	}
	if len(todo) == 0 {
		r.end(nil)
		return
	}
	r.batch = todo[:min(r.surge(), len(todo))]
	r.host.progressed()
	for _, sl := range r.batch {
		if sl.next = r.host.startWorker(sl, r.to); sl.next == nil {
			r.abort(fmt.Errorf("worker %d of generation %d could not be started: %s", sl.Index, r.to.gen, sl.StartErr), nil)
			return
		}
	}
}

// workerReady is told of each worker that became ready; it acts on its
// own incoming ones (a target's next).
func (r *rollout) workerReady(w *proc) {
	if w.slot.next != w {
		return
	}
	switch r.phase {
	case phaseRolling:
		if !r.batchReady() {
			return
		}
		if r.to.cfg.Canary > 0 && !r.canaried && r.recycle == "" {
			r.enter(phaseCanary)
			return
		}
		r.promote()
	case phaseRollingBack:
		r.replace(w.slot, r.from)
		r.maybeEnd()
	}
	// In the canary phase the timer decides.
}

// canaryElapsed: the canary batch stayed up for --canary.
func (r *rollout) canaryElapsed() {
	if r.phase != phaseCanary || !r.batchReady() {
		return // a canary failed meanwhile: its abort came first
	}
	r.canary = nil
	r.enter(phaseRolling)
}

// batchReady reports whether every slot of the batch has a ready new
// worker.
func (r *rollout) batchReady() bool {
	for _, sl := range r.batch {
		if sl.next == nil || sl.next.State != stateReady {
			return false
		}
	}
	return len(r.batch) > 0
}

// promote puts the batch's new workers in place and stops the old ones.
func (r *rollout) promote() {
	for _, sl := range r.batch {
		if r.recycle != "" && sl.w != nil {
			r.replaced = append(r.replaced, control.Replacement{Slot: sl.Index, PID: sl.w.pid, Successor: sl.next.pid})
			r.host.logger().Info("worker recycled: its successor is ready, it drains", "slot", sl.Index, "pid", sl.w.pid,
				"successor", sl.next.pid, "reason", r.recycle, "why", r.recycleWhy)
		}
		r.replace(sl, r.to)
	}
	r.moved = append(r.moved, r.batch...)
	r.batch = nil
	r.host.logger().Info("rollout step", "gen", r.to.gen, "moved", len(r.moved), "of", len(r.targets))
	r.nextBatch()
}

// replace makes sl's incoming worker its serving one, of spec's generation,
// and drains the one it replaces.
func (r *rollout) replace(sl *slot, spec *genSpec) {
	old := sl.w
	sl.w, sl.next, sl.spec = sl.next, nil, spec
	stopTimer(&sl.restart)
	if old != nil {
		r.host.drain(old)
	}
}

// owns reports whether a worker that left its slot unasked belongs to the
// rollout (its failure is the rollout's, not a crash of the serving
// generation): it was a target's incoming worker (wasNext), or it is of the
// generation being rolled out (a recycle's is the serving one).
func (r *rollout) owns(w *proc, wasNext bool) bool {
	return wasNext || w.spec == r.to && r.to != r.from
}

// workerFailed is told of a worker of the new generation (or, rolling
// back, of the previous one in a target) that exited or was killed before
// it was ready, with why. The caller has taken it out of its slot.
func (r *rollout) workerFailed(w *proc, reason string) {
	switch r.phase {
	case phaseRolling, phaseCanary:
		r.abort(fmt.Errorf("worker %d (pid %d, generation %d): %s", w.slot.Index, w.pid, w.spec.gen, reason), w)
	case phaseRollingBack:
		// A new-generation worker in a target being rolled back is simply
		// gone; a target left with no worker at all restarts in the
		// previous generation as after any crash.
		sl := w.slot
		if w.spec == r.from {
			r.host.logger().Error("rollback worker failed", "slot", sl.Index, "pid", w.pid, "reason", reason)
		}
		if sl.w == nil && sl.next == nil && !r.added(sl) {
			r.host.restartSlot(sl)
		}
		r.maybeEnd()
	}
}

// abort rolls back because of err; failed, if not nil, is the worker whose
// last output err is still to quote.
func (r *rollout) abort(err error, failed *proc) {
	r.err = err
	r.failed = failed
	if failed != nil {
		r.host.afterOutput(failed, func() { r.failureExplained(failed) })
	}
	r.enter(phaseRollingBack)
}

// failureExplained: the failed worker's output is read; the reason quotes
// its last lines, and the rollout may end.
func (r *rollout) failureExplained(w *proc) {
	if r.failed != w || r.phase.ended() {
		return
	}
	if tail := w.p.Tail(); len(tail) > 0 {
		r.err = fmt.Errorf("%w; last output: %s", r.err, strings.Join(tail, " | "))
	}
	r.failed = nil
	r.maybeEnd()
}

// maybeEnd ends a rollback once no worker of the previous generation is
// still coming up and the reason is complete.
func (r *rollout) maybeEnd() {
	if r.phase != phaseRollingBack || r.failed != nil {
		return
	}
	for _, sl := range r.targets {
		if sl.next != nil {
			return
		}
	}
	r.end(r.err)
}

// end moves the rollout to its end state. A rollout that moved every
// target but left nothing listening did not succeed.
func (r *rollout) end(err error) {
	if r.ending() {
		return
	}
	if err == nil {
		if problems := r.host.listenerProblems(); len(problems) > 0 {
			err = fmt.Errorf("generation %d serves, but %s", r.to.gen, strings.Join(problems, "; "))
		}
	}
	r.err = err
	if err != nil {
		r.enter(phaseFailed)
		return
	}
	r.enter(phaseOK)
}

// errStopping ends a rollout because baton stops.
var errStopping = errors.New("baton is stopping")

// stop ends the rollout because baton stops: workers stay as they are, to
// be drained with the rest.
func (r *rollout) stop() {
	if !r.ending() {
		r.failed = nil
		r.err = errStopping
		r.enter(phaseFailed)
	}
}

// serving is the generation the targets serve when the rollout has ended.
func (r *rollout) serving() *genSpec {
	if r.phase == phaseOK {
		return r.to
	}
	return r.from
}

// incoming is the generation the rollout brings in; nil until its check
// has ended, and the serving one for a scale or a recycle.
func (r *rollout) incoming() *genSpec { return r.to }

// summary is what STATUS= says of the rollout, after the ready count.
func (r *rollout) summary() string {
	switch r.phase {
	case phaseChecking:
		return ", reloading: checking"
	case phaseRolling:
		switch {
		case r.scaleOnly:
			return fmt.Sprintf(", scaling to %d workers", r.size)
		case r.recycle != "" && len(r.batch) > 0:
			return fmt.Sprintf(", recycling worker %d (%s)", r.batch[0].Index, r.recycle)
		}
		return fmt.Sprintf(", rollout %d/%d to generation %d", len(r.moved)+len(r.batch), len(r.targets), r.to.gen)
	case phaseCanary:
		return fmt.Sprintf(", canary of generation %d for %s", r.to.gen, r.to.cfg.Canary)
	case phaseRollingBack:
		if r.scaleOnly {
			return fmt.Sprintf(", scaling to %d workers failed, stopping the added ones", r.size)
		}
		return fmt.Sprintf(", rollout to generation %d failed, rolling back", r.to.gen)
	}
	return ""
}

func (r *rollout) describe() control.Rollout {
	res := control.Rollout{
		Kind:            "reload",
		From:            r.from.gen,
		State:           r.phase.String(),
		Moved:           len(r.moved),
		Slots:           len(r.targets),
		Workers:         r.size,
		WorkersFrom:     r.fromSize,
		Started:         r.started,
		DurationSeconds: r.host.now().Sub(r.started).Seconds(),
	}
	switch {
	case r.scaleOnly:
		res.Kind = "scale"
	case r.rollbackOf != 0:
		res.Kind = "rollback"
		res.RollbackOf = r.rollbackOf
	case r.recycle != "":
		res.Kind, res.Reason, res.Replaced = "recycle", r.recycle, r.replaced
	}
	if r.phase == phaseFailed && errors.Is(r.err, errStopping) {
		res.State = control.RolloutStopped
	}
	res.Changes = r.changes
	if r.to != nil {
		res.To = r.to.gen
	}
	if r.err != nil {
		res.Error = r.err.Error()
	}
	return res
}
