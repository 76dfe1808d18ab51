package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/journal"
	"github.com/batonsd/baton/internal/supervisor"
	"github.com/urfave/cli/v2"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "supervise worker processes that share the service's sockets",
		ArgsUsage: "-- CMD [ARG...]",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "workers", Value: runtime.NumCPU(), Usage: "worker slots"},
			&cli.StringSliceFlag{Name: "listen", Usage: "`[NAME=]ADDR` to open when systemd passed no socket of that name: 127.0.0.1:8080, [::]:443, unix:/run/app.sock"},
			&cli.StringFlag{Name: "ready", Value: "notify", Usage: "when a new worker is ready: notify, exec, delay:DUR, http://HOST:PORT/PATH ({slot}, {pid})"},
			&cli.DurationFlag{Name: "ready-timeout", Value: 60 * time.Second, Usage: "a worker not ready by then is killed"},
			&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "SIGKILL a draining worker at this deadline"},
			&cli.StringFlag{Name: "stop-signal", Value: "TERM", Usage: "the signal that tells a worker to drain"},
			&cli.StringFlag{Name: "restart-backoff", Value: "100ms..30s", Usage: "crash restart delay `MIN..MAX`, doubling"},
			&cli.StringFlag{Name: "crash-limit", Value: "10/60s", Usage: "more crashes than `N/DUR` and baton exits 2"},
			&cli.StringFlag{Name: "control", Usage: "control socket `PATH` (default $RUNTIME_DIRECTORY/control.sock, else /run/baton/NAME.sock)"},
			&cli.StringFlag{Name: "log", Value: "journal", Usage: "worker output: journal (prefixed lines on stderr until journald support lands) or inherit"},
		},
		Action: runAction,
	}
}

func runAction(c *cli.Context) error {
	cfg, err := runConfig(c)
	if err != nil {
		return err
	}
	s, err := supervisor.New(cfg)
	if err != nil {
		return err
	}
	// The supervisor handles SIGTERM and SIGINT itself (a second one kills
	// the workers at once): main's signal context must not also stop it.
	return s.Run(context.WithoutCancel(c.Context))
}

// runConfig turns the flags into a supervisor.Config; each error names its
// flag.
func runConfig(c *cli.Context) (supervisor.Config, error) {
	cfg := supervisor.Config{
		Command:      c.Args().Slice(),
		Workers:      c.Int("workers"),
		ReadyTimeout: c.Duration("ready-timeout"),
		DrainTimeout: c.Duration("drain-timeout"),
		ShimPath:     "/proc/self/exe", // this very image, even if the file was replaced since
		ShimArgv:     []string{"baton", "shim"},
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	if len(cfg.Command) == 0 {
		return cfg, fmt.Errorf("no worker command: baton run [flags] -- CMD [ARG...]")
	}
	if _, err := exec.LookPath(cfg.Command[0]); err != nil {
		return cfg, fmt.Errorf("worker command: %w", err)
	}
	var err error
	for _, l := range c.StringSlice("listen") {
		spec, err := activation.ParseSpec(l)
		if err != nil {
			return cfg, fmt.Errorf("--%w", err)
		}
		cfg.Listen = append(cfg.Listen, spec)
	}
	if cfg.Ready, err = supervisor.ParseReady(c.String("ready")); err != nil {
		return cfg, err
	}
	if cfg.StopSignal, err = supervisor.ParseSignal(c.String("stop-signal")); err != nil {
		return cfg, err
	}
	if cfg.RestartBackoff, err = supervisor.ParseBackoff(c.String("restart-backoff")); err != nil {
		return cfg, err
	}
	if cfg.CrashLimit, err = supervisor.ParseCrashLimit(c.String("crash-limit")); err != nil {
		return cfg, err
	}
	switch mode := c.String("log"); mode {
	case "journal":
		cfg.Output = journal.Prefixed(os.Stderr)
	case "inherit":
	default:
		return cfg, fmt.Errorf("--log %q: want journal or inherit", mode)
	}
	cfg.Control = c.String("control")
	if cfg.Control == "" {
		cgroup, _ := os.ReadFile("/proc/self/cgroup") // without it, the command names the socket
		cfg.Control = control.DefaultPath(control.OSEnv(), control.ServiceName(string(cgroup), cfg.Command[0]))
	}
	return cfg, nil
}
