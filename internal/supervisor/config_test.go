package supervisor

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseReady(t *testing.T) {
	tests := []struct {
		in      string
		want    Ready
		wantErr string
	}{
		{in: "notify", want: Ready{Kind: ReadyNotify}},
		{in: "exec", want: Ready{Kind: ReadyExec}},
		{in: "delay:2s", want: Ready{Kind: ReadyDelay, Delay: 2 * time.Second}},
		{in: "http://127.0.0.1:90{slot}/healthz?pid={pid}", want: Ready{Kind: ReadyHTTP, URL: "http://127.0.0.1:90{slot}/healthz?pid={pid}"}},
		{in: "delay:soon", wantErr: "delay:DUR needs a duration"},
		{in: "delay:-1s", wantErr: "delay:DUR needs a duration"},
		{in: "http://", wantErr: "not an http://HOST:PORT/PATH URL"},
		{in: "https://x/", wantErr: "want notify, exec"},
		{in: "", wantErr: "--ready"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseReady(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseReady(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseReady(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
	r, _ := ParseReady("http://127.0.0.1:90{slot}/h?pid={pid}")
	if got := r.ProbeURL(3, 1234); got != "http://127.0.0.1:903/h?pid=1234" {
		t.Errorf("ProbeURL = %q", got)
	}
}

func TestParseBackoffAndCrashLimit(t *testing.T) {
	if b, err := ParseBackoff("100ms..30s"); err != nil || b != (Backoff{100 * time.Millisecond, 30 * time.Second}) {
		t.Errorf("ParseBackoff = %+v, %v", b, err)
	}
	for _, bad := range []string{"100ms", "1s..100ms", "0s..1s", "a..b", "1s.."} {
		if _, err := ParseBackoff(bad); err == nil || !strings.Contains(err.Error(), "--restart-backoff") {
			t.Errorf("ParseBackoff(%q) error = %v", bad, err)
		}
	}
	if c, err := ParseCrashLimit("10/60s"); err != nil || c != (CrashLimit{10, time.Minute}) {
		t.Errorf("ParseCrashLimit = %+v, %v", c, err)
	}
	for _, bad := range []string{"10", "x/60s", "10/0s", "-1/1s", "10/fast"} {
		if _, err := ParseCrashLimit(bad); err == nil || !strings.Contains(err.Error(), "--crash-limit") {
			t.Errorf("ParseCrashLimit(%q) error = %v", bad, err)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"TERM": syscall.SIGTERM, "sigquit": syscall.SIGQUIT, "SIGINT": syscall.SIGINT, "usr1": syscall.SIGUSR1} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseSignal("STOP2"); err == nil || !strings.Contains(err.Error(), `--stop-signal "STOP2"`) {
		t.Errorf("ParseSignal(STOP2) error = %v", err)
	}
}

func TestConfigCheckNamesEachProblem(t *testing.T) {
	err := (&Config{}).check()
	for _, want := range []string{"no worker command", "--workers 0", "--ready-timeout", "--drain-timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check() = %v, want it to mention %q", err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64 // 0: refused
	}{
		{"512M", 512 << 20}, {"512MiB", 512 << 20}, {"512mb", 512 << 20}, {"512mib", 512 << 20}, {"512MB", 512 << 20},
		{"1.5G", 3 << 29}, {"2g", 2 << 30}, {"1T", 1 << 40}, {"4096K", 4 << 20}, {"1048576", 1 << 20},
		{"", 0}, {"0", 0}, {"-1", 0}, {"512", 0}, {"1023K", 0}, {"10iB", 0}, {"lots", 0}, {"5X", 0},
		{"1.2.3M", 0}, {"16777216T", 0}, {"M", 0},
	} {
		got, err := ParseSize(tt.in)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}
