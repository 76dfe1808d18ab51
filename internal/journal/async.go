package journal

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
//
// When out is a pipe or a socket and nothing is queued, Write writes at
// once with RWF_NOWAIT, which cannot block (EAGAIN instead), and queues
// only what did not fit: waking the goroutine for every line cost baton
// three context switches per worker swap.
type Async struct {
	out   io.Writer
	limit int

	mu      sync.Mutex
	nowait  func(p []byte) (int, error) // a write that cannot block; nil if out has none
	queue   [][]byte
	queued  int  // bytes in queue
	dropped int  // writes dropped since the last notice
	gone    bool // the writer failed with EPIPE: drop everything
	closed  bool
	writing bool // the goroutine is writing a batch: later lines queue behind it
	wake    chan struct{}
	done    chan struct{}
}

// NewAsync starts writing to out, queueing at most limit bytes.
func NewAsync(out io.Writer, limit int) *Async {
	a := &Async{out: out, limit: limit, nowait: nowaitWriter(out), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go a.run()
	return a
}

// nowaitWriter is a write to out's file that returns EAGAIN instead of
// blocking (pwritev2 with RWF_NOWAIT: pipes and sockets take it, files and
// terminals answer EOPNOTSUPP), or nil when out is not a file.
func nowaitWriter(out io.Writer) func([]byte) (int, error) {
	sc, ok := out.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(p []byte) (n int, err error) {
		if cerr := rc.Write(func(fd uintptr) bool {
			n, err = unix.Pwritev2(int(fd), [][]byte{p}, -1, unix.RWF_NOWAIT)
			return true
		}); cerr != nil {
			return 0, cerr
		}
		return max(n, 0), err
	}
}

// Write queues a copy of p, or drops it when the queue is full; with
// nothing queued, it first writes what out takes without blocking. It
// always reports success: a lost log line must not fail what logged it.
func (a *Async) Write(p []byte) (int, error) {
	a.mu.Lock()
	all := len(p)
	if a.nowait != nil && len(a.queue) == 0 && !a.writing && a.dropped == 0 && !a.closed && !a.gone {
		n, err := a.nowait(p)
		p = p[n:]
		switch {
		case len(p) == 0:
			a.mu.Unlock()
			return all, nil
		case errors.Is(err, syscall.EPIPE):
			a.gone = true
		case err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR):
			a.nowait = nil // EOPNOTSUPP (a file, a terminal), or an older kernel: the goroutine writes
		}
		// What is left goes through the queue, after what was written.
	}
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
	return all, nil
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
		a.writing = len(batch) > 0
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
