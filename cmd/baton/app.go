package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/batonsd/baton/internal/supervisor"
	"github.com/urfave/cli/v2"
)

// Exit codes of `baton run`, from the contract.
const (
	exitUsage      = 1
	exitCrashLimit = 2
	exitNoListener = 3
)

func newApp() *cli.App {
	app := &cli.App{
		Name:  "baton",
		Usage: "a systemd-native supervisor for zero-downtime services",
		Commands: []*cli.Command{
			runCommand(),
			reloadCommand(),
			scaleCommand(),
			rollbackCommand(),
			recycleCommand(),
			statusCommand(),
			upgradeCommand(),
			stopCommand(),
			unitsCommand(),
			logsCommand(),
			versionCommand(),
			shimCommand(),
			manCommand(),
		},
		// Errors are printed once, by main, as one line.
		ExitErrHandler:  func(*cli.Context, error) {},
		OnUsageError:    usageError,
		HideHelpCommand: true,
		// contrib/completion/baton.bash asks with --generate-bash-completion.
		EnableBashCompletion: true,
		Description: "baton runs as the main process of a systemd service, takes the listening sockets systemd\n" +
			"hands it, starts worker processes of any language that share them, and turns\n" +
			"`systemctl reload` into a rolling replacement that loses no request.",
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageError
		c.HideHelpCommand = true
	}
	return app
}

// usageError turns urfave/cli's usage errors into one line naming the flag.
func usageError(c *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%w (see baton %s --help)", err, c.Command.Name)
}

func exitCode(err error) int {
	switch {
	case errors.Is(err, supervisor.ErrCrashLimit):
		return exitCrashLimit
	case errors.Is(err, supervisor.ErrNoListener):
		return exitNoListener
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitUsage
}

// noMoreArgs refuses more than most positional arguments, naming the ones
// too many: an argument a command would not use is a mistake to report,
// not to ignore.
func noMoreArgs(c *cli.Context, most int) error {
	args := c.Args().Slice()
	if len(args) <= most {
		return nil
	}
	extra := make([]string, 0, len(args)-most)
	for _, a := range args[most:] {
		extra = append(extra, strconv.Quote(a))
	}
	want := "none"
	if c.Command.ArgsUsage != "" {
		want = c.Command.ArgsUsage
	}
	word := "argument"
	if len(extra) > 1 {
		word += "s"
	}
	return fmt.Errorf("%s: unexpected %s %s: it takes %s (see baton %s --help)", c.Command.Name, word, strings.Join(extra, " "), want, c.Command.Name)
}
