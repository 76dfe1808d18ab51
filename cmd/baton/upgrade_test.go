package main

import (
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// TestUpgradeAttemptOutlastsTheClient: each attempt of upgrade --all (the
// package postinst's) lasts longer than the client waits for the new
// image's answer, so an upgrade that answers within the client's limit is
// never cut off by the attempt's own deadline.
func TestUpgradeAttemptOutlastsTheClient(t *testing.T) {
	if limit := control.UpgradeLimit(); upgradeAttempt < limit+5*time.Second {
		t.Errorf("an upgrade --all attempt lasts %s, the client waits up to %s for its answer", upgradeAttempt, limit)
	}
}
