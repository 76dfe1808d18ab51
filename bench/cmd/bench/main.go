// Command bench measures deploys under load: baton's rolling reload next to
// the alternatives, on the same worker and the same load. It prints one
// markdown table and writes the results as JSON.
//
//	go run ./bench/cmd/bench -deploys 20 -json bench/results.json
//	go run ./bench/cmd/bench -leak -json bench/results.json   # leaking workers only: sets "leak" in it
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batonsd/baton/bench"
	"github.com/batonsd/baton/internal/rig"
)

func main() {
	var p bench.Params
	var plan bench.Plan
	flag.IntVar(&p.Workers, "workers", 4, "workers per scenario")
	flag.DurationVar(&p.Work, "work", 5*time.Millisecond, "work per request")
	flag.DurationVar(&p.StartDelay, "start-delay", 200*time.Millisecond, "a worker's start-up time")
	flag.IntVar(&p.Port, "port", 18080, "port the scenarios serve on")
	flag.IntVar(&plan.Rate, "rate", 800, "requests per second")
	flag.IntVar(&plan.KeepAliveEvery, "keepalive-every", 4, "every n-th request on a kept-alive connection (the rest fresh)")
	flag.DurationVar(&plan.Steady, "steady", 3*time.Second, "steady load before the deploys")
	flag.IntVar(&plan.Deploys, "deploys", 20, "deploys per scenario")
	flag.DurationVar(&plan.Gap, "gap", 300*time.Millisecond, "pause between deploys")
	out := flag.String("json", "", "write the results here as JSON")
	longRun := flag.Int("long-rollouts", 1000, "rollouts of the 4-worker footprint run (fds and RSS after 1 and after these)")
	only := flag.String("only", "", "run only the scenarios whose name contains this")
	footprint := flag.Bool("footprint", true, "measure baton's own footprint too")
	others := flag.Bool("others", true, "also measure the Node cluster pattern, PM2 and tableflip (installed from npm and the Go module proxy)")
	rates := flag.Bool("throughput", true, "measure the highest rate (wrk and the Go generator, bare worker and baton), wrk during rollouts, and baton's overhead per swap")
	cache := flag.String("cache", "/var/cache/baton-bench", "where PM2 is installed")
	leak := flag.Bool("leak", false, "run only the leaking-workers comparison: baton --recycle-memory, baton without recycling, PM2 max_memory_restart (with -others)")
	var leakPlan bench.LeakPlan
	flag.DurationVar(&leakPlan.Duration, "leak-duration", 2*time.Minute, "load per leak scenario")
	flag.IntVar(&leakPlan.Workers, "leak-workers", 2, "workers per leak scenario")
	leakSize := flag.String("leak-size", "16K", "what a worker keeps for good per request in the leak run")
	leakCeiling := flag.String("leak-ceiling", "128M", "--recycle-memory and max_memory_restart in the leak run")
	flag.Parse()

	dir, err := os.MkdirTemp("", "baton-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bins, err := rig.Build(dir)
	if err != nil {
		fail(err)
	}
	p.Baton, p.Worker = bins.Baton, bins.Worker
	if *leak {
		leakPlan.Rate, leakPlan.KeepAliveEvery = plan.Rate, plan.KeepAliveEvery
		runLeak(p, leakPlan, *leakSize, *leakCeiling, *others, *cache, *only, *out)
		return
	}
	if *others {
		root, err := rig.ModuleRoot()
		if err != nil {
			fail(err)
		}
		if p.TableflipWorker, err = bench.BuildTableflip(root, dir); err != nil {
			fail(err)
		}
		p.NodeDir = filepath.Join(root, "bench", "node")
		p.PM2Dir = filepath.Join(*cache, "pm2-"+bench.PM2Version)
		if err := bench.InstallPM2(p.PM2Dir); err != nil {
			fail(err)
		}
	}
	ctx := context.Background()
	var results []bench.Result
	for _, sc := range bench.Scenarios(p) {
		if !strings.Contains(sc.Name(), *only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "measuring %s: %d deploys at %d req/s...\n", sc.Name(), plan.Deploys, plan.Rate)
		r, err := bench.Measure(ctx, sc, fmt.Sprintf("http://127.0.0.1:%d/", p.Port), plan)
		if err != nil {
			fail(err)
		}
		results = append(results, r)
	}
	var (
		throughput []bench.Throughput
		wrkRolls   bench.WrkRollouts
		swap       bench.SwapOverhead
	)
	if *rates {
		fmt.Fprintf(os.Stderr, "measuring the highest rate, bare worker and under baton...\n")
		if throughput, err = bench.MeasureThroughput(ctx, p, 5*time.Second); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stderr, "measuring rollouts under wrk...\n")
		if wrkRolls, err = bench.MeasureWrkRollouts(ctx, p, 15*time.Second); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stderr, "measuring baton's overhead per swap...\n")
		if swap, err = bench.MeasureSwapOverhead(ctx, p, 200); err != nil {
			fail(err)
		}
	}
	var footprints []bench.Footprint
	for _, n := range []int{4, 64, 256} {
		if !*footprint {
			break
		}
		rollouts := 20
		if n == 4 {
			rollouts = *longRun
		}
		fmt.Fprintf(os.Stderr, "measuring baton's footprint with %d workers, %d rollouts...\n", n, rollouts)
		f, err := bench.MeasureFootprint(ctx, p, n, rollouts, 3*time.Second, false)
		if err != nil {
			fail(err)
		}
		footprints = append(footprints, f)
	}
	if *footprint {
		// What the metrics endpoint costs: the 64-worker run again, scraped.
		fmt.Fprintf(os.Stderr, "measuring baton's footprint with 64 workers, 20 rollouts, --metrics scraped...\n")
		f, err := bench.MeasureFootprint(ctx, p, 64, 20, 3*time.Second, true)
		if err != nil {
			fail(err)
		}
		footprints = append(footprints, f)
	}
	fmt.Printf("%d workers, %s work per request, %s start-up; %d req/s, every %dth kept-alive\n\n",
		p.Workers, p.Work, p.StartDelay, plan.Rate, plan.KeepAliveEvery)
	bench.Table(os.Stdout, results)
	if *rates {
		fmt.Printf("\nThe highest rate, closed loop, %d connections:\n\n", 32)
		bench.ThroughputTable(os.Stdout, throughput)
		fmt.Printf("\nwrk at full speed (64 connections) during %d back-to-back rollouts of %d workers: %d requests, %.0f req/s, %d errors\n",
			wrkRolls.Rollouts, p.Workers, wrkRolls.Requests, wrkRolls.Rate, wrkRolls.Errors)
		fmt.Printf("\nbaton's overhead per swap (workers ready at once, one at a time, 200 rollouts): %s of wall time beyond the new worker's own main-to-READY,\n"+
			"of which %s is starting any process (a Go parent's exec.Cmd.Start to the worker's main) and %s baton's; baton's CPU: %s per swap\n",
			swap.Wall.Round(time.Microsecond), swap.SpawnToMain.Round(time.Microsecond), swap.Baton().Round(time.Microsecond), swap.CPU.Round(time.Microsecond))
	}
	if len(footprints) > 0 {
		fmt.Printf("\nbaton's own footprint (workers: sleep, ready at exec; surge workers/8):\n\n")
		bench.FootprintTable(os.Stdout, footprints)
	}
	report := bench.Report{Results: results, Throughput: throughput, Footprints: footprints}
	if *rates {
		report.WrkRollouts, report.Swap = &wrkRolls, &swap
	}
	var targets strings.Builder
	bench.Targets(&targets, report)
	if targets.Len() > 0 {
		fmt.Printf("\nTargets:\n\n%s", targets.String())
	}
	if *out != "" {
		b, _ := json.MarshalIndent(map[string]any{"params": p, "plan": plan, "report": report}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fail(err)
		}
	}
}

// runLeak runs the leaking-workers comparison, prints its table and sets
// "leak" in the JSON file, keeping what else it holds.
func runLeak(p bench.Params, plan bench.LeakPlan, size, ceiling string, others bool, cache, only, out string) {
	p.Workers = plan.Workers
	var err error
	if plan.Leak, err = bench.ParseSize(size); err != nil {
		fail(err)
	}
	if plan.Ceiling, err = bench.ParseSize(ceiling); err != nil {
		fail(err)
	}
	// Without recycling nothing bounds the leak but the run's length.
	if avail := bench.MemAvailable(); avail > 0 && plan.Unbounded() > avail/2 {
		fail(fmt.Errorf("the workers without recycling would keep %d MiB (%d req/s for %s, %s each), more than half of the %d MiB available: shorten -leak-duration or -leak-size",
			plan.Unbounded()>>20, plan.Rate, plan.Duration, size, avail>>20))
	}
	if others {
		root, err := rig.ModuleRoot()
		if err != nil {
			fail(err)
		}
		p.NodeDir = filepath.Join(root, "bench", "node")
		p.PM2Dir = filepath.Join(cache, "pm2-"+bench.PM2Version)
		if err := bench.InstallPM2(p.PM2Dir); err != nil {
			fail(err)
		}
	}
	var results []bench.LeakResult
	for _, sc := range bench.LeakScenarios(p, plan) {
		if !strings.Contains(sc.Name(), only) {
			continue
		}
		fmt.Fprintf(os.Stderr, "measuring %s: %d workers leaking %s a request, %d req/s for %s...\n", sc.Name(), plan.Workers, size, plan.Rate, plan.Duration)
		r, err := bench.MeasureLeak(context.Background(), sc, fmt.Sprintf("http://127.0.0.1:%d/", p.Port), plan)
		if err != nil {
			fail(err)
		}
		results = append(results, r)
	}
	fmt.Printf("%d workers, %s work per request, %s start-up, leaking %s per request; %d req/s for %s, every %dth kept-alive; ceiling %s\n\n",
		plan.Workers, p.Work, p.StartDelay, size, plan.Rate, plan.Duration, plan.KeepAliveEvery, ceiling)
	bench.LeakTable(os.Stdout, plan, results)
	if out != "" {
		if err := bench.SetJSON(out, "leak", map[string]any{"params": p, "plan": plan, "results": results}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
