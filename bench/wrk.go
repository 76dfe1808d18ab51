package bench

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

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
