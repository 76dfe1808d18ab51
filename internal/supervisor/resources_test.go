package supervisor

import (
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/proctree"
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

// TestAddCosts: the costs of every listed worker (in a slot, incoming,
// draining) and of baton, from the world's usage; the looks at workers no
// longer listed are dropped.
func TestAddCosts(t *testing.T) {
	s := &Supervisor{world: world{usage: func(pid int) (own, tree proctree.Usage, procs int) {
		return proctree.Usage{CPU: time.Second, RSS: 4096}, proctree.Usage{CPU: 2 * time.Second, RSS: 8192}, 2
	}}}
	at := time.Unix(1e9, 0)
	st := control.Status{PID: 1, Started: at.Add(-8 * time.Second),
		Workers:  []control.Worker{{PID: 10, UptimeSeconds: 4}, {Slot: 1, State: "restarting"}},
		Draining: []control.Worker{{PID: 11, UptimeSeconds: 2}},
	}
	s.addCosts(&st, at)
	w, d := st.Workers[0], st.Draining[0]
	if w.CPUPercent != 50 || w.CPUSeconds != 2 || w.RSSBytes != 4096 || w.TreeRSSBytes != 8192 || w.Processes != 2 {
		t.Errorf("worker: %+v", w)
	}
	if d.CPUPercent != 100 || st.Workers[1].Processes != 0 {
		t.Errorf("draining worker %+v, empty slot %+v", d, st.Workers[1])
	}
	if st.CPUPercent != 12.5 || st.CPUSeconds != 1 || st.RSSBytes != 4096 {
		t.Errorf("baton: %v%% %vs %d bytes", st.CPUPercent, st.CPUSeconds, st.RSSBytes)
	}
	st = control.Status{PID: 1, Workers: []control.Worker{{PID: 10, UptimeSeconds: 6}}}
	s.addCosts(&st, at.Add(2*time.Second))
	if len(s.costs.Looks) != 1 || s.costs.Looks[10] == nil {
		t.Errorf("looks after pid 11 went: %v", s.costs.Looks)
	}
}
