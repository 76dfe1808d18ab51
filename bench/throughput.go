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

// Throughput is the highest rate one worker sustains with no work per
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

// MeasureThroughput measures the bare worker, then the same worker under
// baton, each for d per generator.
func MeasureThroughput(ctx context.Context, p Params, d time.Duration) ([]Throughput, error) {
	url := fmt.Sprintf("http://%s/", p.addr())
	setups := []struct {
		name string
		argv []string
	}{
		{"bare worker (systemd-socket-activate)", []string{"systemd-socket-activate", "-l", p.addr(), p.Worker}},
		{"baton, 1 worker", []string{p.Baton, "run", "--workers", "1", "--listen", "app=" + p.addr(), "--log", "inherit", "--", p.Worker}},
	}
	var out []Throughput
	for _, s := range setups {
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
		t.Setup = s.name
		out = append(out, t)
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

// MeasureSwapOverhead rolls p.Workers workers one at a time, rollouts
// times, and returns what each swap took beyond the new worker's own time
// from main() to READY=1 (which the example worker writes down): fork and
// exec, the notification's way to baton, signalling the old worker,
// bookkeeping, the control round trip.
func MeasureSwapOverhead(ctx context.Context, p Params, rollouts int) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "bench-swap")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	timings := filepath.Join(dir, "timings")
	ctl := filepath.Join(dir, "c.sock")
	cmd := exec.Command(p.Baton, "run", "--workers", strconv.Itoa(p.Workers), "--max-surge", "1", "--listen", "app="+p.addr(),
		"--control", ctl, "--log", "inherit", "--", p.Worker, "-start-delay", p.StartDelay.String(), "-timings", timings)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := waitReady(ctx, ctl, p.Workers); err != nil {
		return 0, err
	}
	var over time.Duration
	for range rollouts {
		os.Remove(timings)
		start := time.Now()
		if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
			return 0, err
		}
		took := time.Since(start)
		own, n, err := sumTimings(timings)
		if err != nil {
			return 0, err
		}
		if n != p.Workers {
			return 0, fmt.Errorf("%d workers wrote timings in a rollout of %d", n, p.Workers)
		}
		over += took - own
	}
	return over / time.Duration(rollouts*p.Workers), nil
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
