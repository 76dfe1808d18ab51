//go:build cgo

package sigrelay

import "testing"

const cgoEnabled = true

// TestEnvInC: relay.h names the variable the constructor reads; it must be
// the one Export sets.
func TestEnvInC(t *testing.T) {
	if envInC != Env {
		t.Fatalf("relay.h's BATON_RELAY_ENV is %q, Env %q", envInC, Env)
	}
}
