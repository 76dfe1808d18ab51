package main

import (
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag is what the shell completion appends to ask for candidates
// (contrib/completion/baton.bash); urfave/cli only honours it last.
const completionFlag = "--generate-bash-completion"

// reorderArgs lets a command take its flags after its positional arguments,
// as in `baton scale 3 --control PATH` or `baton status myapp --json`.
// urfave/cli v2 parses with the flag package, which stops at the first
// positional argument; so the flags given after one are moved to just after
// the command name, each with its value, before the app parses them. What is
// a flag and which flags take a value comes from the command's own flag
// definitions, so commands added later need nothing here.
//
// Left where they are:
//   - everything after "--";
//   - everything after the first positional argument of a command whose
//     positional arguments are a command line (ArgsUsage "-- CMD [ARG...]",
//     as run and units have): those are the worker's own flags;
//   - the arguments of a command that parses no flags (SkipFlagParsing);
//   - the whole command line of a shell completion request (the completion
//     flag last): urfave/cli reads the words being completed from os.Args;
//   - anything when the command is not found: urfave/cli reports it.
//
// When a command's flags ask for its help, its arguments are left out:
// urfave/cli's help would look for a subcommand named after the first
// ("No help topic for '3'") instead of showing the command's help.
//
// A flag the command does not define is moved too, alone (whether it would
// take a value is unknown), so that urfave/cli fails on it by name instead of
// taking it for a positional argument. A flag that takes a value but is the
// last argument is moved last with the positional arguments left out, so
// that the error is urfave/cli's "flag needs an argument" rather than the
// first positional argument silently becoming its value.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	if app.EnableBashCompletion && args[len(args)-1] == completionFlag {
		return args
	}
	global := flagKinds(app.Flags, !app.HideHelp, app.Version != "" && !app.HideVersion)
	out := []string{args[0]}
	rest := args[1:]
	// The app's own flags come before the command's name.
	for len(rest) > 0 && isFlag(rest[0]) {
		n := flagLen(global, rest, app.UseShortOptionHandling)
		if n <= 0 { // "--", a flag the app does not define, or no value
			return args
		}
		out = append(out, rest[:n]...)
		rest = rest[n:]
	}
	if len(rest) == 0 {
		return args
	}
	cmd := app.Command(rest[0])
	if cmd == nil {
		return args
	}
	return append(out, reorderCommand(cmd, rest, app.UseShortOptionHandling)...)
}

// reorderCommand reorders args, which start with cmd's name.
func reorderCommand(cmd *cli.Command, args []string, short bool) []string {
	if cmd.SkipFlagParsing {
		return args
	}
	short = short || cmd.UseShortOptionHandling
	kinds := flagKinds(cmd.Flags, !cmd.HideHelp, false)
	commandLine := strings.HasPrefix(strings.TrimSpace(cmd.ArgsUsage), "--")
	var flags, positional []string
	help := false // a help flag among flags
	join := func(rest []string) []string {
		if help {
			// With arguments, urfave/cli's help looks for a subcommand
			// named after the first ("No help topic for '3'").
			positional, rest = nil, nil
		}
		out := make([]string, 0, 1+len(flags)+len(positional)+len(rest))
		out = append(out, args[0])
		out = append(out, flags...)
		out = append(out, positional...)
		return append(out, rest...)
	}
	rest := args[1:]
	for len(rest) > 0 {
		a := rest[0]
		switch {
		case a == "--":
			return join(rest)
		case !isFlag(a):
			if len(positional) == 0 {
				// A subcommand's name: what follows is the subcommand's.
				if sub := cmd.Command(a); sub != nil {
					return append(join(nil), reorderCommand(sub, rest, short)...)
				}
			}
			if commandLine {
				return join(rest)
			}
			positional = append(positional, a)
			rest = rest[1:]
			continue
		}
		n := flagLen(kinds, rest, short)
		switch {
		case n == 0: // not defined: moved alone, to be reported
			n = 1
		case n < 0: // its value is missing: last, with nothing to take for it
			return append(append([]string{args[0]}, flags...), a)
		}
		help = help || !cmd.HideHelp && isHelp(a)
		flags = append(flags, rest[:n]...)
		rest = rest[n:]
	}
	return join(nil)
}

// isHelp tells whether the flag a asks for help.
func isHelp(a string) bool {
	if cli.HelpFlag == nil {
		return false
	}
	name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
	if !slices.Contains(cli.HelpFlag.Names(), name) {
		return false
	}
	on, err := strconv.ParseBool(value)
	return !hasValue || on && err == nil
}

// isFlag tells whether the flag package would take a as a flag: "-" alone
// is an argument, and "--" ends the flags (the callers check it first).
func isFlag(a string) bool {
	return len(a) > 1 && a[0] == '-'
}

// flagLen is the number of arguments the flag in args[0] spans: 1, or 2
// with its value; 0 when it is "--" or not defined, -1 when it takes a
// value and none follows.
func flagLen(kinds map[string]bool, args []string, short bool) int {
	if args[0] == "--" {
		return 0
	}
	// -name and --name are the same flag; -name=value and --name=value
	// carry their value.
	name := strings.TrimPrefix(strings.TrimPrefix(args[0], "-"), "-")
	name, _, hasValue := strings.Cut(name, "=")
	takesValue, ok := kinds[name]
	if !ok && short && !strings.HasPrefix(args[0], "--") && !hasValue {
		// -abc as -a -b -c: the last may take the next argument.
		for _, r := range name {
			tv, known := kinds[string(r)]
			if !known {
				return 0
			}
			takesValue = tv
		}
		ok = true
	}
	switch {
	case !ok:
		return 0
	case !takesValue || hasValue:
		return 1
	case len(args) < 2:
		return -1
	}
	return 2
}

// flagKinds maps each name and alias of flags to whether the flag takes a
// value: every flag but a boolean one.
func flagKinds(flags []cli.Flag, help, version bool) map[string]bool {
	if help && cli.HelpFlag != nil {
		flags = append(flags[:len(flags):len(flags)], cli.HelpFlag)
	}
	if version && cli.VersionFlag != nil {
		flags = append(flags[:len(flags):len(flags)], cli.VersionFlag)
	}
	kinds := map[string]bool{}
	for _, f := range flags {
		for _, name := range f.Names() {
			if name = strings.TrimSpace(name); name != "" {
				kinds[name] = takesValue(f)
			}
		}
	}
	return kinds
}

// takesValue tells whether the flag package would take the argument after
// f as its value: the one exception is a flag whose value is boolean.
func takesValue(f cli.Flag) bool {
	switch f := f.(type) {
	case *cli.BoolFlag:
		return false
	case *cli.GenericFlag:
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok {
			return !b.IsBoolFlag()
		}
		return true
	case interface{ TakesValue() bool }:
		return f.TakesValue()
	}
	return true
}

// completingAfterDashes reports a bash completion request (urfave/cli v2's
// --generate-bash-completion, last) for a word after "--": v2 does not see
// the request there and runs the command (urfave/cli #1993), which for
// `baton units ... --install -- CMD <Tab>` would install units. What
// follows "--" is the worker's command line, not baton's to complete.
func completingAfterDashes(args []string) bool {
	n := len(args)
	return n > 0 && args[n-1] == "--generate-bash-completion" && slices.Contains(args[:n-1], "--")
}
