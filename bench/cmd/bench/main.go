// Command bench measures deploys under load: baton's rolling reload next to
// the alternatives, on the same worker and the same load. It prints one
// markdown table and writes the results as JSON.
//
//	go run ./bench/cmd/bench -deploys 20 -json bench/results.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/batonsd/baton/bench"
	"github.com/batonsd/baton/internal/testsd"
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
	flag.Parse()

	dir, err := os.MkdirTemp("", "baton-bench")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bins, err := testsd.Build(dir)
	if err != nil {
		fail(err)
	}
	p.Baton, p.Worker = bins.Baton, bins.Worker
	ctx := context.Background()
	var results []bench.Result
	for _, sc := range bench.Scenarios(p) {
		fmt.Fprintf(os.Stderr, "measuring %s: %d deploys at %d req/s...\n", sc.Name(), plan.Deploys, plan.Rate)
		r, err := bench.Measure(ctx, sc, fmt.Sprintf("http://127.0.0.1:%d/", p.Port), plan)
		if err != nil {
			fail(err)
		}
		results = append(results, r)
	}
	fmt.Printf("%d workers, %s work per request, %s start-up; %d req/s, every %dth kept-alive\n\n",
		p.Workers, p.Work, p.StartDelay, plan.Rate, plan.KeepAliveEvery)
	bench.Table(os.Stdout, results)
	if *out != "" {
		b, _ := json.MarshalIndent(map[string]any{"params": p, "plan": plan, "results": results}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
