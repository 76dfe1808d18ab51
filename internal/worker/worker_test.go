package worker

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEnvDropsPerProcessVariables(t *testing.T) {
	in := []string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1", "WATCHDOG_PID=1",
		"LISTEN_FDS=1", "LISTEN_PID=1", "LISTEN_FDNAMES=x", "BATON_WORKER=3", "JOURNAL_STREAM=8:9", "HOME=/root"}
	if diff := cmp.Diff([]string{"PATH=/bin", "HOME=/root"}, Env(in, true)); diff != "" {
		t.Errorf("piped (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PATH=/bin", "JOURNAL_STREAM=8:9", "HOME=/root"}, Env(in, false)); diff != "" {
		t.Errorf("inherited (-want +got):\n%s", diff)
	}
}
