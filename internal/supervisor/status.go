package supervisor

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/sigrelay"
)

// statusLine is the one-line STATUS= summary.
func (s *Supervisor) statusLine() string {
	ready := s.readyCount()
	switch {
	case s.stopping:
		return fmt.Sprintf("stopping: %d workers draining", len(s.workers))
	case s.lameDuck != nil:
		return fmt.Sprintf("stopping: lame duck, %d/%d ready and serving, draining in %s", ready, len(s.slots),
			s.lameDuckEnds.Sub(s.now()).Round(time.Second))
	case !s.ReadySent:
		return fmt.Sprintf("starting: %d/%d ready, generation %d", ready, len(s.slots), s.serving.gen)
	}
	line := fmt.Sprintf("%d/%d ready, generation %d", ready, len(s.slots), s.serving.gen)
	if r := s.rollout; r != nil {
		if sum := r.summary(); sum != "" {
			return line + sum
		}
	}
	if len(s.socketProblems) > 0 {
		line += ", " + shorten(strings.Join(s.socketProblems, "; "), 120)
	}
	if l := s.Last; l != nil {
		kind := cmp.Or(l.Kind, "reload")
		if l.State == "ok" {
			return line + ", last " + kind + " ok"
		}
		return line + ", last " + kind + " failed: " + shorten(l.Error, 80)
	}
	return line
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// updateStatus sends STATUS= to systemd when the summary changed.
func (s *Supervisor) updateStatus() {
	line := s.statusLine()
	if line == s.status {
		return
	}
	s.status = line
	s.tell("STATUS=" + line)
}

// Status answers the control socket's status request.
func (s *Supervisor) Status(ctx context.Context) (control.Status, error) {
	type taken struct {
		st control.Status
		at time.Time
	}
	t, err := ask(ctx, s, func(reply chan<- taken) { reply <- taken{s.snapshot(), s.now()} })
	if err == nil {
		s.addCosts(&t.st, t.at) // off the loop: it reads /proc
	}
	return t.st, err
}

// Ping returns nil once the loop has run a no-op: the control socket's
// heartbeats (control.Handler) show the loop alive by it. It returns
// ctx's error when the loop does not take or run the no-op in time, and
// ErrShuttingDown once the loop has ended.
func (s *Supervisor) Ping(ctx context.Context) error {
	ran := make(chan struct{})
	select {
	case s.events <- func() { close(ran) }:
	case <-s.done:
		return ErrShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ran:
		return nil
	case <-s.done:
		return ErrShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Supervisor) snapshot() control.Status {
	now := s.now()
	st := control.Status{
		PID:                 os.Getpid(),
		Exe:                 s.exe,
		Version:             s.cfg.Version,
		Started:             s.started,
		ProcessStarted:      s.ProcessStarted,
		ExeReplaced:         exeReplaced(),
		SignalRelay:         control.SignalRelay{Mode: sigrelay.Mode(), Protected: sigrelay.Protected()},
		State:               "ready",
		Generation:          s.serving.gen,
		Slots:               len(s.slots),
		Ready:               s.readyCount(),
		Workers:             []control.Worker{},
		Draining:            []control.Worker{},
		Incoming:            []control.Worker{},
		Listeners:           []control.Listener{},
		Crashes:             len(s.Crashes),
		RecycleMemoryBytes:  s.cfg.RecycleMemory,
		RecycleAfterSeconds: s.cfg.RecycleAfter.Seconds(),
		Totals:              s.Totals.Clone(), // read by the control server, as the loop counts on
	}
	switch {
	case s.stopping:
		st.State = "stopping"
	case s.lameDuck != nil:
		st.State = "stopping"
		st.LameDuckSeconds = max(s.lameDuckEnds.Sub(now).Seconds(), 0)
	case !s.ReadySent:
		st.State = "starting"
	}
	for _, sl := range s.slots {
		if sl.w == nil {
			cw := control.Worker{Slot: sl.Index, State: "restarting", Restarts: sl.Restarts, Recycles: sl.Recycles, Error: sl.StartErr}
			addHeld(&cw, sl, now)
			st.Workers = append(st.Workers, cw)
			continue
		}
		cw := s.describe(sl.w, now)
		addHeld(&cw, sl, now)
		st.Workers = append(st.Workers, cw)
	}
	if s.rollout != nil {
		r := s.rollout.describe()
		st.Rollout = &r
	}
	st.LastRollout = s.Last
	st.Generations = s.generations()
	for _, sl := range s.slots {
		if sl.next != nil {
			st.Incoming = append(st.Incoming, s.describe(sl.next, now))
		}
	}
	for _, w := range s.workers {
		if w.State == stateDraining {
			d := s.describe(w, now)
			d.Deadline = &w.Deadline
			st.Draining = append(st.Draining, d)
		}
	}
	for _, l := range s.listeners {
		ss := s.sockets[l]
		st.Listeners = append(st.Listeners, control.Listener{Name: l.Name, Address: l.Addr(), Source: s.source[l],
			Listening: ss.Listening, NonBlocking: ss.NonBlocking, Backlog: ss.Backlog, Changes: ss.changes, Error: ss.err})
	}
	return st
}

// generations describes the pinned settings of the serving generation, of
// one a rollout brings in, of those with draining workers, and of the
// previous one.
func (s *Supervisor) generations() []control.Generation {
	out := []control.Generation{}
	add := func(g *genSpec, role string) {
		for _, e := range out {
			if e.Generation == g.gen {
				return
			}
		}
		out = append(out, control.Generation{Generation: g.gen, Role: role, Directory: g.cfg.Directory,
			Command: g.cfg.Command, EnvDigest: envDigest(g.cfg.Env), EnvKeys: shownKeys(g.cfg.Env)})
	}
	add(s.serving, "serving")
	if r := s.rollout; r != nil && r.incoming() != nil {
		add(r.incoming(), "incoming")
	}
	var draining []*genSpec
	for _, w := range s.workers {
		if w.State == stateDraining {
			draining = append(draining, w.spec)
		}
	}
	slices.SortFunc(draining, func(a, b *genSpec) int { return b.gen - a.gen })
	for _, g := range draining {
		add(g, "draining")
	}
	if s.previous != nil {
		add(s.previous, "previous")
	}
	return out
}

func (s *Supervisor) describe(w *proc, now time.Time) control.Worker {
	return control.Worker{
		Slot:          w.slot.Index,
		PID:           w.pid,
		Generation:    w.spec.gen,
		State:         string(w.State),
		UptimeSeconds: now.Sub(w.started).Seconds(),
		Restarts:      w.slot.Restarts,
		Status:        w.Status,
		Recycles:      w.slot.Recycles,
		MemoryBytes:   w.Memory,
		// Said while it is above the ceiling and recycling by memory
		// backs off for it, as a baton before recycle_held said it.
		AboveCeiling: w.CrossedInWarmup && !w.OverSince.IsZero() && w.slot.memoryHeld(now),
	}
}

// exeReplaced reports whether the binary this image runs is no longer the
// file on disk: the kernel marks /proc/self/exe "(deleted)" once dpkg has
// renamed the new binary over it.
func exeReplaced() bool {
	exe, err := os.Readlink("/proc/self/exe")
	return err == nil && strings.HasSuffix(exe, " (deleted)")
}

// addHeld says in cw why, until when and which of its slot's automatic
// recycles are held back, if they are.
func addHeld(cw *control.Worker, sl *slot, now time.Time) {
	if why, until, memoryOnly := sl.held(now); why != "" {
		cw.RecycleHeld, cw.RecycleHeldUntil, cw.RecycleHeldMemoryOnly = why, &until, memoryOnly
	}
}
