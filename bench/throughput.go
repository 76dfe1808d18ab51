package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/rig"
)

// Throughput is the highest rate one worker sustains with no work per
// request (the best of throughputRounds; errors of all rounds), given its
// socket by baton or directly by systemd-socket-activate, measured closed
// loop (each connection sends its next request when the answer is in) by
// wrk and by this package's own generator.
type Throughput struct {
	Setup     string  `json:"setup"`
	Wrk       float64 `json:"wrk_rps"`
	WrkErrors int     `json:"wrk_errors"`
	Go        float64 `json:"go_rps"`
	GoFailed  int     `json:"go_failed"`
}

// throughputConns is the closed-loop concurrency of both generators.
const throughputConns = 32

// throughputRounds is how often each setup is measured.
const throughputRounds = 3

// MeasureThroughput measures the bare worker and the same worker under
// baton, each for d per generator per round.
func MeasureThroughput(ctx context.Context, p Params, d time.Duration) ([]Throughput, error) {
	url := fmt.Sprintf("http://%s/", p.addr())
	setups := []struct {
		name string
		argv []string
	}{
		{"bare worker (systemd-socket-activate)", []string{"systemd-socket-activate", "-l", p.addr(), p.Worker}},
		{"baton, 1 worker", []string{p.Baton, "run", "--workers", "1", "--listen", "app=" + p.addr(), "--log", "inherit", "--", p.Worker}},
	}
	// Rounds alternate between the setups and each keeps its best: the
	// generators share the machine's cores with the worker, and a round
	// can lose to whatever else ran.
	out := make([]Throughput, len(setups))
	for range throughputRounds {
		for i, s := range setups {
			cmd := exec.Command(s.argv[0], s.argv[1:]...)
			cmd.Stderr = io.Discard
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			t, err := measureOne(ctx, url, d)
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			best := &out[i]
			best.Setup = s.name
			best.Wrk, best.Go = max(best.Wrk, t.Wrk), max(best.Go, t.Go)
			best.WrkErrors += t.WrkErrors // failures count in every round
			best.GoFailed += t.GoFailed
		}
	}
	return out, nil
}

func measureOne(ctx context.Context, url string, d time.Duration) (Throughput, error) {
	// systemd-socket-activate starts the worker at the first connection.
	if err := waitHTTP(ctx, url, 0); err != nil {
		return Throughput{}, err
	}
	var t Throughput
	var err error
	if t.Wrk, t.WrkErrors, _, err = RunWrk(ctx, url, throughputConns, d); err != nil {
		return t, err
	}
	t.Go, t.GoFailed = ClosedLoop(url, throughputConns, d)
	return t, nil
}

// ClosedLoop is the Go counterpart of wrk: conns kept-alive connections,
// each sending its next request as soon as the answer is in, for d. It
// returns the rate of answered requests and the number that failed.
func ClosedLoop(url string, conns int, d time.Duration) (rps float64, failed int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var ok, bad atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := rig.Fetch(context.Background(), c, url); err != nil {
					bad.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(ok.Load()) / d.Seconds(), int(bad.Load())
}

// ThroughputTable writes the throughput comparison.
func ThroughputTable(w io.Writer, ts []Throughput) {
	fmt.Fprintln(w, "| one worker, no work per request | wrk req/s (errors) | Go generator req/s (failed) |")
	fmt.Fprintln(w, "| --- | ---: | ---: |")
	for _, t := range ts {
		fmt.Fprintf(w, "| %s | %.0f (%d) | %.0f (%d) |\n", t.Setup, t.Wrk, t.WrkErrors, t.Go, t.GoFailed)
	}
	if len(ts) == 2 && ts[0].Wrk > 0 && ts[0].Go > 0 {
		fmt.Fprintf(w, "| baton over bare | %.3fx | %.3fx |\n", ts[1].Wrk/ts[0].Wrk, ts[1].Go/ts[0].Go)
	}
}
