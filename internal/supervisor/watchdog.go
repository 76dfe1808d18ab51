package supervisor

import (
	"fmt"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

// abortGrace is how long a worker whose watchdog expired has, after
// SIGABRT (to dump its stacks), before SIGKILL.
const abortGrace = 2 * time.Second

// armWatchdog starts watching a worker that has become ready, if its
// generation has --watchdog set (or the worker changed its interval with
// WATCHDOG_USEC=). The watch starts at readiness: --ready-timeout covers the
// start.
func (s *Supervisor) armWatchdog(w *proc) {
	if w.Watchdog <= 0 || w.exited {
		return
	}
	w.lastPing = s.now()
	if w.wdTimer != nil {
		w.wdTimer.Reset(w.Watchdog)
		return
	}
	w.wdTimer = s.after(w.Watchdog, func() { s.watchdogExpired(w, false) })
	w.timers = append(w.timers, w.wdTimer)
}

// onWatchdogMessage handles WATCHDOG=1, WATCHDOG=trigger and WATCHDOG_USEC=
// from a worker.
func (s *Supervisor) onWatchdogMessage(w *proc, m notify.Message) {
	if v, ok := m["WATCHDOG_USEC"]; ok {
		// 0 and infinite (USEC_INFINITY, or too large for a Duration) turn
		// the watch off.
		interval, _, err := notify.ParseUsec(v)
		if err != nil {
			w.p.Warn("worker sent a bad WATCHDOG_USEC", "value", v)
		} else {
			w.Watchdog = interval
			if w.Watchdog == 0 && w.wdTimer != nil {
				w.wdTimer.Stop()
			}
			s.log.Info("worker changed its watchdog", "slot", w.slot.Index, "pid", w.pid, "interval", w.Watchdog)
		}
	}
	switch m["WATCHDOG"] {
	case "1":
		if w.State == stateReady {
			s.armWatchdog(w)
		}
	case "trigger":
		s.watchdogExpired(w, true)
	default:
		if _, ok := m["WATCHDOG_USEC"]; ok && w.State == stateReady {
			s.armWatchdog(w)
		}
	}
}

// watchdogExpired sends SIGABRT (a chance to dump stacks), then SIGKILL
// after abortGrace; the exit then counts as a crash (or aborts a rollout).
func (s *Supervisor) watchdogExpired(w *proc, triggered bool) {
	if w.exited || w.State == stateDraining || w.Failed != "" {
		return
	}
	late := s.now().Sub(w.lastPing)
	if !triggered && (w.Watchdog <= 0 || late < w.Watchdog) {
		return // a ping came after the timer fired
	}
	w.Cause = control.CauseWatchdog
	if triggered {
		w.Failed = "watchdog triggered by the worker (WATCHDOG=trigger)"
	} else {
		w.Failed = fmt.Sprintf("watchdog: no WATCHDOG=1 for %s (--watchdog %s)", late.Round(time.Millisecond), w.Watchdog)
	}
	s.log.Error("worker watchdog expired: SIGABRT", "slot", w.slot.Index, "pid", w.pid, "gen", w.spec.gen,
		"late", (late - w.Watchdog).Round(time.Millisecond), "reason", w.Failed)
	s.signal(w, unix.SIGABRT)
	w.timers = append(w.timers, s.after(abortGrace, func() {
		if !w.exited {
			s.log.Warn("worker still there after SIGABRT: killing it", "slot", w.slot.Index, "pid", w.pid)
			w.p.Kill()
		}
	}))
}

// pingSystemd sends baton's own WATCHDOG=1. It is called from the event
// loop, so a wedged loop stops the pings and systemd's WatchdogSec= acts.
func (s *Supervisor) pingSystemd() {
	s.tell("WATCHDOG=1")
}
