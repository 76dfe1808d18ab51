package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// Throughput is the highest rate (the best of throughputRounds; errors of
// all rounds) one worker sustains with no work per
// request, given its socket by baton or directly by systemd-socket-activate,
// measured closed loop (each connection sends its next request when the
// answer is in) by wrk and by this package's own generator.
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

var (
	wrkRate   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal  = regexp.MustCompile(`(\d+) requests in`)
	wrkSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

const (
	wrkThreads  = "2"
	wrkDeadline = 10 * time.Second
)

// RunWrk runs wrk (Debian's) with conns kept-alive connections for d and
// returns its rate, its errors (socket errors of every kind and non-2xx
// answers) and its request count.
func RunWrk(ctx context.Context, url string, conns int, d time.Duration) (rps float64, errors, total int, err error) {
	secs := strconv.Itoa(max(1, int(d.Seconds())))
	cmd := exec.CommandContext(ctx, "wrk", "-t", wrkThreads, "-c", strconv.Itoa(conns), "-d", secs+"s",
		"--timeout", strconv.Itoa(int(wrkDeadline.Seconds()))+"s", url)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wrk: %w\n%s", err, b)
	}
	s := string(b)
	m := wrkRate.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("wrk printed no rate:\n%s", s)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(s); m != nil {
		total, _ = strconv.Atoi(m[1])
	}
	if m := wrkSocket.FindStringSubmatch(s); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.Atoi(v)
			errors += n
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		errors += n
	}
	return rps, errors, total, nil
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
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode/100 != 2 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
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

// WrkRollouts is wrk at full speed against baton while rollouts follow one
// another: the highest rate, inside rollout windows only.
type WrkRollouts struct {
	Rollouts int     `json:"rollouts"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Rate     float64 `json:"rps"`
}

// MeasureWrkRollouts runs p.Workers workers under baton and rolls them
// back to back for d under wrk's kept-alive connections.
func MeasureWrkRollouts(ctx context.Context, p Params, d time.Duration) (WrkRollouts, error) {
	s := &batonScenario{p: p}
	if err := s.Start(ctx); err != nil {
		return WrkRollouts{}, err
	}
	defer s.Stop()
	var w WrkRollouts
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Rate, w.Errors, w.Requests, err = RunWrk(ctx, fmt.Sprintf("http://%s/", p.addr()), 64, d)
	}()
	start := time.Now()
	for time.Since(start) < d-time.Second {
		if err := s.Deploy(ctx); err != nil {
			<-done
			return w, err
		}
		w.Rollouts++
	}
	<-done
	return w, err
}

// SwapOverhead is what baton adds to each swap of a rollout.
type SwapOverhead struct {
	// Wall is a rollout's time per swap beyond the new worker's own time
	// from main() to READY=1 (which the example worker writes down).
	Wall time.Duration `json:"wall_ns"`
	// SpawnToMain is what starting the worker costs anyone: from a Go
	// parent's exec.Cmd.Start to the worker's main(), the kernel's fork and
	// exec and the Go runtime's start. Part of Wall.
	SpawnToMain time.Duration `json:"spawn_to_main_ns"`
	// CPU is baton's own CPU time per swap (/proc/PID/stat over all the
	// rollouts).
	CPU time.Duration `json:"cpu_ns"`
}

// Baton is the wall time per swap that is baton's alone.
func (o SwapOverhead) Baton() time.Duration { return o.Wall - o.SpawnToMain }

// MeasureSwapOverhead rolls p.Workers workers (no start-up delay) one at a
// time, rollouts times, timing the reload from the control socket's side:
// fork and exec through the shim, the READY=1 notification's way to baton,
// signalling the old worker, bookkeeping, the control round trip.
func MeasureSwapOverhead(ctx context.Context, p Params, rollouts int) (SwapOverhead, error) {
	var o SwapOverhead
	dir, err := os.MkdirTemp("", "bench-swap")
	if err != nil {
		return o, err
	}
	defer os.RemoveAll(dir)
	timings := filepath.Join(dir, "timings")
	if o.SpawnToMain, err = spawnToMain(ctx, p.Worker, filepath.Join(dir, "direct"), 20); err != nil {
		return o, err
	}
	ctl := filepath.Join(dir, "c.sock")
	cmd := exec.Command(p.Baton, "run", "--workers", strconv.Itoa(p.Workers), "--max-surge", "1", "--listen", "app="+p.addr(),
		"--control", ctl, "--log", "inherit", "--", p.Worker, "-timings", timings)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return o, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := waitReady(ctx, ctl, p.Workers); err != nil {
		return o, err
	}
	cpu0 := cpuTime(cmd.Process.Pid)
	var over time.Duration
	for range rollouts {
		os.Remove(timings)
		start := time.Now()
		if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
			return o, err
		}
		took := time.Since(start)
		own, n, err := sumTimings(timings)
		if err != nil {
			return o, err
		}
		if n != p.Workers {
			return o, fmt.Errorf("%d workers wrote timings in a rollout of %d", n, p.Workers)
		}
		over += took - own
	}
	swaps := time.Duration(rollouts * p.Workers)
	o.Wall = over / swaps
	o.CPU = (cpuTime(cmd.Process.Pid) - cpu0) / swaps
	return o, nil
}

// spawnToMain starts the worker directly (binding a port of its own) n
// times and returns the mean time from Start to its main().
func spawnToMain(ctx context.Context, worker, timings string, n int) (time.Duration, error) {
	var sum time.Duration
	for range n {
		os.Remove(timings)
		cmd := exec.Command(worker, "-bind", "127.0.0.1:0", "-timings", timings)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		var line []byte
		for len(line) == 0 {
			line, _ = os.ReadFile(timings)
			select {
			case <-ctx.Done():
				cmd.Process.Kill()
				cmd.Wait()
				return 0, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		var started, ready int64
		if _, err := fmt.Sscan(string(line), &started, &ready); err != nil {
			return 0, fmt.Errorf("%s: %q: %w", timings, line, err)
		}
		sum += time.Unix(0, started).Sub(t0)
	}
	return sum / time.Duration(n), nil
}

// sumTimings adds up the "START READY" spans in path.
func sumTimings(path string) (time.Duration, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var sum time.Duration
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var start, ready int64
		if _, err := fmt.Sscan(sc.Text(), &start, &ready); err != nil {
			return 0, 0, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		sum += time.Duration(ready - start)
		n++
	}
	return sum, n, sc.Err()
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
