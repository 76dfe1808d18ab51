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

// watchAccepting calls ready once pid, or a process it started, waits for
// connections on one of socks; it gives up when ctx ends.
func watchAccepting(ctx context.Context, pid int, socks listening.Sockets, ready func()) {
	tick := time.NewTicker(acceptingInterval)
	defer tick.Stop()
	for {
		if listening.Accepting(pid, socks) {
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
