package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func recycleCommand() *cli.Command {
	return &cli.Command{
		Name:      "recycle",
		Usage:     "replace one worker, or every worker one at a time, gracefully and without a deploy",
		ArgsUsage: "SLOT|all [UNIT]",
		Description: "The successor starts first in the serving generation and must be ready before the old\n" +
			"worker drains (its stop signal, its drain timeout), so no capacity is lost: for a stuck or\n" +
			"suspicious worker, what `kubectl rollout restart` is for a pod. Waits while a rollout or a\n" +
			"scale runs. Exits 0 when done; non-zero with the reason when a successor failed, the old\n" +
			"worker still serving. With UNIT, the baton that systemd runs as UNIT.",
		Flags: []cli.Flag{controlFlag},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 2); err != nil {
				return err
			}
			if c.NArg() < 1 {
				return fmt.Errorf("recycle: want a slot or all, and perhaps a unit, as in `baton recycle 2 myapp`; got %d arguments", c.NArg())
			}
			req := control.Request{Command: control.CmdRecycle}
			if arg := c.Args().First(); arg == "all" {
				req.All = true
			} else if n, err := strconv.Atoi(arg); err != nil || n < 0 {
				return fmt.Errorf("recycle: %q is neither a slot (0 or more) nor all", arg)
			} else {
				req.Slot = n
			}
			path, err := controlPathFor(c, c.Args().Get(1))
			if err != nil {
				return err
			}
			resp, err := control.Call(c.Context, path, req)
			r := resp.Rollout
			switch {
			case err != nil && errors.Is(err, control.ErrRefused) && cutShort(r):
				return stoppedError(r, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused) && r != nil && r.Kind == "recycle":
				printReplaced(c, r)
				return fmt.Errorf("recycle failed, the old worker serves on: %s", resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused):
				return fmt.Errorf("recycle refused: %s", resp.Error)
			case err != nil:
				return err
			}
			printReplaced(c, r)
			fmt.Fprintf(c.App.Writer, "%d workers recycled in generation %d (took %s)\n", len(r.Replaced), r.To, secs(r.DurationSeconds))
			return nil
		},
	}
}

func printReplaced(c *cli.Context, r *control.Rollout) {
	for _, rp := range r.Replaced {
		fmt.Fprintf(c.App.Writer, "slot %d: pid %d replaced by pid %d\n", rp.Slot, rp.PID, rp.Successor)
	}
}
