package main

import (
	"bytes"
	"strings"
	"testing"

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
