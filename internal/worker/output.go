package worker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
)

// maxLine splits longer output lines, so one runaway line cannot grow
// baton's memory without bound.
const maxLine = 16 << 10

// tailLines is how many of its last output lines a worker keeps, to explain
// why it failed.
const tailLines = 10

// tail keeps the last tailLines lines of output.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, string(line))
}

// Tail returns the worker's last lines of output (none when its output is
// inherited rather than read by baton).
func (p *Process) Tail() []string {
	p.tail.mu.Lock()
	defer p.tail.mu.Unlock()
	return append([]string(nil), p.tail.lines...)
}

// readLines hands each line of r to out until EOF or until r is closed,
// and closes r: left to the garbage collector's finalizer, a pipe per worker
// stays open for an unknown while (the fd-leak test saw 63 after 1000
// rollouts).
func (p *Process) readLines(r *os.File, stream Stream, out func(*Process, Stream, []byte)) {
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte{'\n'})
			p.tail.add(line)
			out(p, stream, line)
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF), errors.Is(err, os.ErrClosed):
			return
		default:
			p.log.Warn("read worker output", "slot", p.Slot, "pid", p.PID, "stream", string(stream), "err", err)
			return
		}
	}
}
