package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/worker"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
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
			env := os.Environ()
			// The exec pipe from baton: close-on-exec, so that baton sees
			// EOF exactly when the command runs (worker.Start).
			if v := os.Getenv(worker.ExecFDEnv); v != "" {
				if fd, err := strconv.Atoi(v); err == nil {
					unix.CloseOnExec(fd)
				}
				env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, worker.ExecFDEnv+"=") })
			}
			err := activation.Exec(args[0], args[1:], env)
			return cli.Exit(fmt.Sprintf("worker %q: %v", args[0], err), 127)
		},
	}
}
