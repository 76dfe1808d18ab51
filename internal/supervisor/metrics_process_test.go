package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
)

// scrape GETs url and returns its status code and body.
func scrape(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// metricsOf scrapes /metrics and parses it with Prometheus's own parser.
func metricsOf(ctx context.Context, t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := scrape(ctx, t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses /metrics: %v\n%s", err, body)
	}
	return fams
}

// samples maps each sample of a gauge or counter family to its value,
// keyed by its labels as name=value pairs joined by commas, in the order
// the family wrote them.
func samples(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range fams[name].GetMetric() {
		var key []string
		for _, l := range m.GetLabel() {
			key = append(key, l.GetName()+"="+l.GetValue())
		}
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
		out[strings.Join(key, ",")] = v
	}
	return out
}

// TestMetricsEndpoint: --metrics under the stand-in systemd with real
// workers, read by Prometheus's parser: what it says matches status, its
// counters follow a rollout, a failed one, a crash and its restart, and
// survive an in-place upgrade on the same listener; /healthz says 503 with
// the reason while a slot is empty, 200 at full strength.
func TestMetricsEndpoint(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 90*time.Second)
	b, path := ownBaton(t)
	sd := testsd.New(t)
	web := listener(t, "web=127.0.0.1:0")
	ctl := controlPath(t)
	config := filepath.Join(filepath.Dir(ctl), "baton.toml")
	write := func(command string) {
		if err := os.WriteFile(config, []byte("command = "+command+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(fmt.Sprintf("[%q]", bins.Worker))
	addr := fmt.Sprintf("127.0.0.1:%d", freePortPair(t))
	svc := sd.Start(b, []*activation.Listener{web}, nil, "run", "--config", config, "--control", ctl,
		"--workers", "2", "--metrics", addr, "--restart-backoff", "3s..3s", "--ready-timeout", "5s")
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))

	st := testsd.Status(ctx, t, ctl)
	fams := metricsOf(ctx, t, addr)
	for name, want := range map[string]float64{"baton_slots": 2, "baton_ready_workers": 2, "baton_healthy": 1, "baton_generation": 1} {
		if got := samples(fams, name)[""]; got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	mem := samples(fams, "baton_worker_resident_memory_bytes")
	for _, w := range st.Workers {
		key := fmt.Sprintf("slot=%d,generation=1,pid=%d", w.Slot, w.PID)
		if mem[key] <= 0 {
			t.Errorf("worker %s: resident memory %v in %v", key, mem[key], mem)
		}
	}
	if len(mem) != 2 {
		t.Errorf("%d workers have a memory figure, want 2: %v", len(mem), mem)
	}
	if v := samples(fams, "process_resident_memory_bytes")[""]; v < 1<<20 {
		t.Errorf("baton's own resident memory: %v", v)
	}
	if code, body := scrape(ctx, t, "http://"+addr+"/healthz"); code != 200 || body != "ok: 2/2 ready, generation 1\n" {
		t.Errorf("/healthz at full strength: %d %q", code, body)
	}

	// A rollout, then one whose new worker exits at once.
	if _, err := reload(ctx, ctl); err != nil {
		t.Fatalf("reload: %v", err)
	}
	write(`["false"]`)
	if _, err := reload(ctx, ctl); err == nil {
		t.Fatal("a reload to a worker that exits at once: no error")
	}
	write(fmt.Sprintf("[%q]", bins.Worker))

	// A crash: the slot stays empty for the 3 s backoff.
	st = testsd.Status(ctx, t, ctl)
	if err := unix.Kill(st.Workers[1].PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testsd.WaitStatus(ctx, t, ctl, "the crash counted", func(st control.Status) bool { return st.Totals.Crashes[control.CauseSignal] == 1 })
	if code, body := scrape(ctx, t, "http://"+addr+"/healthz"); code != 503 || !strings.Contains(body, "slot 1 restarting") {
		t.Errorf("/healthz with slot 1 empty: %d %q", code, body)
	}
	testsd.WaitStatus(ctx, t, ctl, "2/2 ready again", func(st control.Status) bool { return st.Ready == 2 })

	counted := func(when string, fams map[string]*dto.MetricFamily) {
		t.Helper()
		for _, c := range []struct {
			name, key string
			want      float64
		}{
			{"baton_rollouts_total", "kind=reload,result=ok", 1},
			{"baton_rollouts_total", "kind=reload,result=failed", 1},
			{"baton_rollouts_total", "kind=scale,result=ok", 0},
			{"baton_new_worker_failures_total", "cause=exit", 1},
			{"baton_worker_crashes_total", "cause=signal", 1},
			{"baton_worker_crashes_total", "cause=exit", 0},
			{"baton_worker_restarts_total", "", 1},
			{"baton_generation", "", 2},
			{"baton_healthy", "", 1},
		} {
			if got := samples(fams, c.name)[c.key]; got != c.want {
				t.Errorf("%s: %s{%s} = %v, want %v", when, c.name, c.key, got, c.want)
			}
		}
		h := fams["baton_rollout_duration_seconds"].GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 2 || h.GetSampleSum() <= 0 {
			t.Errorf("%s: rollout durations: %d, sum %v; want 2 above 0", when, h.GetSampleCount(), h.GetSampleSum())
		}
	}
	counted("after a rollout, a failed one and a crash", metricsOf(ctx, t, addr))

	// An in-place upgrade keeps the listener and the counters.
	copyFile(t, bins.BatonV2, path)
	if _, err := upgrade(ctx, ctl); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, svc.Output.String())
	}
	fams = metricsOf(ctx, t, addr)
	counted("after an upgrade in place", fams)
	if v := samples(fams, "baton_info")["version=v2,exe="+path]; v != 1 {
		t.Errorf("baton_info after the upgrade: %v", samples(fams, "baton_info"))
	}
	svc.Signal(t, unix.SIGTERM)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
