package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/batonsd/baton/internal/control"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads text with Prometheus's own parser: what a scrape reads.
func parse(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("the Prometheus text parser refuses it: %v\n%s", err, text)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// the given name, value pairs; it fails the test if there is none.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
		t.Fatalf("%s%v: neither a gauge nor a counter", name, labels)
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

func sample() control.Status {
	var totals control.Totals
	totals.CountRollout("reload", "ok", 0.3)
	totals.CountRollout("reload", "ok", 7)
	totals.CountRollout("scale", "failed", 2000) // above every bucket
	totals.CountCrash(control.CauseSignal)
	totals.CountCrash(control.CauseWatchdog)
	totals.Restarts = 2
	totals.CountNewWorkerFailure(control.CauseNotReady)
	totals.DrainKills = 1
	totals.CountRecycle(control.RecycleMemory)
	totals.CountRecycle(control.RecycleMemory)
	totals.Rollouts["recycle"] = map[string]uint64{"ok": 1} // the histogram's figures stay the test's
	return control.Status{
		RecycleMemoryBytes: 512 << 20, RecycleAfterSeconds: 3600,
		Version: "1.2.3", Exe: `/opt/odd "dir"\bin`, State: "ready", Generation: 3, Slots: 2, Ready: 2,
		Workers: []control.Worker{
			{Slot: 0, PID: 100, Generation: 3, State: "ready", CPUSeconds: 1.5, TreeRSSBytes: 10 << 20, Processes: 3, UptimeSeconds: 60, MemoryBytes: 9 << 20},
			{Slot: 1, PID: 101, Generation: 3, State: "ready", CPUSeconds: 0.25, TreeRSSBytes: 5 << 20, Processes: 1, UptimeSeconds: 30},
		},
		Incoming: []control.Worker{{Slot: 1, PID: 102, Generation: 4, State: "starting"}},
		Draining: []control.Worker{{Slot: 0, PID: 90, Generation: 2, State: "draining", CPUSeconds: 9}},
		Listeners: []control.Listener{
			{Name: "web", Address: "127.0.0.1:8080", Listening: true},
			{Name: "odd\"name\\\n", Address: "unix:/run/a b.sock", Listening: false},
			{Name: "latin1-\xe9", Address: "127.0.0.1:8081", Listening: true},
		},
		Crashes: 2, CPUSeconds: 0.75, RSSBytes: 9 << 20, Totals: totals,
		Rollout: &control.Rollout{Kind: "reload"},
	}
}

func TestFormatParses(t *testing.T) {
	st := sample()
	fams := parse(t, Format(&st))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"baton_info", []string{"version", "1.2.3", "exe", `/opt/odd "dir"\bin`}, 1},
		{"baton_generation", nil, 3},
		{"baton_slots", nil, 2},
		{"baton_ready_workers", nil, 2},
		{"baton_healthy", nil, 0}, // a listener does not listen
		{"baton_workers", []string{"state", "ready"}, 2},
		{"baton_workers", []string{"state", "starting"}, 1},
		{"baton_workers", []string{"state", "draining"}, 1},
		{"baton_workers", []string{"state", "restarting"}, 0},
		{"baton_rollout_in_progress", nil, 1},
		{"baton_rollouts_total", []string{"kind", "reload", "result", "ok"}, 2},
		{"baton_rollouts_total", []string{"kind", "reload", "result", "failed"}, 0},
		{"baton_rollouts_total", []string{"kind", "scale", "result", "failed"}, 1},
		{"baton_worker_crashes_total", []string{"cause", "signal"}, 1},
		{"baton_worker_crashes_total", []string{"cause", "watchdog"}, 1},
		{"baton_worker_crashes_total", []string{"cause", "exit"}, 0},
		{"baton_worker_restarts_total", nil, 2},
		{"baton_new_worker_failures_total", []string{"cause", "not_ready"}, 1},
		{"baton_drain_kills_total", nil, 1},
		{"baton_recycles_total", []string{"reason", "memory"}, 2},
		{"baton_recycles_total", []string{"reason", "age"}, 0},
		{"baton_recycles_total", []string{"reason", "manual"}, 0},
		{"baton_recycles_total", []string{"reason", "generation"}, 0},
		{"baton_rollouts_total", []string{"kind", "recycle", "result", "ok"}, 1},
		{"baton_recycle_memory_bytes", nil, 512 << 20},
		{"baton_recycle_after_seconds", nil, 3600},
		{"baton_worker_recycle_memory_bytes", []string{"pid", "100"}, 9 << 20},
		{"baton_recent_crashes", nil, 2},
		{"baton_listener_listening", []string{"name", "web"}, 1},
		{"baton_listener_listening", []string{"name", "odd\"name\\\n", "address", "unix:/run/a b.sock"}, 0},
		{"baton_listener_listening", []string{"name", "latin1-\uFFFD"}, 1},
		{"baton_worker_cpu_seconds_total", []string{"slot", "0", "pid", "100", "generation", "3"}, 1.5},
		{"baton_worker_cpu_seconds_total", []string{"pid", "90", "generation", "2"}, 9},
		{"baton_worker_resident_memory_bytes", []string{"pid", "100"}, 10 << 20},
		{"baton_worker_processes", []string{"pid", "100"}, 3},
		{"baton_worker_uptime_seconds", []string{"pid", "101"}, 30},
		{"process_cpu_seconds_total", nil, 0.75},
		{"process_resident_memory_bytes", nil, 9 << 20},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%q = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(fams["baton_worker_cpu_seconds_total"].GetMetric()); n != 4 {
		t.Errorf("%d workers with a CPU figure, want 4 (2 serving, 1 incoming, 1 draining)", n)
	}

	h := fams["baton_rollout_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 2007.3 {
		t.Errorf("rollout duration: count %d, sum %v; want 3, 2007.3", h.GetSampleCount(), h.GetSampleSum())
	}
	want := map[float64]uint64{0.5: 1, 5: 1, 10: 2, 900: 2}
	for _, b := range h.GetBucket() {
		if n, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != n {
			t.Errorf("bucket le=%v: %d, want %d (cumulative)", b.GetUpperBound(), b.GetCumulativeCount(), n)
		}
	}
}

// TestFormatOfNothingYet: a service that has done nothing yet still has
// every counter, at 0, so that rate() and increase() see the first event.
func TestFormatOfNothingYet(t *testing.T) {
	st := control.Status{State: "starting", Slots: 4}
	fams := parse(t, Format(&st))
	for _, name := range []string{"baton_rollouts_total", "baton_worker_crashes_total", "baton_new_worker_failures_total", "baton_rollout_duration_seconds"} {
		if len(fams[name].GetMetric()) == 0 {
			t.Errorf("%s: no sample", name)
		}
	}
	if v := value(t, fams, "baton_rollouts_total", "kind", "scale", "result", "ok"); v != 0 {
		t.Errorf("no rollout yet: %v", v)
	}
}

func TestHandler(t *testing.T) {
	st := sample()
	var fail error
	srv := httptest.NewServer(Handler(func(ctx context.Context) (control.Status, error) { return st, fail }))
	defer srv.Close()
	get := func(path string) (int, string, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}

	code, ctype, body := get("/metrics")
	if code != 200 || ctype != ContentType {
		t.Fatalf("/metrics: %d %q", code, ctype)
	}
	parse(t, []byte(body))

	code, _, body = get("/healthz")
	if code != 503 || !strings.Contains(body, `listener odd"name\\x0a (unix:/run/a b.sock) not listening`) {
		t.Errorf("/healthz with a listener down: %d %q", code, body)
	}
	st.Listeners = st.Listeners[:1]
	if code, _, body = get("/healthz"); code != 200 || body != "ok: 2/2 ready, generation 3\n" {
		t.Errorf("/healthz at full strength: %d %q", code, body)
	}

	fail = errors.New("baton is stopping")
	if code, _, body = get("/metrics"); code != 503 || !strings.Contains(body, "baton is stopping") {
		t.Errorf("/metrics when status fails: %d %q", code, body)
	}
	if code, _, _ = get("/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
}
