package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/rig"
)

// Sample is one request: when it was sent (since the run began), how long
// it took, and how it ended.
type Sample struct {
	At      time.Duration
	Latency time.Duration
	Outcome string // ok, refused, reset, eof, timeout, non-2xx, other
}

// Load sends requests open loop at a fixed rate, whatever the answers take,
// alternating fresh connections and kept-alive ones: a slow server does not
// slow the load down, so stalls show as latency and failures, as users see
// them.
type Load struct {
	start   time.Time
	mu      sync.Mutex
	samples []Sample
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// StartLoad sends rate requests per second to url, every keepAliveEvery'th
// one on a kept-alive connection (0: none), the others on fresh ones.
func StartLoad(url string, rate int, keepAliveEvery int) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{start: time.Now(), cancel: cancel}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	kept := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	interval := time.Second / time.Duration(rate)
	l.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c := fresh
			if keepAliveEvery > 0 && n%keepAliveEvery == 0 {
				c = kept
			}
			l.wg.Go(func() { l.one(ctx, c, url) })
		}
	})
	return l
}

func (l *Load) one(ctx context.Context, c *http.Client, url string) {
	sent := time.Now()
	err := rig.Fetch(ctx, c, url)
	outcome := "ok"
	if err != nil {
		if ctx.Err() != nil {
			return // the run ended with the request in flight
		}
		outcome = classify(err)
	}
	l.mu.Lock()
	l.samples = append(l.samples, Sample{At: sent.Sub(l.start), Latency: time.Since(sent), Outcome: outcome})
	l.mu.Unlock()
}

func classify(err error) string {
	var ne net.Error
	var status *rig.StatusError
	switch {
	case errors.As(err, &status):
		return "non-2xx"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "server closed idle connection"):
		return "eof"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "other"
}

// Since is the run's clock: offsets comparable with Sample.At.
func (l *Load) Since() time.Duration { return time.Since(l.start) }

// Stop ends the load and returns every sample, in the order sent.
func (l *Load) Stop() []Sample {
	l.cancel()
	l.wg.Wait()
	sort.Slice(l.samples, func(i, j int) bool { return l.samples[i].At < l.samples[j].At })
	return l.samples
}

// Window is a span of the run's clock.
type Window struct{ From, To time.Duration }

func (w Window) has(at time.Duration) bool { return at >= w.From && at <= w.To }

// Stats summarises samples sent inside (or outside) windows.
type Stats struct {
	Requests int            `json:"requests"`
	Failed   map[string]int `json:"failed"`
	P50, P99 time.Duration
}

// Summarise the samples sent inside any of windows (inside true) or
// outside all of them.
func Summarise(samples []Sample, windows []Window, inside bool) Stats {
	st := Stats{Failed: map[string]int{}}
	var lat []time.Duration
	for _, s := range samples {
		in := false
		for _, w := range windows {
			in = in || w.has(s.At)
		}
		if in != inside {
			continue
		}
		st.Requests++
		if s.Outcome != "ok" {
			st.Failed[s.Outcome]++
			continue
		}
		lat = append(lat, s.Latency)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		st.P50 = lat[len(lat)/2]
		st.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return st
}

// FailedTotal is the number of failed requests of any kind.
func (s Stats) FailedTotal() int {
	n := 0
	for _, v := range s.Failed {
		n += v
	}
	return n
}
