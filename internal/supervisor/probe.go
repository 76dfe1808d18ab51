package supervisor

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/batonsd/baton/internal/listening"
)

// probeInterval is the pause between readiness probes of one worker.
const probeInterval = 100 * time.Millisecond

// acceptingInterval is the pause between looks at whether a worker accepts
// (a few small reads in /proc: cheap, so often, for a rollout step that
// takes about the server's own start time).
const acceptingInterval = 10 * time.Millisecond

// probe asks url until it answers 2xx, then calls ready once; it gives up
// when ctx ends (the worker exited, or its ready timeout killed it).
func probe(ctx context.Context, url string, ready func()) {
	client := &http.Client{Timeout: time.Second}
	poll(ctx, probeInterval, ready, func() bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false // ParseReady checked the URL; nothing can be probed
		}
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // drain for keep-alive; errors don't matter
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 300
	})
}

// watchAccepting calls ready once pid, or a process it started, waits for
// connections on one of socks; it gives up when ctx ends.
func watchAccepting(ctx context.Context, pid int, socks listening.Sockets, ready func()) {
	poll(ctx, acceptingInterval, ready, func() bool { return listening.Accepting(pid, socks) })
}

// poll calls ready once ok reports true, asking every interval, until ctx
// ends.
func poll(ctx context.Context, interval time.Duration, ready func(), ok func() bool) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if ok() {
			ready()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// socketInodes are the shared sockets, as --ready listening looks for them.
func (s *Supervisor) socketInodes() listening.Sockets {
	if s.inodes == nil {
		var fds []int
		for _, l := range s.listeners {
			fds = append(fds, l.FD())
		}
		socks, err := listening.Inodes(fds...)
		if err != nil {
			s.log.Error("--ready listening: cannot read the listeners' inodes", "err", err)
		}
		s.inodes = socks
	}
	return s.inodes
}
