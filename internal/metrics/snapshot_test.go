package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// TestSnapshotsShared: requests that come together share snapshots, one
// begins at most every `every`, and none answers a request with a
// snapshot begun before the request came.
func TestSnapshotsShared(t *testing.T) {
	var begun atomic.Int64
	var mu sync.Mutex
	var starts []time.Time
	s := &snapshots{every: 50 * time.Millisecond}
	s.status = func(context.Context) (control.Status, error) {
		// One snapshot is taken at a time: while this one's status runs,
		// lastRun is when run began it, the time the spacing is kept by.
		s.mu.Lock()
		began := s.lastRun
		s.mu.Unlock()
		mu.Lock()
		starts = append(starts, began)
		mu.Unlock()
		return control.Status{Generation: int(begun.Add(1))}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const requests = 200
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond) // spread over 0.2 s
			before := begun.Load()
			r, err := s.take(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if int64(r.st.Generation) <= before {
				t.Errorf("request %d: answered by snapshot %d, begun before it came (%d had begun)", i, r.st.Generation, before)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d snapshots", requests, len(starts))
	if len(starts) > requests/2 {
		t.Errorf("%d snapshots for %d requests over 0.2 s: not shared", len(starts), requests)
	}
	// Snapshots begin every 50 ms at most: a delay anywhere (a busy
	// machine) can only lengthen the spacing.
	for i := 1; i < len(starts); i++ {
		if d := starts[i].Sub(starts[i-1]); d < s.every {
			t.Errorf("snapshot %d began %s after the one before", i+1, d)
		}
	}
}
