package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// TestPrintStatusSignalRelay: the human status names the signal relay's
// mode only when a signal during an upgrade can kill baton.
func TestPrintStatusSignalRelay(t *testing.T) {
	for _, tc := range []struct {
		name  string
		relay control.SignalRelay
		want  string // a line of the output, "" for none naming the relay
	}{
		{"protected", control.SignalRelay{Mode: "cgo: a recorder", Protected: true}, ""},
		{"unprotected", control.SignalRelay{Mode: "none: built without cgo: a SIGHUP kills baton"}, "signal relay none: built without cgo: a SIGHUP kills baton"},
		{"older baton", control.SignalRelay{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			printStatus(&out, &control.Status{State: "ready", Version: version, SignalRelay: tc.relay})
			var got string
			for line := range strings.Lines(out.String()) {
				if strings.HasPrefix(line, "signal relay") {
					got = strings.TrimSuffix(line, "\n")
				}
			}
			if got != tc.want {
				t.Errorf("signal relay line %q, want %q; output:\n%s", got, tc.want, out.String())
			}
		})
	}
}

// TestPrintStatusRecycleHeld: a slot whose automatic recycles are held
// back gets a line saying why, which and for how long; the others none.
func TestPrintStatusRecycleHeld(t *testing.T) {
	until := time.Now().Add(30*time.Second + 500*time.Millisecond)
	var out bytes.Buffer
	printStatus(&out, &control.Status{State: "ready", Version: version, Workers: []control.Worker{
		{Slot: 0, PID: 10, State: "ready"},
		{Slot: 1, PID: 11, State: "ready", RecycleHeld: "successor crossed the ceiling 1.5s after ready; raise --recycle-memory", RecycleHeldUntil: &until,
			RecycleHeldMemoryOnly: true, AboveCeiling: true},
		{Slot: 2, PID: 12, State: "ready", RecycleHeld: "its last recycle failed: not ready", RecycleHeldUntil: &until},
	}})
	var held []string
	for line := range strings.Lines(out.String()) {
		if strings.HasPrefix(line, "slot ") {
			held = append(held, strings.TrimSuffix(line, "\n"))
		}
	}
	want := []string{
		"slot 1: successor crossed the ceiling 1.5s after ready; raise --recycle-memory (not recycled by memory for 30s)",
		"slot 2: its last recycle failed: not ready (not recycled automatically for 30s)",
	}
	if !slices.Equal(held, want) {
		t.Errorf("held lines %q, want %q; output:\n%s", held, want, out.String())
	}
	if strings.Contains(out.String(), "from its start") {
		t.Errorf("a slot whose hold is said gets the older note as well:\n%s", out.String())
	}
}

// TestPrintStatusAboveCeilingFromOlderBaton: a baton before recycle_held
// says a slot's back-off only by above_ceiling on its worker; this client
// says it as that baton's own client did.
func TestPrintStatusAboveCeilingFromOlderBaton(t *testing.T) {
	var out bytes.Buffer
	printStatus(&out, &control.Status{State: "ready", Version: version, Workers: []control.Worker{
		{Slot: 0, PID: 10, State: "ready"},
		{Slot: 1, PID: 11, State: "ready", AboveCeiling: true, MemoryBytes: 30 << 20, Status: "serving"},
	}})
	const want = "above --recycle-memory from its start (30.0M), as the worker it replaced: recycling backs off; serving"
	if n := strings.Count(out.String(), "above --recycle-memory"); n != 1 || !strings.Contains(out.String(), want) {
		t.Errorf("status of a slot an older baton backed off does not say %q once:\n%s", want, out.String())
	}
}

// TestSamePath: a unit's control path and --control are compared as paths,
// whether or not a socket is there: relative or absolute, through a
// symbolic link to the directory (as /var/run to /run).
func TestSamePath(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("run", filepath.Join(dir, "varrun")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{filepath.Join(dir, "run/app.sock"), "run/app.sock", true},
		{filepath.Join(dir, "varrun/app.sock"), filepath.Join(dir, "run/app.sock"), true},
		{filepath.Join(dir, "run/app.sock"), filepath.Join(dir, "run/other.sock"), false},
		{"/nonexistent/app/control.sock", "/nonexistent/app/../app/control.sock", true},
		{"/nonexistent/app/control.sock", "/nonexistent/other/control.sock", false},
	} {
		if got := samePath(tc.a, tc.b); got != tc.want {
			t.Errorf("samePath(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
