package supervisor

import (
	"testing"
	"time"
)

// TestCPUShareWindow: the share is taken since an earlier look at least
// cpuWindow old (at first, since the start), so looks in quick succession
// do not shrink the window to nothing, and rare ones cover the time between.
func TestCPUShareWindow(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	var l cpuLooks
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, step := range []struct {
		now  time.Duration
		cpu  time.Duration
		want float64
	}{
		{2 * time.Second, time.Second, 50},                                   // since the start: 1 s of 2
		{2*time.Second + 100*time.Millisecond, time.Second, 47.6},            // too soon after the look at 2 s: since the start
		{3 * time.Second, 1500 * time.Millisecond, 50},                       // since the look at 2 s
		{3*time.Second + 10*time.Millisecond, 1510 * time.Millisecond, 50.5}, // since the look at 2 s, not 3
		{63 * time.Second, 1510 * time.Millisecond, 0},                       // a minute later, idle all along
	} {
		if got := round1(l.share(at(step.now), step.cpu, t0)); got != step.want {
			t.Errorf("at %s with %s used: %.1f%%, want %.1f%%", step.now, step.cpu, got, step.want)
		}
	}
}
