// Package metrics serves baton's state to Prometheus, on an opt-in TCP
// listener (baton run --metrics ADDR): GET /metrics answers in the text
// exposition format, GET /healthz 200 when the service serves at full
// strength and 503 with the reason otherwise (`baton status --check` over
// HTTP, for load balancers and orchestrators).
//
// Every figure comes from one status snapshot taken on the supervisor's
// loop, the same one `baton status --json` prints, begun after the request
// came: a scrape costs what a status costs (reading /proc for each
// worker's tree), requests that come together share one (snapshot.go), and
// nothing is sampled between scrapes. Counters count since the service started and
// are handed over by an in-place upgrade; a restart of the service resets
// them, as Prometheus expects of counters.
package metrics

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// ContentType is the text format's content type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// StatusFunc takes a status snapshot.
type StatusFunc func(context.Context) (control.Status, error)

// scrapeTimeout bounds one request's wait for the supervisor's loop.
const scrapeTimeout = 10 * time.Second

// writeTimeout bounds the writing of one answer, once its snapshot is
// taken: a client that does not read cannot hold its connection longer.
// Answers up to the socket's buffers (tens of KB: /healthz, and /metrics
// of dozens of workers) are written at once, read or not.
const writeTimeout = 500 * time.Millisecond

// Handler serves /metrics and /healthz from status.
func Handler(status StatusFunc) http.Handler {
	mux := http.NewServeMux()
	shared := &snapshots{status: status, every: snapshotEvery}
	snapshot := func(w http.ResponseWriter, r *http.Request) (*round, bool) {
		ctx, cancel := context.WithTimeout(r.Context(), scrapeTimeout)
		defer cancel()
		taken, err := shared.take(ctx)
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		if err != nil {
			http.Error(w, "baton status: "+err.Error(), http.StatusServiceUnavailable)
			return nil, false
		}
		return taken, true
	}
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if taken, ok := snapshot(w, r); ok {
			w.Header().Set("Content-Type", ContentType)
			w.Write(taken.format())
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		taken, ok := snapshot(w, r)
		if !ok {
			return
		}
		if err := taken.st.Health(); err != nil {
			http.Error(w, "not serving at full strength: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(taken.st.Healthy() + "\n"))
	})
	return mux
}

// MaxConns bounds the connections the endpoint holds at once; a new one
// beyond it closes the oldest not owed an answer (evict.go). Every
// connection is an fd of baton's, which new workers need: 200 idle
// connections to an unbounded endpoint would take 200 of them (and under
// LimitNOFILE, all of them).
const MaxConns = 64

// maxHeaderBytes bounds a request's header.
const maxHeaderBytes = 16 << 10

// Serve serves Handler(status) on ln until Close, under the rules in
// evict.go. net/http backs off and retries when accept fails for a while
// (EMFILE), as the control socket does.
func Serve(ln net.Listener, status StatusFunc) *http.Server {
	h := Handler(status)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(w, r)
			rc := http.NewResponseController(w)
			rc.Flush() // the answer is out (or failed): the connection owes nothing
			// A body not sent is not waited for.
			rc.SetReadDeadline(time.Now())
			if c, ok := r.Context().Value(connKey{}).(*trackedConn); ok {
				c.answer()
			}
		}),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		// A header must come within ReadHeaderTimeout; an answer is
		// bounded by the snapshot's wait and writeTimeout.
		ReadHeaderTimeout: 2 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      scrapeTimeout + writeTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(bound(ln, MaxConns))
	return srv
}

type connKey struct{}

// Format writes st in the text exposition format.
func Format(st *control.Status) []byte {
	var e exposition
	e.service(st)
	e.rollouts(st, &st.Totals)
	e.failures(st)
	e.recycles(st)
	e.listeners(st)
	e.perWorker(st)
	e.one("process_cpu_seconds_total", counter, "CPU time (user and system) baton itself has used.", st.CPUSeconds)
	e.one("process_resident_memory_bytes", gauge, "baton's own resident memory.", float64(st.RSSBytes))
	return e.b.Bytes()
}

// service: what baton runs, and at what strength.
func (e *exposition) service(st *control.Status) {
	e.one("baton_info", gauge, "baton's version and the binary it runs (always 1).", 1,
		"version", st.Version, "exe", st.Exe)
	e.one("baton_exe_replaced", gauge, "1 when baton's binary was replaced on disk since it started: `baton upgrade` runs the new one.",
		boolValue(st.ExeReplaced))
	e.one("baton_healthy", gauge, "1 when the service serves at full strength (as baton status --check): every slot has a ready worker, every listener listens.",
		boolValue(st.Health() == nil))
	e.one("baton_generation", gauge, "The generation serving.", float64(st.Generation))
	e.one("baton_slots", gauge, "Worker slots: the number of workers the service runs at full strength.", float64(st.Slots))
	e.one("baton_ready_workers", gauge, "Slots whose worker is ready.", float64(st.Ready))

	e.family("baton_workers", gauge, "Worker processes by state: ready and starting (in a slot or brought up by a rollout), draining, and slots restarting (no process yet).")
	states := map[string]int{"ready": 0, "starting": 0, "draining": len(st.Draining), "restarting": 0}
	for _, w := range slices.Concat(st.Workers, st.Incoming) {
		states[w.State]++
	}
	for _, s := range []string{"ready", "starting", "draining", "restarting"} {
		e.sample("baton_workers", float64(states[s]), "state", s)
	}
}

// rollouts: the rollout running, and those ended.
func (e *exposition) rollouts(st *control.Status, t *control.Totals) {
	e.one("baton_rollout_in_progress", gauge, "1 while a rollout (a reload or a scale) runs.", boolValue(st.Rollout != nil))
	e.family("baton_rollouts_total", counter, "Rollouts ended, by kind (reload, scale, rollback, recycle) and result (ok, failed, stopped: cut short by baton's stop).")
	for _, kind := range []string{"reload", "scale", "rollback", "recycle"} {
		for _, result := range []string{"ok", "failed", control.RolloutStopped} {
			e.sample("baton_rollouts_total", float64(t.Rollouts[kind][result]), "kind", kind, "result", result)
		}
	}
	e.family("baton_rollout_duration_seconds", histogram, "How long rollouts took, ok or failed: from the request to the last new worker ready and the old ones told to drain, or to the failure.")
	h := t.RolloutSeconds
	bounds := h.Bounds
	if len(bounds) == 0 {
		bounds = control.RolloutBuckets
	}
	var below uint64
	for i, b := range bounds {
		if i < len(h.Counts) {
			below += h.Counts[i]
		}
		e.sample("baton_rollout_duration_seconds_bucket", float64(below), "le", formatValue(b))
	}
	e.sample("baton_rollout_duration_seconds_bucket", float64(h.Count), "le", "+Inf")
	e.sample("baton_rollout_duration_seconds_sum", h.Sum)
	e.sample("baton_rollout_duration_seconds_count", float64(h.Count))
}

// failures: workers that crashed, failed a rollout or were killed draining.
func (e *exposition) failures(st *control.Status) {
	causes := []string{control.CauseExit, control.CauseSignal, control.CauseWatchdog, control.CauseNotReady}
	e.family("baton_worker_crashes_total", counter, "Serving workers that exited when nobody asked them to, by cause: exit (by itself), signal (one baton did not send), watchdog and not_ready (baton killed it). They count against --crash-limit.")
	for _, c := range causes {
		e.sample("baton_worker_crashes_total", float64(st.Totals.Crashes[c]), "cause", c)
	}
	e.one("baton_worker_restarts_total", counter, "Crashed workers restarted.", float64(st.Totals.Restarts))
	e.family("baton_new_worker_failures_total", counter, "A rollout's new workers that failed, by cause (as baton_worker_crashes_total); each aborted its rollout.")
	for _, c := range causes {
		e.sample("baton_new_worker_failures_total", float64(st.Totals.NewWorkerFailures[c]), "cause", c)
	}
	e.one("baton_drain_kills_total", counter, "Draining workers killed before they were done: at --drain-timeout, or to free file descriptors.", float64(st.Totals.DrainKills))
	e.one("baton_recent_crashes", gauge, "Crashes within --crash-limit's window.", float64(st.Crashes))
}

// recycles: workers recycled, and the limits that recycle them.
func (e *exposition) recycles(st *control.Status) {
	e.family("baton_recycles_total", counter, "Workers replaced gracefully (successor ready first) without a deploy, by reason: memory (--recycle-memory), age (--recycle-after), manual (baton recycle), generation (a worker left of a failed rollout's generation). Not crashes.")
	for _, r := range []string{control.RecycleMemory, control.RecycleAge, control.RecycleManual, control.RecycleGeneration} {
		e.sample("baton_recycles_total", float64(st.Totals.Recycles[r]), "reason", r)
	}
	e.one("baton_recycle_memory_bytes", gauge, "--recycle-memory: the memory (PSS of a worker's process tree) above which a worker is recycled; 0 is off.", float64(st.RecycleMemoryBytes))
	e.one("baton_recycle_after_seconds", gauge, "--recycle-after: the age at which a worker is recycled (less up to 10% at random); 0 is off.", st.RecycleAfterSeconds)
}

// listeners: whether each shared socket listens.
func (e *exposition) listeners(st *control.Status) {
	e.family("baton_listener_listening", gauge, "1 when a shared socket listens (SO_ACCEPTCONN as baton last checked it).")
	for _, l := range st.Listeners {
		e.sample("baton_listener_listening", boolValue(l.Listening), "name", l.Name, "address", l.Address)
	}
}

// perWorker: what each live worker costs, in a slot, being brought up, or
// draining.
func (e *exposition) perWorker(st *control.Status) {
	// Each live worker: in a slot, being brought up, or draining.
	all := slices.Concat(st.Workers, st.Incoming, st.Draining)
	all = slices.DeleteFunc(all, func(w control.Worker) bool { return w.PID == 0 })
	per := func(name, typ, help string, v func(control.Worker) float64) {
		e.family(name, typ, help)
		for _, w := range all {
			e.sample(name, v(w), "slot", strconv.Itoa(w.Slot), "generation", strconv.Itoa(w.Generation), "pid", strconv.Itoa(w.PID))
		}
	}
	per("baton_worker_cpu_seconds_total", counter, "CPU time (user and system) of a worker and every live process it started.",
		func(w control.Worker) float64 { return w.CPUSeconds })
	per("baton_worker_resident_memory_bytes", gauge, "Resident memory of a worker and every process it started.",
		func(w control.Worker) float64 { return float64(w.TreeRSSBytes) })
	per("baton_worker_recycle_memory_bytes", gauge, "A worker's tree's memory as --recycle-memory last measured it: its PSS, or, while its RSS (never less) is below the ceiling, that RSS; 0 when not measured.",
		func(w control.Worker) float64 { return float64(w.MemoryBytes) })
	per("baton_worker_processes", gauge, "Processes in a worker's tree: the worker and what it started.",
		func(w control.Worker) float64 { return float64(w.Processes) })
	per("baton_worker_uptime_seconds", gauge, "How long a worker has run.",
		func(w control.Worker) float64 { return w.UptimeSeconds })
}
