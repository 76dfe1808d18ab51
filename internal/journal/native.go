package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batonsd/baton/internal/worker"
	"golang.org/x/sys/unix"
)

// Socket is journald's native protocol socket.
const Socket = "/run/systemd/journal/socket"

// Field is one journal field. Names are upper case letters, digits and
// underscores; values may hold any bytes.
type Field struct {
	Name  string
	Value string
}

// Encode renders fields in journald's native protocol: NAME=value lines,
// or, for a value holding a newline, NAME, a newline, the value's length as
// 64-bit little endian, the value and a newline.
func Encode(fields []Field) []byte {
	var b bytes.Buffer
	for _, f := range fields {
		if !bytes.ContainsRune([]byte(f.Value), '\n') {
			b.WriteString(f.Name)
			b.WriteByte('=')
			b.WriteString(f.Value)
			b.WriteByte('\n')
			continue
		}
		b.WriteString(f.Name)
		b.WriteByte('\n')
		binary.Write(&b, binary.LittleEndian, uint64(len(f.Value))) // cannot fail on a bytes.Buffer
		b.WriteString(f.Value)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Writer sends entries to journald. It is safe for concurrent use: each
// entry is one datagram.
//
// It never blocks for long: a send that finds journald's queue full is
// retried for at most Patience, then the entry is dropped and counted, and
// the count goes to the journal as an entry of its own with the next one
// that gets through. A stuck journald once stopped baton's event loop in
// the middle of a log call.
type Writer struct {
	addr string
	fd   int
	// Patience is how long Send waits for room in journald's queue.
	Patience time.Duration
	dropped  atomic.Int64
}

// DefaultPatience is a Writer's Patience unless changed.
const DefaultPatience = 250 * time.Millisecond

// Dial opens a datagram socket to journald's native socket at path.
func Dial(path string) (*Writer, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("journal socket: %w", err)
	}
	w := &Writer{addr: path, fd: fd, Patience: DefaultPatience}
	// Probe now, so that a missing journald shows at start, not at the
	// first worker line.
	if err := w.Send([]Field{{"MESSAGE", "baton journal sink open"}, {"PRIORITY", "7"}, {"SYSLOG_IDENTIFIER", "baton"}}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return w, nil
}

// ErrDropped is returned by Send for an entry dropped because journald did
// not take it within the Writer's Patience.
var ErrDropped = errors.New("journald's queue stayed full: entry dropped")

// Send sends one entry, waiting at most w.Patience for room: for worker
// lines, read on each worker's own goroutine, where a short wait passes
// journald's back-pressure on to that worker alone.
func (w *Writer) Send(fields []Field) error { return w.sendEntry(fields, w.Patience) }

// TrySend sends one entry or drops it at once: for baton's own events,
// logged from the event loop, which must never wait for journald.
func (w *Writer) TrySend(fields []Field) error { return w.sendEntry(fields, 0) }

func (w *Writer) sendEntry(fields []Field, patience time.Duration) error {
	if n := w.dropped.Swap(0); n > 0 {
		notice := Encode([]Field{{"MESSAGE", fmt.Sprintf("baton: %d journal entries dropped: journald did not take them", n)},
			{"PRIORITY", "4"}, {"SYSLOG_IDENTIFIER", "baton"}, {"BATON_DROPPED", strconv.FormatInt(n, 10)}})
		if err := w.send(notice, patience); err != nil {
			w.dropped.Add(n + 1)
			return err
		}
	}
	err := w.send(Encode(fields), patience)
	if errors.Is(err, ErrDropped) {
		w.dropped.Add(1)
	}
	return err
}

func (w *Writer) send(msg []byte, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	pause := time.Millisecond
	for {
		err := unix.Sendmsg(w.fd, msg, nil, &unix.SockaddrUnix{Name: w.addr}, unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EAGAIN):
			// An unconnected datagram socket polls writable whatever the
			// receiver's queue holds, so wait by the clock.
			if time.Now().After(deadline) {
				return ErrDropped
			}
			time.Sleep(pause)
			pause = min(2*pause, 50*time.Millisecond)
		case errors.Is(err, unix.EMSGSIZE):
			return fmt.Errorf("journal entry of %d bytes: too large for a datagram", len(msg))
		default:
			return fmt.Errorf("journal %s: %w", w.addr, err)
		}
	}
}

// Close closes the socket.
func (w *Writer) Close() error { return unix.Close(w.fd) }

// Available reports whether baton's own output goes to journald (systemd
// set JOURNAL_STREAM) and the native socket is there: then worker lines go
// to the journal with their fields; otherwise they go to stderr, prefixed.
func Available() bool {
	if os.Getenv("JOURNAL_STREAM") == "" {
		return false
	}
	_, err := os.Stat(Socket)
	return err == nil
}

// Priority levels of sd-daemon(3) prefixes.
const (
	prioInfo    = 6
	prioWarning = 4
)

// splitPriority strips an sd-daemon "<N>" prefix and returns its level.
func splitPriority(line []byte, def int) (int, []byte) {
	if len(line) >= 3 && line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>' {
		return int(line[1] - '0'), line[3:]
	}
	return def, line
}

// WorkerSink returns a worker output sink that sends each line as a journal
// entry with the worker's slot, generation and pid (BATON_WORKER,
// BATON_GENERATION, BATON_WORKER_PID, SYSLOG_PID), the stream, and PRIORITY
// from an "<N>" prefix.
//
// Found under a real journald: journalctl's short format prints the trusted
// _PID (baton's, the sender) and falls back to SYSLOG_PID only when _PID is
// missing, so plain `journalctl -u` shows baton's pid on worker lines; the
// worker's pid is in SYSLOG_PID and BATON_WORKER_PID (-o verbose, -o json,
// and the pid column of `baton logs`).
// ident is the SYSLOG_IDENTIFIER, such as the command's base name. Lines
// journald refuses are written to fallback, prefixed.
func WorkerSink(w *Writer, command string, fallback worker.OutputFunc) worker.OutputFunc {
	ident := filepath.Base(command)
	var once sync.Once
	return func(p *worker.Process, stream worker.Stream, line []byte) {
		prio, msg := splitPriority(line, prioInfo)
		err := w.Send([]Field{
			{"MESSAGE", string(msg)},
			{"PRIORITY", strconv.Itoa(prio)},
			{"SYSLOG_IDENTIFIER", ident},
			{"SYSLOG_PID", strconv.Itoa(p.PID)},
			{"BATON_WORKER", strconv.Itoa(p.Slot)},
			{"BATON_GENERATION", strconv.Itoa(p.Generation)},
			{"BATON_WORKER_PID", strconv.Itoa(p.PID)},
			{"BATON_STREAM", string(stream)},
		})
		if errors.Is(err, ErrDropped) {
			return // counted, and reported with the next entry journald takes
		}
		if err != nil {
			once.Do(func() {
				fallback(p, stream, fmt.Appendf(nil, "baton: journald refused a line, worker output goes to stderr: %v", err))
			})
			fallback(p, stream, line)
		}
	}
}
