package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/worker"
	"github.com/google/go-cmp/cmp"
)

// decode is journald's side of the native protocol, for the tests.
func decode(t *testing.T, b []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("unterminated field %q", b)
		}
		line := b[:nl]
		if name, value, ok := bytes.Cut(line, []byte{'='}); ok {
			m[string(name)] = string(value)
			b = b[nl+1:]
			continue
		}
		b = b[nl+1:]
		n := binary.LittleEndian.Uint64(b[:8])
		m[string(line)] = string(b[8 : 8+n])
		if b[8+n] != '\n' {
			t.Fatalf("binary field %s not followed by a newline", line)
		}
		b = b[8+n+1:]
	}
	return m
}

// fakeJournald listens where a Writer can send, and returns each entry.
func fakeJournald(t *testing.T) (*Writer, func() map[string]string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	next := func() map[string]string {
		buf := make([]byte, 1<<16)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return decode(t, buf[:n])
	}
	w, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if probe := next(); probe["MESSAGE"] != "baton journal sink open" {
		t.Fatalf("probe entry %v", probe)
	}
	return w, next
}

func TestEncodeRoundTrip(t *testing.T) {
	fields := []Field{{"MESSAGE", "line one\nline two"}, {"PRIORITY", "6"}, {"EMPTY", ""}}
	want := map[string]string{"MESSAGE": "line one\nline two", "PRIORITY": "6", "EMPTY": ""}
	if diff := cmp.Diff(want, decode(t, Encode(fields))); diff != "" {
		t.Error(diff)
	}
}

func TestWorkerSinkFields(t *testing.T) {
	w, next := fakeJournald(t)
	sink := WorkerSink(w, "/usr/bin/myapp", func(*worker.Process, worker.Stream, []byte) { t.Error("fell back") })
	p := &worker.Process{PID: 4242, Slot: 1, Generation: 7}
	sink(p, worker.Stderr, []byte("<3>database gone"))
	want := map[string]string{
		"MESSAGE": "database gone", "PRIORITY": "3", "SYSLOG_IDENTIFIER": "myapp", "SYSLOG_PID": "4242",
		"BATON_WORKER": "1", "BATON_GENERATION": "7", "BATON_WORKER_PID": "4242", "BATON_STREAM": "stderr",
	}
	if diff := cmp.Diff(want, next()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	sink(p, worker.Stdout, []byte("<9>not a level"))
	if e := next(); e["MESSAGE"] != "<9>not a level" || e["PRIORITY"] != "6" {
		t.Errorf("entry %v", e)
	}
}

func TestSlogHandler(t *testing.T) {
	w, next := fakeJournald(t)
	log := slog.New(NewHandler(w, slog.LevelInfo))
	log.Error("rollout aborted", "slot", 2, "pid", 99, "gen", 8, "err", "exit status 1")
	want := map[string]string{
		"MESSAGE":           `rollout aborted slot=2 pid=99 gen=8 err="exit status 1"`,
		"PRIORITY":          "3",
		"SYSLOG_IDENTIFIER": "baton",
		"BATON_EVENT":       "rollout aborted",
		"BATON_WORKER":      "2", "BATON_WORKER_PID": "99", "BATON_GENERATION": "8", "BATON_ERR": "exit status 1",
	}
	if diff := cmp.Diff(want, next()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	log.Debug("not sent")
	log.With("drain_timeout", "30s").Info("stopping")
	if e := next(); e["BATON_EVENT"] != "stopping" || e["BATON_DRAIN_TIMEOUT"] != "30s" || e["PRIORITY"] != "6" {
		t.Errorf("entry %v", e)
	}
}

// TestStuckJournaldDropsAndCounts: a journald that does not read fills its
// queue; sends then give up (at once for baton's own events, after the
// Writer's patience for worker lines), and the count of what was dropped
// reaches the journal with the next entry it takes.
func TestStuckJournaldDropsAndCounts(t *testing.T) {
	w, next := fakeJournald(t)
	w.Patience = 20 * time.Millisecond
	entry := []Field{{"MESSAGE", strings.Repeat("x", 2000)}}
	sent := 0
	for ; sent < 100000; sent++ {
		if err := w.TrySend(entry); errors.Is(err, ErrDropped) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := w.Send(entry); !errors.Is(err, ErrDropped) {
		t.Fatalf("Send to a full queue: %v", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("Send waited %s with a patience of 20ms", waited)
	}
	for range sent { // journald reads again
		next()
	}
	if err := w.Send([]Field{{"MESSAGE", "back"}}); err != nil {
		t.Fatal(err)
	}
	notice := next()
	if notice["BATON_DROPPED"] != "2" || !strings.Contains(notice["MESSAGE"], "2 journal entries dropped") {
		t.Errorf("drop notice %v", notice)
	}
	if e := next(); e["MESSAGE"] != "back" {
		t.Errorf("entry after the notice %v", e)
	}
}
