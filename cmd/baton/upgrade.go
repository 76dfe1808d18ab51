package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func upgradeCommand() *cli.Command {
	return &cli.Command{
		Name:  "upgrade",
		Usage: "re-execute the baton binary now on disk in place, workers and sockets kept (as SIGUSR2)",
		Description: "The binary on disk is first asked for its state-handoff protocol version; a different one\n" +
			"is refused (use systemctl restart: the FD store keeps the sockets). The main pid stays the same.\n\n" +
			"With --all, every `baton run` on the host that runs this binary's path is upgraded in turn\n" +
			"(what the package does after an upgrade): one that is starting or rolling out is asked again\n" +
			"until --wait; one that refuses keeps running its old binary, and the reason and the command\n" +
			"that would restart it are printed. Exit 1 if any was left on its old binary.",
		Flags: []cli.Flag{
			controlFlag,
			&cli.BoolFlag{Name: "all", Usage: "upgrade every running supervisor of this binary on the host"},
			&cli.DurationFlag{Name: "wait", Value: time.Minute, Usage: "with --all: how long to keep asking one that is busy (starting, rolling out)"},
			&cli.BoolFlag{Name: "dry-run", Usage: "with --all: list them, upgrade none"},
		},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 0); err != nil {
				return err
			}
			if c.Bool("all") {
				return upgradeAll(c)
			}
			path, err := controlPath(c)
			if err != nil {
				return err
			}
			u, err := upgradeOne(c.Context, path)
			if err != nil {
				return fmt.Errorf("upgrade: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "baton pid %d now runs %s (version %s, handoff protocol %d), %d workers adopted\n",
				u.PID, u.Exe, u.Version, u.HandoffProtocol, u.Workers)
			return nil
		},
	}
}

func upgradeOne(ctx context.Context, path string) (*control.Upgrade, error) {
	resp, err := control.Call(ctx, path, control.Request{Command: control.CmdUpgrade})
	if err != nil {
		return nil, err
	}
	if resp.Upgrade == nil {
		return nil, errors.New("no answer from the new image")
	}
	return resp.Upgrade, nil
}

// upgradeAll upgrades every supervisor running this binary's path.
func upgradeAll(c *cli.Context) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("upgrade --all: %w", err)
	}
	self, _ = filepath.EvalSymlinks(self) // as /proc/PID/exe names it; unresolved is still a fair guess
	var mine []control.Instance
	for _, inst := range control.Instances("/proc") {
		if inst.Exe == self {
			mine = append(mine, inst)
		}
	}
	w := c.App.Writer
	if len(mine) == 0 {
		fmt.Fprintf(w, "baton: no running supervisor of %s\n", self)
		return nil
	}
	left := 0
	for _, inst := range mine {
		name := inst.Unit
		if name == "" {
			name = fmt.Sprintf("baton pid %d", inst.PID)
		}
		if c.Bool("dry-run") {
			fmt.Fprintf(w, "%s: pid %d, control %s, %s\n", name, inst.PID, inst.Control, replacedText(inst.Replaced))
			continue
		}
		u, err := upgradeUntil(c.Context, inst.Control, c.Duration("wait"))
		if err != nil {
			left++
			fmt.Fprintf(w, "%s (pid %d): not upgraded, it keeps running its old binary: %v\n", name, inst.PID, err)
			restartHint(w, inst)
			continue
		}
		fmt.Fprintf(w, "%s (pid %d): upgraded in place to version %s, %d workers kept\n", name, u.PID, u.Version, u.Workers)
	}
	if left > 0 {
		return cli.Exit(fmt.Sprintf("baton: %d of %d supervisors still run their old binary", left, len(mine)), 1)
	}
	return nil
}

// upgradeAttempt bounds each attempt of upgradeUntil: the client's own
// limit, and a margin for connecting and a slow machine, so that an attempt
// ends by the client's deadline, which names what it waited for.
var upgradeAttempt = control.UpgradeLimit() + 10*time.Second

// upgradeUntil asks for the upgrade, again while the supervisor is busy
// (starting, rolling out, upgrading), until wait has passed.
func upgradeUntil(ctx context.Context, path string, wait time.Duration) (*control.Upgrade, error) {
	deadline := time.Now().Add(wait)
	for {
		callCtx, cancel := context.WithTimeout(ctx, upgradeAttempt)
		u, err := upgradeOne(callCtx, path)
		cancel()
		if err == nil || !errors.Is(err, control.ErrBusy) || time.Now().After(deadline) {
			return u, err
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func restartHint(w io.Writer, inst control.Instance) {
	if inst.Unit != "" {
		fmt.Fprintf(w, "  to run the new binary: systemctl restart %s (its sockets wait in systemd meanwhile)\n", inst.Unit)
		return
	}
	fmt.Fprintf(w, "  to run the new binary: restart it (pid %d)\n", inst.PID)
}

func replacedText(replaced bool) string {
	if replaced {
		return "its binary was replaced on disk"
	}
	return "runs the binary on disk"
}
