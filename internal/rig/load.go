package rig

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
	switch err := Fetch(ctx, c, url); {
	case err == nil:
		l.ok.Add(1)
	case ctx.Err() == nil: // else the load was stopped mid-request: not the server's doing
		l.fail(start, kind+": "+err.Error())
	}
}

// StatusError is an answer with a status other than 2xx.
type StatusError struct{ Status string }

func (e *StatusError) Error() string { return e.Status }

// Fetch sends a GET for url through c and reads the whole answer: nil means
// a 2xx answer read to its end; a body cut short is an error, and any other
// status a *StatusError.
func Fetch(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return fmt.Errorf("body: %w", err)
	case resp.StatusCode/100 != 2:
		return &StatusError{resp.Status}
	}
	return nil
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

// WaitOK waits until n requests in all have been answered 200, polling
// every 5 ms, and fails with what it saw when ctx ends first.
func (l *Load) WaitOK(ctx context.Context, n int64) error {
	for l.OK() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d requests answered, waited for %d: %w", l.OK(), n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

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
