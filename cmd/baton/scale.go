package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name:      "scale",
		Usage:     "change the number of workers by a rollout, and wait for the result",
		ArgsUsage: "N [UNIT]",
		Description: "New slots start workers of the serving generation and count once ready; removed slots\n" +
			"(the highest) drain like old workers in a rollout. Exits 0 when N workers serve; non-zero,\n" +
			"with the reason on stderr, when the scale failed and the old number kept serving.\n" +
			"It lasts until baton restarts; a reload keeps it unless it changes `workers` itself.\n" +
			"With UNIT, the baton that systemd runs as UNIT.",
		Flags: []cli.Flag{controlFlag},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 2); err != nil {
				return err
			}
			if c.NArg() < 1 {
				return fmt.Errorf("scale: want the number of workers and perhaps a unit, as in `baton scale 4 myapp`; got %d arguments", c.NArg())
			}
			n, err := strconv.Atoi(c.Args().First())
			if err != nil || n < 1 {
				return fmt.Errorf("scale: %q is not a number of workers (1 or more)", c.Args().First())
			}
			path, err := controlPathFor(c, c.Args().Get(1))
			if err != nil {
				return err
			}
			resp, err := control.Call(c.Context, path, control.Request{Command: control.CmdScale, Workers: n})
			r := resp.Rollout
			switch {
			case err != nil && errors.Is(err, control.ErrRefused) && cutShort(r):
				return stoppedError(r, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused) && r != nil && r.WorkersFrom != 0:
				return fmt.Errorf("scale to %d workers failed, %d workers of generation %d still serve: %s", n, r.WorkersFrom, r.From, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused):
				return fmt.Errorf("scale failed: %s", resp.Error)
			case err != nil:
				return err
			}
			took := time.Duration(r.DurationSeconds * float64(time.Second)).Round(time.Millisecond)
			fmt.Fprintf(c.App.Writer, "%d workers serve generation %d, were %d (took %s)\n", r.Workers, r.To, r.WorkersFrom, took)
			return nil
		},
	}
}
