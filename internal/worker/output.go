package worker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
)

// maxLine splits longer output lines, so one runaway line cannot grow
// baton's memory without bound.
const maxLine = 16 << 10

// readLines hands each line of r to out until EOF or until r is closed.
func (p *Process) readLines(r *os.File, stream Stream, out func(*Process, Stream, []byte)) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out(p, stream, bytes.TrimSuffix(line, []byte{'\n'}))
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
