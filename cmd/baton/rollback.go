package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func rollbackCommand() *cli.Command {
	return &cli.Command{
		Name:      "rollback",
		Usage:     "roll out the previous generation's settings again, and wait for the result",
		ArgsUsage: "[UNIT]",
		Description: "A rollout, new workers ready before old ones drain, of what the previous generation was\n" +
			"started with (its directory, command, environment, readiness and stop settings), whatever\n" +
			"the `current` symlink, the environment files or the config say now. It makes a new\n" +
			"generation, so a second rollback returns to where the first began (like `cd -`).\n" +
			"Exits 0 when it serves in every slot; non-zero with the reason when there is no previous\n" +
			"generation (since the service started) or the rollback failed and the serving one stayed.\n" +
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
			resp, err := control.Call(c.Context, path, control.Request{Command: control.CmdRollback})
			r := resp.Rollout
			switch {
			case err != nil && errors.Is(err, control.ErrRefused) && cutShort(r):
				return stoppedError(r, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused) && r != nil && r.To != 0:
				return fmt.Errorf("rollback to generation %d's settings failed, generation %d still serves: %s", r.RollbackOf, r.From, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused):
				return fmt.Errorf("rollback refused: %s", resp.Error)
			case err != nil:
				return err
			}
			fmt.Fprintf(c.App.Writer, "generation %d serves in all %d slots with the settings of generation %d (rollback took %s)\n",
				r.To, r.Slots, r.RollbackOf, secs(r.DurationSeconds))
			printChanges(c.App.Writer, r)
			return nil
		},
	}
}

// printChanges lists what a rollout changed in the pinned settings.
func printChanges(w io.Writer, r *control.Rollout) {
	for _, ch := range r.Changes {
		fmt.Fprintf(w, "  %s\n", control.Printable(ch))
	}
}
