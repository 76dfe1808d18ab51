package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The lame duck through the whole supervisor in a fake world;
// lameduck_process_test.go runs it with real workers behind /healthz.

// stopSignals is how many stop signals the fake workers got.
func (ts *testSupervisor) stopSignals() int {
	n := 0
	for _, p := range ts.fw.procs {
		for _, sig := range p.signals {
			if sig == syscall.SIGTERM {
				n++
			}
		}
	}
	return n
}

func TestLameDuck(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, LameDuck: 5 * time.Second, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	ts.onSignal(unix.SIGTERM)
	ts.settle()
	st := ts.snapshot()
	err := st.Health()
	if st.State != "stopping" || err == nil || !strings.Contains(err.Error(), "lame duck, every worker serves 5.0s more") {
		t.Fatalf("in the lame duck: state %s, health %v", st.State, err)
	}
	if !strings.HasPrefix(ts.status, "stopping: lame duck, 2/2 ready and serving") {
		t.Errorf("STATUS=%q", ts.status)
	}
	if n := ts.stopSignals(); n != 0 || ts.readyCount() != 2 {
		t.Fatalf("in the lame duck: %d stop signals sent, %d ready", n, ts.readyCount())
	}
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	if res := ts.result(reply); res.err == nil || res.err.Error() != "baton is stopping" {
		t.Errorf("a reload in the lame duck: %v", res.err)
	}
	ts.fw.clock.advance(5 * time.Second)
	ts.settle()
	if n := ts.stopSignals(); n != 2 || !ts.stopping {
		t.Fatalf("after the lame duck: %d stop signals, stopping %v", n, ts.stopping)
	}
}

func TestLameDuckCutShort(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, LameDuck: time.Minute, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	ts.onSignal(unix.SIGTERM)
	ts.settle()
	ts.fw.clock.advance(time.Second)
	ts.onSignal(unix.SIGINT) // the second: drain now
	ts.settle()
	if n := ts.stopSignals(); n != 2 || !ts.stopping {
		t.Fatalf("after a second stop signal: %d stop signals, stopping %v", n, ts.stopping)
	}
	ts.onSignal(unix.SIGTERM) // the third: kill, as a second one does without a lame duck
	for _, p := range ts.fw.procs {
		if p.signals[len(p.signals)-1] != syscall.SIGKILL {
			t.Errorf("pid %d got %v after a third stop signal", p.info.PID, p.signals)
		}
	}
}

func TestNoLameDuckByDefault(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	ts.onSignal(unix.SIGTERM)
	ts.settle()
	if n := ts.stopSignals(); n != 2 || !ts.stopping {
		t.Fatalf("without --lame-duck: %d stop signals, stopping %v", n, ts.stopping)
	}
}

// TestLameDuckDuringRollout: a stop during a rollout, with another reload
// asked for meanwhile, starts no rollout in the lame duck; the rollout's
// new workers drain at once, the serving ones serve on.
func TestLameDuckDuringRollout(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, LameDuck: time.Minute, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	first, second := make(chan rolloutResult, 1), make(chan rolloutResult, 1)
	ts.requestRollout(first)
	ts.requestRollout(second) // one more follows, as asked
	incoming := ts.incoming(0)
	ts.onSignal(unix.SIGTERM)
	ts.settle()
	if ts.rollout != nil {
		t.Fatal("a rollout runs in the lame duck")
	}
	for _, c := range []chan rolloutResult{first, second} {
		if res := ts.result(c); res.err == nil {
			t.Error("a caller was told the rollout ended ok")
		}
	}
	if incoming.State != stateDraining || ts.slots[0].next != nil {
		t.Errorf("the rollout's new worker is %s", incoming.State)
	}
	if ts.readyCount() != 2 || ts.stopping {
		t.Errorf("in the lame duck: %d ready, stopping %v", ts.readyCount(), ts.stopping)
	}
}

// TestCrashInLameDuck: a worker that crashes during the lame duck is
// restarted (the period is still serving time), and the lame duck still
// ends in the drain.
func TestCrashInLameDuck(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2, LameDuck: 5 * time.Second, GenSettings: GenSettings{StopSignal: syscall.SIGTERM}})
	ts.onSignal(unix.SIGTERM)
	ts.settle()
	ts.exit(ts.slots[0].w, 1)
	ts.fw.clock.advance(time.Second) // past the restart backoff
	ts.settle()
	if w := ts.slots[0].w; w == nil {
		t.Fatal("the crashed worker's slot stays empty in the lame duck")
	}
	ts.ready(ts.slots[0].w)
	if ts.readyCount() != 2 || ts.stopping {
		t.Fatalf("in the lame duck after a crash: %d ready, stopping %v", ts.readyCount(), ts.stopping)
	}
	ts.fw.clock.advance(4 * time.Second)
	ts.settle()
	if !ts.stopping || ts.stopSignals() != 2 {
		t.Errorf("after the lame duck: stopping %v, %d stop signals", ts.stopping, ts.stopSignals())
	}
}
