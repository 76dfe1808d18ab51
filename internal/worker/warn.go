package worker

import (
	"sync"
	"time"
)

// Warnings that a worker's own behaviour causes (messages from the wrong
// pid, malformed notifications, bad values) are rate-limited per worker:
// warnBurst per warnWindow, the rest counted and reported with the next
// warning that gets through, or when the worker exits. A worker whose
// children sent 30,000 datagrams from their own pids wrote 30,000 lines.
const (
	warnBurst  = 5
	warnWindow = 10 * time.Second
)

type warnLimiter struct {
	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // warnings let through in it
	suppressed int       // since the last one let through
}

// allow reports whether a warning may be written now, and how many were
// suppressed before it.
func (l *warnLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= warnWindow {
		l.start, l.n = now, 0
	}
	if l.n >= warnBurst {
		l.suppressed++
		return false, 0
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

// flush returns the count suppressed and not yet reported.
func (l *warnLimiter) flush() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.suppressed
	l.suppressed = 0
	return s
}

// Warn logs a warning about the worker's behaviour with its slot and pid,
// rate-limited (see warnBurst).
func (p *Process) Warn(msg string, args ...any) {
	ok, suppressed := p.warns.allow(time.Now())
	if !ok {
		return
	}
	args = append([]any{"slot", p.Slot, "pid", p.PID}, args...)
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	p.log.Warn(msg, args...)
}

// flushWarnings reports warnings suppressed and not yet counted.
func (p *Process) flushWarnings() {
	if n := p.warns.flush(); n > 0 {
		p.log.Warn("worker warnings suppressed", "slot", p.Slot, "pid", p.PID, "suppressed", n)
	}
}
