package journal

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
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
	close(w.release)
	// What got through and what was counted add up to what was written.
	lines, dropped := 0, 0
	for deadline := time.Now().Add(5 * time.Second); lines+dropped < 1000; {
		if time.Now().After(deadline) {
			t.Fatalf("%d written and %d counted as dropped of 1000:\n%s", lines, dropped, w.String())
		}
		lines, dropped = strings.Count(w.String(), "0123456789\n"), 0
		for _, m := range dropRE.FindAllStringSubmatch(w.String(), -1) {
			n, _ := strconv.Atoi(m[1])
			dropped += n
		}
		time.Sleep(time.Millisecond)
	}
	if dropped < 900 {
		t.Errorf("%d of 1000 writes dropped and %d written, with room for 9 in the queue", dropped, lines)
	}
	a.Write([]byte("after\n"))
	a.Close(5 * time.Second)
	if out := w.String(); !strings.HasSuffix(out, "after\n") {
		t.Errorf("output after the release:\n%s", out)
	}
}

var dropRE = regexp.MustCompile(`baton: (\d+) log lines dropped: the output was not being read`)

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

// TestAsyncPipeWritesAtOnce: to a pipe, a line is written by Write itself
// (RWF_NOWAIT) when nothing is queued; once the reader stops reading and
// the pipe fills, Write still never blocks, and every line arrives in
// order when the reader reads again.
func TestAsyncPipeWritesAtOnce(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a := NewAsync(w, 1<<20)
	a.Write([]byte("first\n"))
	a.mu.Lock()
	direct, queued := a.nowait != nil, len(a.queue)
	a.mu.Unlock()
	if !direct {
		t.Skip("no RWF_NOWAIT writes to a pipe on this kernel (Linux 5.x added them): the goroutine writes every line")
	}
	if queued != 0 {
		t.Errorf("%d lines queued to an empty pipe", queued)
	}
	const n = 20000 // some 200 KB: the pipe holds 64 KB, the queue the rest
	done := make(chan struct{})
	go func() {
		for i := range n {
			a.Write(fmt.Appendf(nil, "line %d\n", i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a full pipe")
	}
	go func() {
		a.Close(10 * time.Second)
		w.Close()
	}()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != n+1 || lines[0] != "first" {
		t.Fatalf("%d lines, the first %q; want %d, \"first\" first", len(lines), lines[0], n+1)
	}
	for i, l := range lines[1:] {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d is %q: out of order", i, l)
		}
	}
}
