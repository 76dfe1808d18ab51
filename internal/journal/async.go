package journal

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// Async is an io.Writer that never blocks its caller: each Write is copied
// into a queue of at most limit bytes, and one goroutine writes the queue
// to the underlying writer. When the queue is full, or the writer has
// failed for good (EPIPE: the reader is gone), writes are dropped and
// counted, and the count is written as a line of its own once the writer
// takes lines again.
//
// baton's stderr is such a writer: a pipe whose reader stopped reading
// (a stuck `| tee`, a container's log pipe) blocked the event loop on a log
// write, so crashed workers were not restarted and status hung.
type Async struct {
	out   io.Writer
	limit int

	mu      sync.Mutex
	queue   [][]byte
	queued  int  // bytes in queue
	dropped int  // writes dropped since the last notice
	gone    bool // the writer failed with EPIPE: drop everything
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// NewAsync starts writing to out, queueing at most limit bytes.
func NewAsync(out io.Writer, limit int) *Async {
	a := &Async{out: out, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go a.run()
	return a
}

// Write queues a copy of p, or drops it when the queue is full. It always
// reports success: a lost log line must not fail what logged it.
func (a *Async) Write(p []byte) (int, error) {
	a.mu.Lock()
	switch {
	case a.closed || a.gone || a.queued+len(p) > a.limit:
		a.dropped++
	default:
		a.queue = append(a.queue, append([]byte(nil), p...))
		a.queued += len(p)
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Dropped is how many writes were dropped and not yet reported.
func (a *Async) Dropped() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

func (a *Async) run() {
	defer close(a.done)
	for {
		a.mu.Lock()
		batch, dropped, closed := a.queue, a.dropped, a.closed
		a.queue, a.queued = nil, 0
		if len(batch) > 0 && dropped > 0 {
			// Reported at the place where the lines went missing.
			a.dropped = 0
			batch = append([][]byte{fmt.Appendf(nil, "baton: %d log lines dropped: the output was not being read\n", dropped)}, batch...)
		}
		a.mu.Unlock()
		for i, b := range batch {
			if _, err := a.out.Write(b); errors.Is(err, syscall.EPIPE) {
				a.mu.Lock()
				a.gone = true
				a.dropped += len(batch) - i
				a.mu.Unlock()
				break
			}
			// Other errors lose this line only; there is nowhere to report them.
		}
		if closed {
			return
		}
		if len(batch) == 0 {
			<-a.wake
		}
	}
}

// Close writes what is queued, waiting at most wait for a stuck writer.
func (a *Async) Close(wait time.Duration) {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	select {
	case <-a.done:
	case <-time.After(wait):
	}
}
