package main

import (
	"errors"
	"fmt"

	"github.com/batonsd/baton/activation"
	"github.com/urfave/cli/v2"
	"os"
)

// shimCommand is the exec shim: baton starts every worker as
// `baton shim CMD [ARG...]`, which sets LISTEN_PID (and WATCHDOG_PID) to its
// own pid and execs CMD, so the worker runs with the pid those variables name.
func shimCommand() *cli.Command {
	return &cli.Command{
		Name:            "shim",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			if len(args) == 0 {
				return errors.New("shim: no command")
			}
			err := activation.Exec(args[0], args[1:], os.Environ())
			return cli.Exit(fmt.Sprintf("worker %q: %v", args[0], err), 127)
		},
	}
}
