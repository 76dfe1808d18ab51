package bench

// The leak run: workers that leak a fixed amount on every request, under
// the same open-loop load, for minutes. baton with --recycle-memory, baton
// without it, and PM2's cluster mode with max_memory_restart on the Node
// twin: what the load lost, how many workers served at the lowest, how
// often a worker was replaced, and what the workers held at the peak.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/proctree"
)

// LeakPlan is one leak run.
type LeakPlan struct {
	Rate           int // requests per second, open loop
	KeepAliveEvery int
	Duration       time.Duration // of the load, per scenario
	Workers        int
	Leak           uint64 // bytes kept for good on every request
	Ceiling        uint64 // --recycle-memory and max_memory_restart
}

// Unbounded is what the workers of the scenario without recycling hold in
// the end: every request's leak, whichever worker served it.
func (p LeakPlan) Unbounded() uint64 {
	return uint64(p.Rate) * uint64(p.Duration/time.Second) * p.Leak
}

// leakSampleEvery is how often the run asks the supervisor how many
// workers serve and reads the workers' memory from /proc.
const leakSampleEvery = 100 * time.Millisecond

// LeakResult is one scenario's leak run.
type LeakResult struct {
	Scenario    string         `json:"scenario"`
	Requests    int            `json:"requests"`
	FailedTotal int            `json:"failed_total"`
	FailedKinds map[string]int `json:"failed_by_kind"`
	P50         time.Duration  `json:"p50_ns"`
	P99         time.Duration  `json:"p99_ns"`
	// Replaced is the workers the supervisor replaced: baton's recycles
	// (status totals), PM2's restarts (the sum of restart_time).
	Replaced         int           `json:"replaced"`
	FirstReplacement time.Duration `json:"first_replacement_ns,omitempty"` // into the load, as sampled
	// Samples taken every leakSampleEvery; MinServing is the fewest
	// workers serving in one, Below how many had fewer than the plan's.
	// baton: `ready` of its status. PM2: its `online` processes, plus the
	// old worker that serves on while its successor is `launching` (PM2
	// lists the successor under the slot's id and hides the old one under
	// "_old_ID" until it stops); MinListed is `online` alone, as `pm2
	// jlist` shows it.
	Samples    int `json:"samples"`
	MinServing int `json:"min_serving"`
	Below      int `json:"samples_below"`
	MinListed  int `json:"min_listed_online,omitempty"`
	// PeakRSS is the highest sum, over one sample, of the resident memory
	// (statm) of every process under the supervisor, the supervisor left
	// out: the workers, draining and starting ones too. PeakWorkerRSS is
	// the largest single process seen.
	PeakRSS       uint64 `json:"peak_rss_bytes"`
	PeakWorkerRSS uint64 `json:"peak_worker_rss_bytes"`
}

// leakSample is what one poll of a scenario saw.
type leakSample struct {
	serving, listed, replaced int
	rss, largest              uint64
}

// leakScenario runs leaking workers under a supervisor.
type leakScenario interface {
	Name() string
	Start(ctx context.Context) error
	Stop()
	poll(ctx context.Context) (leakSample, error)
}

// LeakScenarios are the scenarios of the leak run: baton with and without
// recycling, then PM2 if it is there.
func LeakScenarios(p Params, plan LeakPlan) []leakScenario {
	p.Workers = plan.Workers
	scs := []leakScenario{&leakBaton{batonScenario: batonScenario{p: p}, plan: plan, recycle: true},
		&leakBaton{batonScenario: batonScenario{p: p}, plan: plan}}
	if p.NodeDir != "" && p.PM2Dir != "" {
		scs = append(scs, &leakPM2{pm2Cluster: pm2Cluster{p: p}, plan: plan})
	}
	return scs
}

// MeasureLeak runs sc under the plan's load for its duration, sampling the
// workers every leakSampleEvery.
func MeasureLeak(ctx context.Context, sc leakScenario, url string, plan LeakPlan) (LeakResult, error) {
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := sc.Start(startCtx)
	cancel()
	if err != nil {
		sc.Stop()
		return LeakResult{}, fmt.Errorf("%s: start: %w", sc.Name(), err)
	}
	defer sc.Stop()
	r := LeakResult{Scenario: sc.Name(), MinServing: plan.Workers, MinListed: plan.Workers}
	load := StartLoad(url, plan.Rate, plan.KeepAliveEvery)
	tick := time.NewTicker(leakSampleEvery)
	defer tick.Stop()
	end := time.After(plan.Duration)
	var pollErr error
	var last leakSample
	for done := false; !done; {
		select {
		case <-end:
			done = true
		case <-ctx.Done():
			load.Stop()
			return r, ctx.Err()
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := sc.poll(pctx)
		cancel()
		if err != nil {
			pollErr = err
			continue
		}
		r.Samples++
		r.MinServing, r.MinListed = min(r.MinServing, s.serving), min(r.MinListed, s.listed)
		if s.serving < plan.Workers {
			r.Below++
		}
		r.PeakRSS, r.PeakWorkerRSS = max(r.PeakRSS, s.rss), max(r.PeakWorkerRSS, s.largest)
		if s.replaced > 0 && r.FirstReplacement == 0 {
			r.FirstReplacement = load.Since()
		}
		last = s
	}
	samples := load.Stop()
	st := Summarise(samples, nil, false)
	r.Requests, r.FailedKinds, r.FailedTotal, r.P50, r.P99 = st.Requests, st.Failed, st.FailedTotal(), st.P50, st.P99
	r.Replaced = last.replaced
	if r.Samples < int(plan.Duration/leakSampleEvery)/2 {
		return r, fmt.Errorf("%s: %d samples of %d (last error: %v)", sc.Name(), r.Samples, plan.Duration/leakSampleEvery, pollErr)
	}
	return r, nil
}

// workersRSS reads the resident memory of every process under pid, pid
// left out: the sum, the largest, and the pids.
func workersRSS(pid int) (sum, largest uint64, pids []int) {
	if pid <= 0 {
		return 0, 0, nil
	}
	for _, p := range proctree.Tree(pid)[1:] {
		u, err := proctree.Of(p)
		if err != nil {
			continue // exited meanwhile
		}
		sum, largest = sum+u.RSS, max(largest, u.RSS)
		pids = append(pids, p)
	}
	return sum, largest, pids
}

// leakBaton is baton running the Go example worker with --leak, with
// --recycle-memory at the plan's ceiling or without it.
type leakBaton struct {
	batonScenario
	plan    LeakPlan
	recycle bool
}

func (s *leakBaton) Name() string {
	if s.recycle {
		return "baton --recycle-memory " + sizeName(s.plan.Ceiling)
	}
	return "baton, no recycling"
}

func (s *leakBaton) Start(ctx context.Context) error {
	var err error
	if s.dir, err = os.MkdirTemp("", "bl"); err != nil {
		return err
	}
	args := []string{"run", "--workers", strconv.Itoa(s.p.Workers), "--listen", "app=" + s.p.addr(),
		"--control", s.control(), "--log", "inherit"}
	if s.recycle {
		args = append(args, "--recycle-memory", strconv.FormatUint(s.plan.Ceiling, 10))
	}
	args = append(append(append(args, "--", s.p.Worker), s.p.workerArgs()...), "-leak", strconv.FormatUint(s.plan.Leak, 10))
	return s.launch(ctx, exec.Command(s.p.Baton, args...))
}

func (s *leakBaton) poll(ctx context.Context) (leakSample, error) {
	resp, err := control.Call(ctx, s.control(), control.Request{Command: control.CmdStatus})
	if err != nil {
		return leakSample{}, err
	}
	if resp.Status == nil {
		return leakSample{}, errors.New("status: no status in the answer")
	}
	smp := leakSample{serving: resp.Status.Ready, listed: resp.Status.Ready}
	for _, n := range resp.Status.Totals.Recycles {
		smp.replaced += int(n)
	}
	smp.rss, smp.largest, _ = workersRSS(s.PID())
	return smp, nil
}

// leakPM2 is PM2's cluster mode as in the deploy scenarios (wait_ready,
// listen_timeout, kill_timeout), with max_memory_restart at the plan's
// ceiling, on the Node twin with LEAK_BYTES. PM2 compares a worker's RSS
// with max_memory_restart in its daemon's periodic task, every 30 s by
// default (PM2_WORKER_INTERVAL, left unset here), and replaces a worker over
// it as `pm2 reload` does: a new one first, then the old one stopped.
type leakPM2 struct {
	pm2Cluster
	plan   LeakPlan
	lister *exec.Cmd // node pm2list.js
	ask    io.WriteCloser
	lines  chan string
}

func (s *leakPM2) Name() string {
	return "PM2 " + PM2Version + " max_memory_restart " + sizeName(s.plan.Ceiling) + " (Node worker)"
}

func (s *leakPM2) Start(ctx context.Context) error {
	var err error
	if s.home, err = os.MkdirTemp("", "bench-pm2"); err != nil {
		return err
	}
	app := map[string]any{
		"name":               "bench",
		"script":             filepath.Join(s.p.NodeDir, "app.js"),
		"instances":          s.p.Workers,
		"exec_mode":          "cluster",
		"wait_ready":         true,
		"listen_timeout":     10000,
		"kill_timeout":       stopTimeout.Milliseconds(),
		"max_memory_restart": s.plan.Ceiling, // bytes
		"env":                map[string]string{"LEAK_BYTES": strconv.FormatUint(s.plan.Leak, 10)},
	}
	eco := filepath.Join(s.home, "ecosystem.json")
	b, _ := json.Marshal(map[string]any{"apps": []any{app}})
	if err := os.WriteFile(eco, b, 0o644); err != nil {
		return err
	}
	if err := s.pm2(ctx, "start", eco); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://%s/", s.p.addr()), s.p.StartDelay); err != nil {
		return err
	}
	s.lister = exec.Command("node", filepath.Join(s.p.NodeDir, "pm2list.js"))
	s.lister.Env = append(os.Environ(), "PM2_HOME="+s.home, "PM2_MODULE="+filepath.Join(s.p.PM2Dir, "node_modules", "pm2"))
	s.lister.Stderr = os.Stderr
	if s.ask, err = s.lister.StdinPipe(); err != nil {
		return err
	}
	out, err := s.lister.StdoutPipe()
	if err != nil {
		return err
	}
	if err := s.lister.Start(); err != nil {
		return err
	}
	s.lines = make(chan string, 16)
	go scanLines(out, s.lines)
	for {
		smp, err := s.poll(ctx)
		if err == nil && smp.listed == s.p.Workers {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("PM2 never listed %d workers online: %v (%w)", s.p.Workers, err, ctx.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pm2Proc is one process as pm2list.js lists it.
type pm2Proc struct {
	ID       int    `json:"id"`
	PID      int    `json:"pid"`
	Status   string `json:"status"`
	Restarts int    `json:"restarts"`
}

func (s *leakPM2) poll(ctx context.Context) (leakSample, error) {
	if _, err := io.WriteString(s.ask, "\n"); err != nil {
		return leakSample{}, err
	}
	var line string
	for !strings.HasPrefix(line, "list ") {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return leakSample{}, errors.New("pm2list.js exited")
			}
			if strings.HasPrefix(l, "error ") {
				return leakSample{}, errors.New(l)
			}
			line = l
		case <-ctx.Done():
			return leakSample{}, fmt.Errorf("pm2list.js: %w", ctx.Err())
		}
	}
	var procs []pm2Proc
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "list ")), &procs); err != nil {
		return leakSample{}, fmt.Errorf("pm2list.js: %w", err)
	}
	var smp leakSample
	listed := map[int]bool{}
	launching := 0
	for _, p := range procs {
		listed[p.PID] = true
		smp.replaced += p.Restarts
		switch p.Status {
		case "online":
			smp.listed++
		case "launching":
			launching++
		}
	}
	var pids []int
	smp.rss, smp.largest, pids = workersRSS(s.PID())
	unlisted := 0
	for _, pid := range pids {
		if !listed[pid] {
			unlisted++
		}
	}
	// A successor launching has its predecessor serving, unlisted, until
	// it is ready; an unlisted worker next to no launching one drains.
	smp.serving = smp.listed + min(launching, unlisted)
	return smp, nil
}

func (s *leakPM2) Stop() {
	if s.lister != nil && s.lister.Process != nil {
		s.ask.Close() // it disconnects and exits
		done := make(chan struct{})
		go func() { s.lister.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.lister.Process.Signal(syscall.SIGKILL)
			<-done
		}
	}
	s.pm2Cluster.Stop()
}

// LeakTable writes the leak run's results as one markdown table.
func LeakTable(w io.Writer, plan LeakPlan, rs []LeakResult) {
	fmt.Fprintf(w, "| scenario | requests | failed (by kind) | p99 | workers replaced (first after) | fewest serving of %d (samples below) | peak RSS, all workers | largest worker |\n", plan.Workers)
	fmt.Fprintln(w, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		first := ""
		if r.FirstReplacement > 0 {
			first = fmt.Sprintf(" (%s)", r.FirstReplacement.Round(100*time.Millisecond))
		}
		serving := fmt.Sprintf("%d (%d of %d)", r.MinServing, r.Below, r.Samples)
		if r.MinListed != r.MinServing {
			serving += fmt.Sprintf("; %d listed online", r.MinListed)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %d%s | %s | %s | %s |\n", r.Scenario, r.Requests, kinds(r.FailedTotal, r.FailedKinds),
			r.P99.Round(10*time.Microsecond), r.Replaced, first, serving, mib(r.PeakRSS), mib(r.PeakWorkerRSS))
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// sizeName is n bytes as 16K or 128M when it is a whole number of them.
func sizeName(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return strconv.FormatUint(n, 10)
}

// ParseSize parses a size in bytes, or with a suffix K, M or G (powers of
// 1024): 16K, 128M.
func ParseSize(s string) (uint64, error) {
	shift := 0
	switch strings.ToUpper(s[len(s)-min(len(s), 1):]) {
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	}
	if shift > 0 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > 1<<40>>shift {
		return 0, fmt.Errorf("size %q: want bytes or a number with K, M or G", s)
	}
	return n << shift, nil
}

// MemAvailable is /proc/meminfo's MemAvailable, in bytes (0: unknown).
func MemAvailable() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// SetJSON sets key in the JSON object in path (made if it is missing) to
// v, keeping the object's other keys: the leak run's figures go next to a
// full run's.
func SetJSON(path, key string, v any) error {
	obj := map[string]json.RawMessage{}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &obj); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	obj[key] = b
	out, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}
