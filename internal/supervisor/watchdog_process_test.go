package supervisor_test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
)

// TestWorkerWatchdog: workers that ping keep running; one that stops is
// sent SIGABRT and replaced, and the event names its slot and pid.
func TestWorkerWatchdog(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	s := startService(t, `command = ["@WORKER@"]`+"\nwatchdog = \"300ms\"\n", "--workers", "2", "--restart-backoff", "10ms..1s")
	// Three intervals with regular pings, by baton's clock (the workers'
	// uptime in status): nobody is replaced.
	before := testsd.WaitStatus(ctx, t, s.ctl, "three watchdog intervals", func(st control.Status) bool {
		return st.Workers[0].Restarts+st.Workers[1].Restarts > 0 ||
			st.Workers[0].UptimeSeconds >= 0.9 && st.Workers[1].UptimeSeconds >= 0.9
	})
	if before.Workers[0].Restarts+before.Workers[1].Restarts != 0 {
		t.Fatalf("pinging workers were replaced: %+v", before.Workers)
	}
	body, err := testsd.Get(ctx, s.url()+"hang")
	if err != nil {
		t.Fatal(err)
	}
	m := hungRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("GET /hang: %q", body)
	}
	slot, _ := strconv.Atoi(m[1])
	pid, _ := strconv.Atoi(m[2])
	st := testsd.WaitStatus(ctx, t, s.ctl, "the hung worker replaced", func(st control.Status) bool {
		w := st.Workers[slot]
		return w.PID != pid && w.PID != 0 && w.State == "ready"
	})
	if st.Workers[slot].Restarts != 1 {
		t.Errorf("restarts = %d", st.Workers[slot].Restarts)
	}
	// The hung worker's watchdog fired three intervals after the other
	// worker started: had the other's pings gone unheard, its own would
	// have fired before.
	if other := 1 - slot; st.Workers[other].PID != before.Workers[other].PID || st.Workers[other].Restarts != 0 {
		t.Errorf("the pinging worker of slot %d was replaced: %+v, was %+v", other, st.Workers[other], before.Workers[other])
	}
	s.svc.WaitOutput(ctx, t, `msg="worker watchdog expired: SIGABRT" slot=`+m[1]+` pid=`+m[2])
	s.svc.WaitOutput(ctx, t, "no WATCHDOG=1 for")
	// Go's runtime answers SIGABRT with a stack dump and exit status 2.
	s.svc.WaitOutput(ctx, t, `pid=`+m[2]+` gen=1 exit="exit status 2"`)
}

// hungRE reads the example worker's answer to GET /hang.
var hungRE = regexp.MustCompile(`slot (\d+) pid (\d+) stops pinging`)

func samePIDs(a, b control.Status) bool {
	for i := range a.Workers {
		if a.Workers[i].PID != b.Workers[i].PID {
			return false
		}
	}
	return true
}

// TestWatchdogKillsWhatIgnoresSIGABRT: SIGKILL follows after the grace.
func TestWatchdogKillsWhatIgnoresSIGABRT(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	s := startService(t, `command = ["sh", "-c", "trap '' ABRT; sleep 60 & wait"]`+"\nready = \"delay:100ms\"\nwatchdog = \"200ms\"\n", "--workers", "1")
	s.svc.WaitOutput(ctx, t, "worker watchdog expired: SIGABRT")
	s.svc.WaitOutput(ctx, t, "worker still there after SIGABRT: killing it")
	s.svc.WaitOutput(ctx, t, `exit="killed by SIGKILL" reason="watchdog: no WATCHDOG=1 for`)
}

// TestBatonPingsSystemdWatchdog: with WATCHDOG_USEC from systemd, baton
// sends WATCHDOG=1 from its own pid at half the interval.
func TestBatonPingsSystemdWatchdog(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	sd := testsd.New(t)
	web := listener(t, "web=127.0.0.1:0")
	svc := sd.Start(bins, []*activation.Listener{web}, []string{"WATCHDOG_USEC=200000"},
		"run", "--workers", "1", "--ready", "exec", "--control", controlPath(t), "--", "sleep", "60")
	var pings []time.Time
	from := 0
	for len(pings) < 6 {
		d, at := sd.WaitFrom(ctx, from, "WATCHDOG=1", testsd.Sent("WATCHDOG", "1"))
		if d.PID != svc.PID() {
			t.Fatalf("WATCHDOG=1 from pid %d, not baton's %d", d.PID, svc.PID())
		}
		pings = append(pings, d.When)
		from = at + 1
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap < 50*time.Millisecond || gap > 180*time.Millisecond {
			t.Errorf("ping %d came %s after the previous one, want about 100ms (half of 200ms)", i, gap)
		}
	}
}
