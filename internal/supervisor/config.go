package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/worker"
	"golang.org/x/sys/unix"
)

// Config is what `baton run` is started with: the settings of a
// generation's workers, and the rest, which belongs to the process.
type Config struct {
	GenSettings
	// Sources are where the pinned settings come from, resolved anew for
	// each generation made from a re-read configuration (pin.go).
	Sources        Sources
	Workers        int
	Listen         []activation.Spec
	RestartBackoff Backoff
	CrashLimit     CrashLimit
	// MaxSurge is how many new workers a rollout starts at once;
	// BlueGreen starts them all, then drains all old ones.
	MaxSurge  int
	BlueGreen bool
	// Canary is how long the first batch of a rollout is watched before the
	// rollout goes on; an exit in that window aborts it.
	Canary time.Duration
	// Check is a shell command run before each rollout; non-zero aborts it.
	Check string
	// RecycleMemory is the memory (PSS of a worker's process tree, bytes)
	// above which a worker is recycled; RecycleAfter the age. 0 is off.
	RecycleMemory uint64
	RecycleAfter  time.Duration
	// LameDuck is how long a stop request first reports the stop while
	// every worker keeps serving; 0 drains at once.
	LameDuck time.Duration
	// Control is the control socket's path; empty means none.
	Control string
	// Metrics is the TCP address the metrics endpoint listens on
	// (internal/metrics); empty means none.
	Metrics string
	// Output receives worker output lines; nil passes the supervisor's own
	// stdout and stderr through to the workers.
	Output worker.OutputFunc
	// Version is baton's version, for status and the upgrade log.
	Version string
	// ShimPath and ShimArgv start the exec shim (see worker.Spec).
	ShimPath string
	ShimArgv []string
	Logger   *slog.Logger
}

// GenSettings are what a generation's workers are started and managed
// with: each generation keeps its own, so a crash restart, a drain deadline
// or a stop signal always uses the settings of the worker's generation, and
// they go whole to a re-executed image (a setting added here is handed over
// with no more code).
//
// Command, Directory and Env are pinned: resolved when the generation is
// made (pin.go), so every worker of it, crash restarts and scale-ups
// included, runs the same release whatever a symlink or a file says later.
type GenSettings struct {
	// Command is the worker command, its program resolved to a path whose
	// directories hold no symlink.
	Command []string `json:"command"`
	// Directory is the workers' working directory, symlinks resolved; empty
	// (a state handed over by a baton that had no --directory) inherits
	// baton's own.
	Directory string `json:"directory,omitempty"`
	// Env is what --env and --env-file add to the workers' environment,
	// KEY=VALUE, each key once, over baton's own environment.
	Env          []string       `json:"env,omitempty"`
	Ready        Ready          `json:"ready"`
	ReadyTimeout time.Duration  `json:"ready_timeout"`
	DrainTimeout time.Duration  `json:"drain_timeout"`
	StopSignal   syscall.Signal `json:"stop_signal"`
	// Watchdog is the WATCHDOG_USEC given to workers; 0 is off.
	Watchdog time.Duration `json:"watchdog"`
}

// ReadyKind is how a new worker shows it is ready.
type ReadyKind int

// The readiness modes of --ready.
const (
	ReadyNotify    ReadyKind = iota // the worker's own READY=1
	ReadyExec                       // as soon as it was started
	ReadyDelay                      // a fixed delay after the start
	ReadyHTTP                       // a probe URL answers 2xx
	ReadyListening                  // it accepts on a shared socket (internal/listening)
)

// Ready is a parsed --ready value.
type Ready struct {
	Kind  ReadyKind
	Delay time.Duration
	URL   string // may hold {slot} and {pid}
}

func (r Ready) String() string {
	switch r.Kind {
	case ReadyExec:
		return "exec"
	case ReadyDelay:
		return "delay:" + r.Delay.String()
	case ReadyHTTP:
		return r.URL
	case ReadyListening:
		return "listening"
	}
	return "notify"
}

// MarshalJSON writes r as its --ready value.
func (r Ready) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// UnmarshalJSON reads a --ready value.
func (r *Ready) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParseReady(s)
	*r = v
	return err
}

// ProbeURL returns the probe URL for one worker.
func (r Ready) ProbeURL(slot, pid int) string {
	return strings.NewReplacer("{slot}", strconv.Itoa(slot), "{pid}", strconv.Itoa(pid)).Replace(r.URL)
}

// ParseReady parses notify, exec, listening, delay:DUR or
// http://HOST:PORT/PATH.
func ParseReady(s string) (Ready, error) {
	switch {
	case s == "notify":
		return Ready{Kind: ReadyNotify}, nil
	case s == "exec":
		return Ready{Kind: ReadyExec}, nil
	case s == "listening":
		return Ready{Kind: ReadyListening}, nil
	case strings.HasPrefix(s, "delay:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "delay:"))
		if err != nil || d < 0 {
			return Ready{}, fmt.Errorf("--ready %q: delay:DUR needs a duration such as delay:2s", s)
		}
		return Ready{Kind: ReadyDelay, Delay: d}, nil
	case strings.HasPrefix(s, "http://"):
		u, err := url.Parse(Ready{URL: s}.ProbeURL(0, 1))
		if err != nil || u.Host == "" {
			return Ready{}, fmt.Errorf("--ready %q: not an http://HOST:PORT/PATH URL", s)
		}
		return Ready{Kind: ReadyHTTP, URL: s}, nil
	}
	return Ready{}, fmt.Errorf("--ready %q: want notify, exec, listening, delay:DUR or http://HOST:PORT/PATH", s)
}

// Backoff is the crash-restart delay: Min, doubling up to Max.
type Backoff struct{ Min, Max time.Duration }

// ParseBackoff parses "MIN..MAX", such as "100ms..30s".
func ParseBackoff(s string) (Backoff, error) {
	lo, hi, ok := strings.Cut(s, "..")
	minD, err1 := time.ParseDuration(lo)
	maxD, err2 := time.ParseDuration(hi)
	if !ok || err1 != nil || err2 != nil || minD <= 0 || maxD < minD {
		return Backoff{}, fmt.Errorf("--restart-backoff %q: want MIN..MAX with 0 < MIN <= MAX, such as 100ms..30s", s)
	}
	return Backoff{Min: minD, Max: maxD}, nil
}

// CrashLimit is the number of unasked worker exits tolerated within Per.
type CrashLimit struct {
	N   int
	Per time.Duration
}

// ParseCrashLimit parses "N/DUR", such as "10/60s".
func ParseCrashLimit(s string) (CrashLimit, error) {
	ns, ds, ok := strings.Cut(s, "/")
	n, err1 := strconv.Atoi(ns)
	d, err2 := time.ParseDuration(ds)
	if !ok || err1 != nil || err2 != nil || n < 0 || d <= 0 {
		return CrashLimit{}, fmt.Errorf("--crash-limit %q: want N/DUR, such as 10/60s", s)
	}
	return CrashLimit{N: n, Per: d}, nil
}

// ParseStrategy parses --strategy: rolling or blue-green. It reports
// whether the strategy is blue-green.
func ParseStrategy(s string) (bool, error) {
	switch s {
	case "rolling":
		return false, nil
	case "blue-green":
		return true, nil
	}
	return false, fmt.Errorf("--strategy %q: want rolling or blue-green", s)
}

// ParseSize parses a memory size of at least 1 MiB: a number (1.5 is fine)
// with K, M, G or T (powers of 1024, in any case, with or without "i" and
// "B": 512M, 512MiB, 512mb), or bytes without a unit.
func ParseSize(s string) (uint64, error) {
	bad := fmt.Errorf("%q: want a size of 1M or more, such as 512M, 1.5G or 1073741824", s)
	unit := strings.ToUpper(strings.TrimLeft(s, "0123456789."))
	num := s[:len(s)-len(unit)]
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift, ok := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
	if !ok || num == "" || strings.HasSuffix(s, "iB") && unit == "" {
		return 0, bad
	}
	n, err := strconv.ParseFloat(num, 64)
	bytes := n * float64(uint64(1)<<shift)
	if err != nil || bytes < 1<<20 || bytes >= math.MaxUint64 {
		return 0, bad
	}
	return uint64(bytes), nil
}

// ParseSignal parses a signal name with or without SIG ("TERM", "SIGQUIT").
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("--stop-signal %q: not a signal name", s)
	}
	return sig, nil
}

// check validates what the flag parsers cannot see on their own.
func (c *Config) check() error {
	var errs []error
	if len(c.Command) == 0 {
		errs = append(errs, errors.New("no worker command: baton run [flags] -- CMD [ARG...]"))
	}
	if c.Workers < 1 || c.Workers > MaxWorkers {
		errs = append(errs, fmt.Errorf("--workers %d: want 1 to %d", c.Workers, MaxWorkers))
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--ready-timeout %s: want more than 0", c.ReadyTimeout))
	}
	if c.MaxSurge < 1 {
		errs = append(errs, fmt.Errorf("--max-surge %d: want at least 1", c.MaxSurge))
	}
	if c.Watchdog < 0 {
		errs = append(errs, fmt.Errorf("--watchdog %s: want 0 (off) or more", c.Watchdog))
	}
	if c.Canary < 0 {
		errs = append(errs, fmt.Errorf("--canary %s: want 0 or more", c.Canary))
	}
	if c.LameDuck < 0 {
		errs = append(errs, fmt.Errorf("--lame-duck %s: want 0 (off) or more", c.LameDuck))
	}
	if c.RecycleAfter < 0 {
		errs = append(errs, fmt.Errorf("--recycle-after %s: want 0 (off) or more", c.RecycleAfter))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--drain-timeout %s: want more than 0", c.DrainTimeout))
	}
	if c.ShimPath == "" || len(c.ShimArgv) == 0 {
		errs = append(errs, errors.New("no exec shim configured"))
	}
	return errors.Join(errs...)
}

// genSpec is what the workers of one generation are started from: the
// command and worker settings as they were when the generation was made.
type genSpec struct {
	gen int
	cfg Config
}
