package supervisor

import (
	"context"
	"io"
	"net/http"
	"time"
)

// probeInterval is the pause between readiness probes of one worker.
const probeInterval = 100 * time.Millisecond

// probe asks url until it answers 2xx, then calls ready once; it gives up
// when ctx ends (the worker exited, or its ready timeout killed it).
func probe(ctx context.Context, url string, ready func()) {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return // ParseReady checked the URL; nothing can be probed
		}
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drain for keep-alive; errors don't matter
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 300 {
				ready()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
