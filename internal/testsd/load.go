package testsd

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load is steady HTTP load against one URL from fresh-connection clients
// and kept-alive clients. A kept-alive client is Go's http.Transport: it
// retries a request only when the server closed an idle connection before
// answering, as HTTP clients do; every error that reaches the caller counts
// as a failed request.
type Load struct {
	ok      atomic.Int64
	mu      sync.Mutex
	failed  map[string]int
	fails   []Failure
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	clients []*http.Client
}

// StartLoad runs fresh+keepAlive clients, each sending requests back to
// back with a pause of pause between them.
func StartLoad(url string, fresh, keepAlive int, pause time.Duration) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{failed: map[string]int{}, cancel: cancel}
	for i := range fresh + keepAlive {
		tr := &http.Transport{DisableKeepAlives: i < fresh, MaxIdleConnsPerHost: 1}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		l.clients = append(l.clients, c)
		kind := "kept-alive"
		if i < fresh {
			kind = "fresh"
		}
		l.wg.Go(func() {
			for ctx.Err() == nil {
				l.one(ctx, c, url, kind)
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	return l
}

// Failure is one failed request.
type Failure struct {
	Start time.Time // when the request was sent
	Err   string
}

func (l *Load) one(ctx context.Context, c *http.Client, url, kind string) {
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return // the load was stopped mid-request: not the server's doing
		}
		l.fail(start, kind+": "+err.Error())
		return
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil && ctx.Err() == nil:
		l.fail(start, kind+": body: "+err.Error())
	case resp.StatusCode != http.StatusOK:
		l.fail(start, kind+": "+resp.Status)
	case err == nil:
		l.ok.Add(1)
	}
}

func (l *Load) fail(start time.Time, kind string) {
	l.mu.Lock()
	l.failed[kind]++
	l.fails = append(l.fails, Failure{Start: start, Err: kind})
	l.mu.Unlock()
}

// Failures returns every failed request so far.
func (l *Load) Failures() []Failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Failure(nil), l.fails...)
}

// OK is the number of requests answered 200 so far.
func (l *Load) OK() int64 { return l.ok.Load() }

// Stop ends the load and returns the successful count and a description of
// the failures ("" if none).
func (l *Load) Stop() (ok int64, failures string) {
	l.cancel()
	l.wg.Wait()
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for k, n := range l.failed {
		parts = append(parts, fmt.Sprintf("%d x %s", n, k))
	}
	sort.Strings(parts)
	return l.ok.Load(), strings.Join(parts, "; ")
}
