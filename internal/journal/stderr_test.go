package journal

import (
	"bytes"
	"sync"
	"testing"

	"github.com/batonsd/baton/internal/worker"
)

func TestPrefixedLinesNeverInterleave(t *testing.T) {
	var buf bytes.Buffer
	out := Prefixed(&buf)
	var wg sync.WaitGroup
	for slot := range 4 {
		p := &worker.Process{Slot: slot, PID: 100 + slot}
		wg.Go(func() {
			for range 100 {
				out(p, worker.Stdout, []byte("a line of output"))
			}
		})
	}
	wg.Wait()
	lines := bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), []byte{'\n'})
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !bytes.HasPrefix(l, []byte("[worker ")) || !bytes.HasSuffix(l, []byte("] a line of output")) {
			t.Fatalf("mangled line %q", l)
		}
	}
}
