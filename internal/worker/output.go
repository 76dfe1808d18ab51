package worker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
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
func (p *Process) readLines(r *os.File, stream Stream, out OutputFunc, ended *atomic.Bool) {
	defer r.Close()
	defer ended.Store(true) // before the close: Handoff relies on the order
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

// OutputStreams are the worker's streams that baton reads (none when its
// output is inherited).
func (p *Process) OutputStreams() []Stream {
	return []Stream{Stdout, Stderr}[:len(p.outputs)]
}

// OutputFDs calls f with the read end of each of the worker's output
// pipes, without changing the fd's mode (as os.File.Fd would): for the FD
// store, which gets a duplicate.
func (p *Process) OutputFDs(f func(stream Stream, fd int)) {
	for i, r := range p.outputs {
		raw, err := r.SyscallConn()
		if err != nil {
			continue // closed: the output was read to its end
		}
		raw.Control(func(fd uintptr) { f([]Stream{Stdout, Stderr}[i], int(fd)) })
	}
}

// Orphan stands for a worker started by a previous baton that no longer
// runs (its output pipe came back from the FD store): it carries the
// worker's identity for the lines read from it.
func Orphan(pid, slot, gen int, log *slog.Logger) *Process {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Process{PID: pid, Slot: slot, Generation: gen, done: make(chan struct{}), log: log}
}

// ReadOutput hands each line of r to out until EOF, closes r, and returns
// the number of lines.
func (p *Process) ReadOutput(r *os.File, stream Stream, out OutputFunc) int {
	n := 0
	var ended atomic.Bool
	p.readLines(r, stream, func(p *Process, s Stream, line []byte) {
		n++
		out(p, s, line)
	}, &ended)
	return n
}
