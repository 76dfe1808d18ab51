package supervisor_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// TestLameDuckUnderLoad: SIGTERM to a baton with --lame-duck: /healthz
// answers 503 with the reason at once, while every worker keeps serving
// (the same pids, no request failed) for the whole period; then they
// drain and baton exits 0. A second SIGTERM cuts the period short.
func TestLameDuckUnderLoad(t *testing.T) {
	testsd.Process(t)
	for _, tt := range []struct {
		name   string
		second bool // a second SIGTERM during the lame duck
	}{{"whole period", false}, {"cut short", true}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := timeout(t, 60*time.Second)
			sd := testsd.New(t)
			web := listener(t, "web=127.0.0.1:0")
			ctl := controlPath(t)
			addr := fmt.Sprintf("127.0.0.1:%d", freePortPair(t))
			const period = 3 * time.Second
			svc := sd.Start(bins, []*activation.Listener{web}, nil, "run", "--workers", "2", "--control", ctl,
				"--metrics", addr, "--lame-duck", period.String(), "--", bins.Worker)
			sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
			if code, _ := scrape(ctx, t, "http://"+addr+"/healthz"); code != 200 {
				t.Fatalf("/healthz before the stop: %d", code)
			}
			before := pidsOf(testsd.Status(ctx, t, ctl))
			load := testsd.StartLoad("http://"+web.Addr()+"/", 2, 2, time.Millisecond)
			defer load.Stop()

			sent := time.Now()
			svc.Signal(t, unix.SIGTERM)
			// /healthz says so at once...
			for {
				code, body := scrape(ctx, t, "http://"+addr+"/healthz")
				if code == 503 && strings.Contains(body, "stopping: lame duck, every worker serves") {
					break
				}
				if code != 200 || time.Since(sent) > period/2 {
					t.Fatalf("/healthz after SIGTERM: %d %q", code, body)
				}
			}
			if code, _ := scrape(ctx, t, "http://"+addr+"/healthz"); code != 503 {
				t.Fatalf("/healthz in the lame duck: %d", code)
			}
			// ...while the same workers serve, ready, and no request fails.
			st := testsd.Status(ctx, t, ctl)
			if st.State != "stopping" || st.Ready != 2 || len(st.Draining) != 0 || st.LameDuckSeconds <= 0 {
				t.Fatalf("in the lame duck: %+v", st)
			}
			for _, w := range st.Workers {
				if !before[w.PID] || w.State != "ready" {
					t.Errorf("in the lame duck, slot %d: %+v", w.Slot, w)
				}
			}
			if tt.second {
				svc.Signal(t, unix.SIGTERM)
			} else {
				// Every worker ready and none draining at each look, to
				// near the end of the period, under load.
				for looks := 0; time.Since(sent) < period-300*time.Millisecond; looks++ {
					if st := testsd.Status(ctx, t, ctl); st.Ready != 2 || len(st.Draining) != 0 {
						t.Fatalf("%s into the lame duck (look %d): %d ready, %d draining", time.Since(sent), looks, st.Ready, len(st.Draining))
					}
				}
			}
			ok, failures := load.Stop()
			if code := svc.Wait(ctx, t); code != 0 {
				t.Fatalf("baton exited %d", code)
			}
			took := time.Since(sent)
			switch {
			case failures != "":
				t.Errorf("%d requests ok; failed: %s", ok, failures)
			case tt.second && took >= period:
				t.Errorf("a second SIGTERM did not cut the lame duck short: stopped after %s", took)
			case !tt.second && took < period:
				t.Errorf("stopped after %s, before the lame duck of %s", took, period)
			}
			t.Logf("stopped %s after SIGTERM; %d requests, none failed", took.Round(time.Millisecond), ok)
		})
	}
}
