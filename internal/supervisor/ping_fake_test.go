package supervisor

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestPingNeedsTheLoop: Ping, what the control socket's heartbeats wait
// for, returns nil only once the loop has run its no-op; while the loop
// runs nothing (stuck), it returns at its context's end, even when the
// loop's queue is full.
func TestPingNeedsTheLoop(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping with the loop stuck: %v, want its deadline", err)
	}
	ts.settle()

	for len(ts.events) < cap(ts.events) {
		ts.events <- func() {}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping with the loop stuck and its queue full: %v, want its deadline", err)
	}
	ts.settle()

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.Ping(ctx)
	}()
	// The no-op is posted from Ping's goroutine: once it waits in the
	// queue, a step of the loop runs it.
	for deadline := time.Now().Add(10 * time.Second); len(ts.events) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the ping's no-op never reached the loop's queue")
		}
	}
	ts.settle()
	if err := <-done; err != nil {
		t.Errorf("Ping once the loop ran its no-op: %v", err)
	}
}
