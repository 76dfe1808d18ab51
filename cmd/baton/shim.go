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

// shimCommand is an exec shim in Go: `baton shim CMD [ARG...]` sets
// LISTEN_PID (and WATCHDOG_PID) to its own pid and execs CMD, so CMD runs
// with the pid those variables name. Workers start through the cheaper
// worker.ShellShim; this one starts baton itself under the tests' stand-in
// systemd, and serves anyone without a /bin/sh.
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
