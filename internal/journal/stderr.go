// Package journal routes worker output and baton's own events. Without
// journald, worker lines go to a writer (baton's stderr) prefixed with the
// worker's slot and pid.
package journal

import (
	"bytes"
	"io"
	"strconv"
	"sync"

	"github.com/batonsd/baton/internal/worker"
)

// Prefixed returns a worker output sink that writes each line to w as
// "[worker SLOT pid PID] line". Lines from concurrent workers never
// interleave.
func Prefixed(w io.Writer) worker.OutputFunc {
	var mu sync.Mutex
	return func(p *worker.Process, _ worker.Stream, line []byte) {
		var b bytes.Buffer
		b.Grow(len(line) + 32)
		b.WriteString("[worker ")
		b.WriteString(strconv.Itoa(p.Slot))
		b.WriteString(" pid ")
		b.WriteString(strconv.Itoa(p.PID))
		b.WriteString("] ")
		b.Write(line)
		b.WriteByte('\n')
		mu.Lock()
		defer mu.Unlock()
		w.Write(b.Bytes()) // a lost log line must not stop the worker's output
	}
}
