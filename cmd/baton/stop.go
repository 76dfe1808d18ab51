package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:      "stop",
		Usage:     "stop baton as SIGTERM does, and wait until it has exited (fit for ExecStop=)",
		ArgsUsage: "[UNIT]",
		Description: "baton reports the stop (STOPPING=1), spends its --lame-duck with every worker serving,\n" +
			"then sends each worker its stop signal and waits up to --drain-timeout; this command returns\n" +
			"once baton's process has exited. A stop already under way is joined, not hurried (a second\n" +
			"SIGTERM hurries it). Under systemd it is the unit's ExecStop= (baton units writes it): systemd\n" +
			"signals everything left in the unit's cgroup as soon as ExecStop= returns, so without it\n" +
			"`systemctl stop` sends SIGTERM to the workers together with baton, lame duck or not. To stop\n" +
			"a service, use systemctl stop: baton stopped by hand exits 0, and Restart=always restarts it.\n" +
			"Exits 0 also when nothing serves the control socket any more (stopped already: no file there,\n" +
			"or a socket nobody listens on); exits 1 when no control socket is found for UNIT, when the path\n" +
			"is not a socket, or when what serves it does not answer as baton (it is never waited for).\n" +
			"With UNIT, the baton that systemd runs as UNIT.",
		Flags: []cli.Flag{controlFlag},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 1); err != nil {
				return err
			}
			path, err := controlPathFor(c, c.Args().First())
			if err != nil {
				return err
			}
			start := time.Now()
			var pid int
			err = control.Stop(c.Context, path, func(st control.Stopping) {
				pid = st.PID
				fmt.Fprintf(c.App.Writer, "baton pid %d stops: %s\n", st.PID, st.Doing)
			})
			switch {
			case errors.Is(err, control.ErrNotRunning):
				fmt.Fprintf(c.App.ErrWriter, "baton stop: %v: stopped already\n", err)
				return nil
			case err != nil:
				return fmt.Errorf("stop: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "baton pid %d has exited (after %s)\n", pid, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
}
