package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/journal"
	"github.com/batonsd/baton/internal/sigrelay"
	"github.com/batonsd/baton/internal/supervisor"
	"github.com/batonsd/baton/internal/worker"
	"github.com/urfave/cli/v2"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "supervise worker processes that share the service's sockets",
		ArgsUsage: "-- CMD [ARG...]",
		Flags:     runFlags(),
		Action:    runAction,
	}
}

// runFlags are the flags of `baton run`; `baton units` takes them too and
// writes those given into ExecStart=.
func runFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "workers", Value: runtime.NumCPU(), Usage: "worker slots"},
		&cli.StringSliceFlag{Name: "listen", Usage: "`[NAME=]ADDR` to open when systemd passed no socket of that name: 127.0.0.1:8080, [::]:443, unix:/run/app.sock"},
		&cli.StringFlag{Name: "ready", Value: "notify", Usage: "when a new worker is ready: notify, exec, listening (it accepts on a shared socket), delay:DUR, http://HOST:PORT/PATH ({slot}, {pid})"},
		&cli.DurationFlag{Name: "ready-timeout", Value: 60 * time.Second, Usage: "a worker not ready by then is killed"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "SIGKILL a draining worker at this deadline"},
		&cli.StringFlag{Name: "stop-signal", Value: "TERM", Usage: "the signal that tells a worker to drain"},
		&cli.StringFlag{Name: "restart-backoff", Value: "100ms..30s", Usage: "crash restart delay `MIN..MAX`, doubling"},
		&cli.StringFlag{Name: "crash-limit", Value: "10/60s", Usage: "more crashes than `N/DUR` and baton exits 2"},
		&cli.StringFlag{Name: "control", Usage: "control socket `PATH` (default $RUNTIME_DIRECTORY/control.sock, else /run/baton/NAME.sock)"},
		&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics (/metrics) and a health check (/healthz) on TCP `ADDR`, such as 127.0.0.1:9100 (default: none)"},
		&cli.IntFlag{Name: "max-surge", Value: 1, Usage: "new workers a rollout starts at once"},
		&cli.StringFlag{Name: "strategy", Value: "rolling", Usage: "rolling, or blue-green: all new workers ready, then all old ones drain"},
		&cli.DurationFlag{Name: "canary", Usage: "watch a rollout's first batch this long; an exit in that window aborts"},
		&cli.DurationFlag{Name: "watchdog", Usage: "WATCHDOG_USEC given to workers; one that misses it gets SIGABRT, then SIGKILL, and is replaced (0: off)"},
		&cli.StringFlag{Name: "directory", Usage: "the workers' working `PATH`, resolved through symlinks at each rollout and pinned for that generation (default: the directory baton started in)"},
		&cli.GenericFlag{Name: "env", Value: &valueList{}, Usage: "`KEY=VALUE` added to the workers' environment (repeatable)"},
		&cli.GenericFlag{Name: "env-file", Value: &valueList{}, Usage: "`FILE` of KEY=VALUE lines in systemd's EnvironmentFile= syntax, re-read at each rollout and pinned (repeatable; relative to --directory; -FILE: may be missing)"},
		&cli.StringFlag{Name: "recycle-memory", Usage: "replace a worker gracefully (its successor ready first) when its process tree's memory (PSS) stays above `SIZE` (512M, 2G; default: off)"},
		&cli.DurationFlag{Name: "recycle-after", Usage: "replace a worker gracefully once it is older than `DUR`, less up to 10% at random (default: off)"},
		&cli.DurationFlag{Name: "lame-duck", Usage: "on a stop request, report the stop (/healthz 503, status --check, STATUS=) while every worker keeps serving this long, then drain; a second stop signal drains at once (for load balancers)"},
		&cli.StringFlag{Name: "check", Usage: "shell `CMD` run before each rollout (like nginx -t); non-zero aborts it"},
		&cli.StringFlag{Name: "config", Usage: "TOML `FILE` with these settings (keys are the flag names, plus command), re-read at every rollout; flags given here win"},
		&cli.StringFlag{Name: "log", Value: "journal", Usage: "worker output: journal (native journald entries with BATON_WORKER, BATON_GENERATION; prefixed lines on stderr when journald is not baton's stderr) or inherit"},
	}
}

// stderrQueue bounds what baton queues for its stderr.
const stderrQueue = 1 << 20

func runAction(c *cli.Context) error {
	// baton's stderr never blocks it and never kills it: writes go through
	// a bounded queue that drops and counts when the reader is stuck, and
	// with SIGPIPE notified (never read: the channel just has to exist) a
	// write to a pipe whose reader is gone fails with EPIPE instead of
	// killing baton and with it every worker. Notify, not Ignore: an
	// ignored signal stays ignored in the workers, a handled one does not.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stderr := journal.NewAsync(os.Stderr, stderrQueue)
	defer stderr.Close(time.Second)
	out := outputs{prefixed: journal.Prefixed(stderr)} // one sink, so lines never interleave
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	if journal.Available() {
		w, err := journal.Dial(journal.Socket)
		if err != nil {
			logger.Warn("journald is baton's stderr but its native socket refuses: worker lines go to stderr", "err", err)
		} else {
			defer w.Close()
			out.journal = w
			logger = slog.New(journal.NewHandler(w, slog.LevelInfo))
		}
	}
	if !sigrelay.Protected() {
		// Said at every start, a re-executed image's too: nothing else
		// shows it until a signal kills baton in an upgrade.
		logger.Warn("signals sent during an in-place upgrade can kill baton", "signal_relay", sigrelay.Mode())
	}
	s, err := supervisor.New(func() (supervisor.Config, error) {
		st, err := loadSettings(c)
		if err != nil {
			return supervisor.Config{}, err
		}
		for _, k := range st.shadowed() {
			// An edit of that key would change nothing, silently.
			logger.Warn("a key of the config file is also a command-line flag, which wins: edits of the key change nothing",
				"config", st.path, "key", k, "flag", "--"+k)
		}
		cfg, err := runConfig(st, out)
		cfg.Logger = logger
		return cfg, err
	})
	if err != nil {
		return err
	}
	// The supervisor handles SIGTERM and SIGINT itself (a second one kills
	// the workers at once): main's signal context must not also stop it.
	return s.Run(context.WithoutCancel(c.Context))
}

// runConfig turns the settings into a supervisor.Config; each error names
// its flag or config key.
// outputs are the sinks of worker output for --log journal: journald's
// native protocol when journald is baton's stderr, else prefixed lines.
type outputs struct {
	journal  *journal.Writer
	prefixed worker.OutputFunc
}

func runConfig(st settings, out outputs) (supervisor.Config, error) {
	cfg := supervisor.Config{
		Version:  version,
		ShimPath: worker.ShellShim,
		ShimArgv: worker.ShellShimArgv,
	}
	var err error
	if cfg.Command, err = st.Command(); err != nil {
		return cfg, err
	}
	if len(cfg.Command) == 0 {
		return cfg, fmt.Errorf("no worker command: baton run [flags] -- CMD [ARG...] (or command = [...] in --config)")
	}
	// The command's program, the directory and the environment files are
	// resolved by the supervisor for each new generation (pinned).
	for _, step := range []func() error{
		func() (err error) { cfg.Sources.Directory, err = st.String("directory"); return },
		func() (err error) { cfg.Sources.Env, err = st.Strings("env"); return },
		func() (err error) { cfg.Sources.EnvFiles, err = st.Strings("env-file"); return },
		func() (err error) { cfg.Workers, err = st.Int("workers"); return },
		func() (err error) { cfg.ReadyTimeout, err = st.Duration("ready-timeout"); return },
		func() (err error) { cfg.DrainTimeout, err = st.Duration("drain-timeout"); return },
		func() (err error) { cfg.MaxSurge, err = st.Int("max-surge"); return },
		func() (err error) { cfg.Canary, err = st.Duration("canary"); return },
		func() (err error) { cfg.Check, err = st.String("check"); return },
		func() (err error) { cfg.Watchdog, err = st.Duration("watchdog"); return },
		func() (err error) { cfg.RecycleAfter, err = st.Duration("recycle-after"); return },
		func() (err error) { cfg.LameDuck, err = st.Duration("lame-duck"); return },
		func() error {
			v, err := st.String("recycle-memory")
			if err != nil || v == "" {
				return err
			}
			if cfg.RecycleMemory, err = supervisor.ParseSize(v); err != nil {
				return fmt.Errorf("--recycle-memory %w", err)
			}
			return nil
		},
		func() error { return parsed(st, "ready", supervisor.ParseReady, &cfg.Ready) },
		func() error { return parsed(st, "strategy", supervisor.ParseStrategy, &cfg.BlueGreen) },
		func() error { return parsed(st, "stop-signal", supervisor.ParseSignal, &cfg.StopSignal) },
		func() error { return parsed(st, "restart-backoff", supervisor.ParseBackoff, &cfg.RestartBackoff) },
		func() error { return parsed(st, "crash-limit", supervisor.ParseCrashLimit, &cfg.CrashLimit) },
		func() error {
			listen, err := st.Strings("listen")
			for _, l := range listen {
				spec, perr := activation.ParseSpec(l)
				if perr != nil {
					return fmt.Errorf("--%w", perr)
				}
				cfg.Listen = append(cfg.Listen, spec)
			}
			return err
		},
		func() error {
			mode, err := st.String("log")
			switch {
			case err != nil:
				return err
			case mode == "journal" && out.journal != nil:
				cfg.Output = journal.WorkerSink(out.journal, cfg.Command[0], out.prefixed)
			case mode == "journal":
				cfg.Output = out.prefixed
			case mode != "inherit":
				return fmt.Errorf("--log %q: want journal or inherit", mode)
			}
			return nil
		},
	} {
		if err := step(); err != nil {
			return cfg, err
		}
	}
	cfg.Metrics = st.c.String("metrics")
	cfg.Control = st.c.String("control")
	if cfg.Control == "" {
		cgroup, _ := os.ReadFile("/proc/self/cgroup") // without it, the command names the socket
		cfg.Control = control.DefaultPath(control.OSEnv(), control.ServiceName(string(cgroup), cfg.Command[0]))
	}
	return cfg, nil
}

// parsed reads the string setting name and parses it into dst.
func parsed[T any](st settings, name string, parse func(string) (T, error), dst *T) error {
	v, err := st.String(name)
	if err != nil {
		return err
	}
	*dst, err = parse(v)
	return err
}

// valueList is a repeatable flag whose every value is taken whole: unlike
// cli.StringSliceFlag it never splits a value at its commas (HOSTS=a,b is
// one --env), and it leaves how the other list flags split as it was
// (--listen a,b is two sockets, in command lines already running).
type valueList []string

func (l *valueList) Set(v string) error { *l = append(*l, v); return nil }
func (l *valueList) String() string     { return strings.Join(*l, " ") }

// listValues is the values of a valueList flag, nil if it is not one.
func listValues(c *cli.Context, name string) ([]string, bool) {
	l, ok := c.Generic(name).(*valueList)
	if !ok || l == nil {
		return nil, ok
	}
	return *l, true
}
