package bench

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Plan is one measurement.
type Plan struct {
	Rate           int           // requests per second
	KeepAliveEvery int           // every n-th request on a kept-alive connection
	Steady         time.Duration // load before the first deploy, the steady reference
	Deploys        int
	Gap            time.Duration // between deploys
}

// Result is one scenario under one plan.
type Result struct {
	Scenario    string         `json:"scenario"`
	Deploys     int            `json:"deploys"`
	DeployMean  time.Duration  `json:"deploy_mean_ns"`
	Steady      Stats          `json:"steady"`
	During      Stats          `json:"during_deploys"`
	P99Ratio    float64        `json:"p99_during_over_steady"`
	FailedTotal int            `json:"failed_total"`
	FailedKinds map[string]int `json:"failed_by_kind"`
	// The supervisor's (baton, PM2's daemon, the cluster primary) peak RSS
	// and CPU (share of one core) while deploying; 0 when not measured.
	SupervisorRSSKB int     `json:"supervisor_rss_kb,omitempty"`
	SupervisorCPU   float64 `json:"supervisor_cpu,omitempty"`
}

// supervised is a scenario with one long-lived supervising process.
type supervised interface{ PID() int }

// warmup is left out of the steady reference: connections being made.
const warmup = 500 * time.Millisecond

// Measure runs sc under the plan's load: a steady stretch, then the
// deploys one after the other, each window running from the deploy's start
// until it returned plus a little for requests still in flight.
func Measure(ctx context.Context, sc Scenario, url string, plan Plan) (Result, error) {
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := sc.Start(startCtx)
	cancel()
	if err != nil {
		sc.Stop()
		return Result{}, fmt.Errorf("%s: start: %w", sc.Name(), err)
	}
	defer sc.Stop()
	load := StartLoad(url, plan.Rate, plan.KeepAliveEvery)
	time.Sleep(warmup + plan.Steady)
	windows := []Window{{0, warmup}} // not steady, not a deploy
	var total time.Duration
	var usage *usageWatch
	if sup, ok := sc.(supervised); ok && sup.PID() > 0 {
		usage = watchUsage(sup.PID())
	}
	for range plan.Deploys {
		from := load.Since()
		if err := sc.Deploy(ctx); err != nil {
			load.Stop()
			return Result{}, fmt.Errorf("%s: deploy: %w", sc.Name(), err)
		}
		to := load.Since()
		total += to - from
		windows = append(windows, Window{from, to + 200*time.Millisecond})
		time.Sleep(plan.Gap)
	}
	samples := load.Stop()
	r := Result{
		Scenario:   sc.Name(),
		Deploys:    plan.Deploys,
		DeployMean: total / time.Duration(max(plan.Deploys, 1)),
		Steady:     Summarise(samples, windows, false),
		During:     Summarise(samples, windows[1:], true),
	}
	if r.Steady.P99 > 0 {
		r.P99Ratio = float64(r.During.P99) / float64(r.Steady.P99)
	}
	if usage != nil {
		r.SupervisorRSSKB, r.SupervisorCPU = usage.stop()
	}
	r.FailedKinds = r.During.Failed
	r.FailedTotal = r.During.FailedTotal() + r.Steady.FailedTotal()
	return r, nil
}

// Table writes the results as one markdown table.
func Table(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| scenario | deploys | failed requests (by kind) | p99 steady | p99 during deploys | ratio | deploy takes | supervisor RSS, CPU |")
	fmt.Fprintln(w, "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range results {
		usage := "-"
		if r.SupervisorRSSKB > 0 {
			usage = fmt.Sprintf("%.1f MB, %.1f%%", float64(r.SupervisorRSSKB)/1024, 100*r.SupervisorCPU)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %.2fx | %s | %s |\n", r.Scenario, r.Deploys, kinds(r.FailedTotal, r.FailedKinds),
			r.Steady.P99.Round(10*time.Microsecond), r.During.P99.Round(10*time.Microsecond), r.P99Ratio, r.DeployMean.Round(time.Millisecond), usage)
	}
}

func kinds(total int, m map[string]int) string {
	if total == 0 {
		return "0"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}
