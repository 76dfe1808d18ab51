package journal

import (
	"bytes"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stuckWriter blocks every Write until released, then records.
type stuckWriter struct {
	release chan struct{}
	mu      sync.Mutex
	b       bytes.Buffer
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *stuckWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func TestAsyncNeverBlocksAndCountsDrops(t *testing.T) {
	w := &stuckWriter{release: make(chan struct{})}
	a := NewAsync(w, 100)
	done := make(chan struct{})
	go func() {
		for range 1000 {
			a.Write([]byte("0123456789\n"))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a writer that does not write")
	}
	if a.Dropped() < 900 {
		t.Errorf("%d writes dropped, want nearly all of 1000 with 100 bytes of queue", a.Dropped())
	}
	close(w.release)
	for !strings.Contains(w.String(), "log lines dropped") {
		time.Sleep(time.Millisecond)
	}
	for strings.Count(w.String(), "\n") < 10 { // the notice and the 9 queued lines: the queue is empty
		time.Sleep(time.Millisecond)
	}
	a.Write([]byte("after\n"))
	a.Close(5 * time.Second)
	if out := w.String(); !strings.Contains(out, "log lines dropped: the output was not being read") || !strings.Contains(out, "after\n") {
		t.Errorf("output after the release:\n%s", out)
	}
}

type epipeWriter struct{ n int }

func (w *epipeWriter) Write(p []byte) (int, error) { w.n++; return 0, syscall.EPIPE }

func TestAsyncStopsWritingAfterEPIPE(t *testing.T) {
	w := &epipeWriter{}
	a := NewAsync(w, 1<<20)
	a.Write([]byte("one\n"))
	a.Close(time.Second)
	a2 := NewAsync(w, 1<<20)
	a2.Write([]byte("one\n"))
	for a2.Dropped() == 0 {
		time.Sleep(time.Millisecond)
		a2.Write([]byte("more\n"))
	}
	a2.Close(time.Second)
	if w.n > 3 {
		t.Errorf("%d writes to a writer gone with EPIPE", w.n)
	}
}
