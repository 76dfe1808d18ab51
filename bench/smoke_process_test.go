package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/testsd"
)

// TestSmoke runs the benchmark for seconds, not minutes, so that it keeps
// working: every scenario deploys under load, and baton loses nothing.
func TestSmoke(t *testing.T) {
	testsd.Process(t)
	dir := t.TempDir()
	bins, err := testsd.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := testsd.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Node comes with the test command's installs; PM2 and tableflip are
	// downloads the full run makes.
	p := Params{Baton: bins.Baton, Worker: bins.Worker, Workers: 2, Work: time.Millisecond, StartDelay: 50 * time.Millisecond,
		Port: 20000 + os.Getpid()%5000, NodeDir: filepath.Join(root, "bench", "node")}
	plan := Plan{Rate: 200, KeepAliveEvery: 3, Steady: 500 * time.Millisecond, Deploys: 2, Gap: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var results []Result
	for _, sc := range Scenarios(p) {
		r, err := Measure(ctx, sc, fmt.Sprintf("http://127.0.0.1:%d/", p.Port), plan)
		if err != nil {
			t.Fatal(err)
		}
		if r.Steady.Requests == 0 || r.During.Requests == 0 {
			t.Errorf("%s: %d steady and %d deploy-time requests: the load did not run", r.Scenario, r.Steady.Requests, r.During.Requests)
		}
		results = append(results, r)
	}
	for _, r := range results {
		if strings.HasPrefix(r.Scenario, "baton") && r.FailedTotal != 0 {
			t.Errorf("%s lost requests: %v", r.Scenario, r.FailedKinds)
		}
	}
	if results[0].SupervisorRSSKB == 0 {
		t.Errorf("baton's RSS was not measured: %+v", results[0])
	}
	var b bytes.Buffer
	Table(&b, results)
	if strings.Count(b.String(), "\n") != 2+len(results) {
		t.Errorf("table:\n%s", b.String())
	}
	t.Logf("\n%s", b.String())

	f, err := MeasureFootprint(ctx, p, 4, 10, 200*time.Millisecond, true)
	if err != nil {
		t.Fatal(err)
	}
	if f.FDsAfterN != f.FDsAfter1 || f.ZombiesAfterN != 0 || f.RSSIdleKB == 0 || f.Scrapes < 1 || f.ScrapeMean <= 0 {
		t.Errorf("footprint after 10 rollouts: %+v", f)
	}
	b.Reset()
	FootprintTable(&b, []Footprint{f})
	t.Logf("\n%s", b.String())

	// The leak run, baton with recycling only (PM2 is a download): 64K a
	// request at 100 req/s a worker passes a 32M ceiling in some 4 s (a
	// fresh worker holds 7 MB, so its first look, within a second or two
	// of ready, is below it), and the recycle follows 3 s later.
	lp := LeakPlan{Rate: 200, KeepAliveEvery: 3, Duration: 12 * time.Second, Workers: 2, Leak: 64 << 10, Ceiling: 32 << 20}
	lr, err := MeasureLeak(ctx, LeakScenarios(p, lp)[0], fmt.Sprintf("http://127.0.0.1:%d/", p.Port), lp)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Replaced < 1 || lr.FailedTotal != 0 || lr.MinServing != lp.Workers || lr.PeakWorkerRSS < lp.Ceiling {
		t.Errorf("leak run: %+v", lr)
	}
	b.Reset()
	LeakTable(&b, lp, []LeakResult{lr})
	t.Logf("\n%s", b.String())
}
