package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "roll out a new generation and wait for the result (fit for ExecReload=)",
		Description: "Exits 0 when the new generation serves in every slot; non-zero, with the reason on stderr,\n" +
			"when the rollout was aborted and the previous generation kept serving.",
		Flags: []cli.Flag{
			controlFlag,
			&cli.BoolFlag{Name: "wait-signal", Usage: "wait for the rollout systemd's reload signal started instead of asking for one (ExecReload= of a Type=notify-reload unit)"},
		},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 0); err != nil {
				return err
			}
			path, err := controlPath(c)
			if err != nil {
				return err
			}
			cmd := control.CmdReload
			if c.Bool("wait-signal") {
				cmd = control.CmdAwaitReload
			}
			resp, err := control.Call(c.Context, path, control.Request{Command: cmd})
			r := resp.Rollout
			switch {
			case err != nil && errors.Is(err, control.ErrRefused) && cutShort(r):
				return stoppedError(r, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused) && r != nil && r.To != 0:
				return fmt.Errorf("rollout to generation %d failed, generation %d still serves: %s", r.To, r.From, resp.Error)
			case err != nil && errors.Is(err, control.ErrRefused):
				return fmt.Errorf("reload failed: %s", resp.Error)
			case err != nil:
				return err
			}
			took := time.Duration(r.DurationSeconds * float64(time.Second)).Round(time.Millisecond)
			fmt.Fprintf(c.App.Writer, "generation %d serves in all %d slots (rollout took %s)\n", r.To, r.Slots, took)
			printChanges(c.App.Writer, r)
			return nil
		},
	}
}

// cutShort reports whether r was ended by baton's stop part-way: no single
// generation "still serves" then.
func cutShort(r *control.Rollout) bool { return r != nil && r.State == control.RolloutStopped }

// stoppedError says what a rollout that baton's stop ended part-way left.
// One ended before it made a generation (during --check) started no
// worker and moved nothing.
func stoppedError(r *control.Rollout, reason string) error {
	what := fmt.Sprintf("rollout to generation %d", r.To)
	switch {
	case r.Kind == "scale":
		what = fmt.Sprintf("scale to %d workers", r.Workers)
	case r.Kind == "recycle":
		what = "recycle"
	case r.Kind == "rollback":
		what = fmt.Sprintf("rollback to generation %d's settings", r.RollbackOf)
	case r.To == 0:
		what = "reload"
	}
	if r.To == 0 {
		return fmt.Errorf("%s cut short before any worker started: %s", what, reason)
	}
	return fmt.Errorf("%s cut short, %d of %d slots moved, every worker drains: %s", what, r.Moved, r.Slots, reason)
}
