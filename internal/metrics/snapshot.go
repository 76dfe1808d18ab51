package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// snapshotEvery is the least time between the starts of two snapshots.
const snapshotEvery = 100 * time.Millisecond

// snapshots shares status snapshots between requests. Every request is
// answered from a snapshot begun after it came (none is older than the
// request), one snapshot is taken at a time, and one begins at most every
// `every`: requests that come meanwhile wait for the next one and share
// it. A snapshot is a trip through the supervisor's loop and a read of
// /proc for every worker's tree (tens of milliseconds with 64 workers);
// one per request let a flood of requests take a core.
type snapshots struct {
	status StatusFunc
	every  time.Duration

	mu      sync.Mutex
	next    *round    // the round requests coming now wait for; nil if none yet
	last    *round    // the round begun last
	lastRun time.Time // when it began
}

type round struct {
	done chan struct{}
	st   control.Status
	err  error

	formatted sync.Once
	text      []byte
}

// format is Format(&r.st), once for all who share r.
func (r *round) format() []byte {
	r.formatted.Do(func() { r.text = Format(&r.st) })
	return r.text
}

// take waits for a snapshot begun after it was called, or for ctx.
func (s *snapshots) take(ctx context.Context) (*round, error) {
	s.mu.Lock()
	r := s.next
	if r == nil {
		r = &round{done: make(chan struct{})}
		s.next = r
		go s.run(r, s.last, s.lastRun)
	}
	s.mu.Unlock()
	select {
	case <-r.done:
		return r, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run takes r's snapshot once prev's is done and `every` has passed since
// prev began.
func (s *snapshots) run(r, prev *round, prevRun time.Time) {
	if prev != nil {
		<-prev.done
		if wait := time.Until(prevRun.Add(s.every)); wait > 0 {
			time.Sleep(wait)
		}
	}
	s.mu.Lock()
	s.next = nil // requests from now on wait for the round after r
	s.last, s.lastRun = r, time.Now()
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	r.st, r.err = s.status(ctx)
	cancel()
	close(r.done)
}
