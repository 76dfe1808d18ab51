package main

import (
	"fmt"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func upgradeCommand() *cli.Command {
	return &cli.Command{
		Name:  "upgrade",
		Usage: "re-execute the baton binary now on disk in place, workers and sockets kept (as SIGUSR2)",
		Description: "The binary on disk is first asked for its state-handoff protocol version; a different one\n" +
			"is refused (use systemctl restart: the FD store keeps the sockets). The main pid stays the same.",
		Flags: []cli.Flag{controlFlag},
		Action: func(c *cli.Context) error {
			path, err := controlPath(c)
			if err != nil {
				return err
			}
			resp, err := control.Call(c.Context, path, control.Request{Command: control.CmdUpgrade})
			if err != nil {
				return fmt.Errorf("upgrade: %w", err)
			}
			u := resp.Upgrade
			if u == nil {
				return fmt.Errorf("upgrade: no answer from the new image")
			}
			fmt.Fprintf(c.App.Writer, "baton pid %d now runs %s (version %s, handoff protocol %d), %d workers adopted\n",
				u.PID, u.Exe, u.Version, u.HandoffProtocol, u.Workers)
			return nil
		},
	}
}
