package bench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is everything one run measured.
type Report struct {
	Results     []Result      `json:"results"`
	Throughput  []Throughput  `json:"throughput,omitempty"`
	WrkRollouts *WrkRollouts  `json:"wrk_rollouts,omitempty"`
	Swap        *SwapOverhead `json:"swap_overhead,omitempty"`
	Footprints  []Footprint   `json:"footprints,omitempty"`
}

// Targets writes baton's targets next to what this run measured, each
// met or missed; a target the run did not measure is left out, and the
// table too when none was.
func Targets(w io.Writer, r Report) {
	var rows []string
	row := func(target, measured string, met bool) {
		rows = append(rows, fmt.Sprintf("| %s | %s | %s |\n", target, measured, map[bool]string{true: "yes", false: "**no**"}[met]))
	}

	var failed []string
	lost := 0
	for _, res := range r.Results {
		if strings.HasPrefix(res.Scenario, "baton") {
			failed = append(failed, fmt.Sprintf("%s: %d", res.Scenario, res.FailedTotal))
			lost += res.FailedTotal
		}
	}
	if r.WrkRollouts != nil {
		failed = append(failed, fmt.Sprintf("rollouts under wrk: %d", r.WrkRollouts.Errors))
		lost += r.WrkRollouts.Errors
	}
	if len(failed) > 0 {
		row("0 failed requests in every scenario", strings.Join(failed, "; "), lost == 0)
	}
	for _, res := range r.Results {
		if res.Scenario == (&batonScenario{}).Name() || res.Scenario == (&upgradeScenario{}).Name() {
			row("p99 during deploys ≤ 1.1x steady p99: "+res.Scenario,
				fmt.Sprintf("%.2fx (%s over %s)", res.P99Ratio, res.During.P99.Round(10*time.Microsecond), res.Steady.P99.Round(10*time.Microsecond)), res.P99Ratio <= 1.1)
		}
	}
	if len(r.Throughput) == 2 && r.Throughput[0].Wrk > 0 && r.Throughput[0].Go > 0 {
		wrk, gen := r.Throughput[1].Wrk/r.Throughput[0].Wrk, r.Throughput[1].Go/r.Throughput[0].Go
		row("throughput ≥ 0.99x the bare worker", fmt.Sprintf("%.3fx (wrk), %.3fx (Go generator)", wrk, gen), wrk >= 0.99 && gen >= 0.99)
	}
	if r.Swap != nil {
		row("≤ 1 ms supervisor time per swap", fmt.Sprintf("%s wall beyond starting a process, %s CPU",
			r.Swap.Baton().Round(10*time.Microsecond), r.Swap.CPU.Round(10*time.Microsecond)), r.Swap.Baton() <= time.Millisecond && r.Swap.CPU <= time.Millisecond)
	}
	for _, f := range r.Footprints {
		if f.Workers == 64 {
			row("≤ 15 MB RSS at 64 workers", fmt.Sprintf("%.1f MB idle, %.1f MB rolling", kbMB(f.RSSIdleKB), kbMB(f.RSSRollingKB)), f.RSSRollingKB <= 15*1024)
		}
		if f.Rollouts >= 1000 {
			row(fmt.Sprintf("flat fds and RSS over %d rollouts", f.Rollouts),
				fmt.Sprintf("fds %d → %d; RSS %.1f → %.1f MB; %d zombies", f.FDsAfter1, f.FDsAfterN, kbMB(f.RSSAfter1KB), kbMB(f.RSSAfterNKB), f.ZombiesAfterN),
				f.FDsAfterN == f.FDsAfter1 && f.ZombiesAfterN == 0 && f.RSSAfterNKB <= f.RSSAfter1KB*11/10)
		}
	}
	if len(rows) > 0 {
		fmt.Fprint(w, "| target for baton | measured | met |\n| --- | --- | --- |\n"+strings.Join(rows, ""))
	}
}

func kbMB(kb int) float64 { return float64(kb) / 1024 }
