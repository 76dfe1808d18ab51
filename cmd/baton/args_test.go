package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"
)

func TestReorderArgs(t *testing.T) {
	for _, tc := range []struct {
		args string
		want string // "" when args stay as they are
	}{
		// Value flags after the arguments move, with their values.
		{"scale 3 --control P", "scale --control P 3"},
		{"scale 3 myapp --control=P", "scale --control=P 3 myapp"},
		{"scale 3 -control P", "scale -control P 3"},
		{"scale --control P 3", ""},
		{"scale 3 --control P myapp", "scale --control P 3 myapp"},
		// Boolean flags move alone: the next argument stays an argument.
		{"status myapp --json", "status --json myapp"},
		{"status myapp --json other", "status --json myapp other"},
		{"status myapp --json=false", "status --json=false myapp"},
		{"status --control P myapp --json", "status --control P --json myapp"},
		{"status myapp --check --control P", "status --check --control P myapp"},
		{"logs myapp -f", "logs -f myapp"},
		{"logs myapp --follow --worker 1", "logs --follow --worker 1 myapp"},
		{"logs myapp -n 5 --generation 2 --since 10_min_ago", "logs -n 5 --generation 2 --since 10_min_ago myapp"},
		{"logs myapp --since -1h", "logs --since -1h myapp"}, // a value may start with "-"
		{"reload myapp --control P --wait-signal", "reload --control P --wait-signal myapp"},
		{"upgrade x --all --dry-run --wait 1s", "upgrade --all --dry-run --wait 1s x"},
		// Help is a flag of every command; asked for, the arguments go
		// (urfave/cli would take the first for a help topic).
		{"scale 3 --help", "scale --help"},
		{"scale --help 3", "scale --help"},
		{"scale 3 -h --control P", "scale -h --control P"},
		{"scale 3 --help=false --control P", "scale --help=false --control P 3"},
		{"version x --help", "version --help"},
		{"run --help -- sleep 60", "run --help"},
		{"run --help sleep 60", "run --help"},
		{"run sleep --help", ""},
		{"run -- sleep --help", ""},
		{"scale 3 -- --help", ""},
		{"-h scale 3 --control P", "-h scale --control P 3"},
		// "--" ends the flags: nothing after it moves.
		{"scale -- 3 --control P", ""},
		{"scale 3 -- --control P", ""},
		{"scale 3 --control P -- x --json", "scale --control P 3 -- x --json"},
		// run and units: after the worker's command, its own arguments.
		{"run --workers 2 sleep 60 --workers 3", ""},
		{"run --workers 2 -- sh -c x --workers 3", ""},
		{"run sleep --control P", ""},
		{"units --name x --listen 127.0.0.1:1 -- /bin/true --workers 3", ""},
		{"units --name x /bin/true --workers 3", ""},
		{"units /bin/true --name x", ""},
		// shim parses no flags.
		{"shim sleep --control P", ""},
		// An undefined flag moves alone, to be reported by name.
		{"status myapp --jsn", "status --jsn myapp"},
		{"status myapp --jsn value", "status --jsn myapp value"},
		{"status myapp ---json", "status ---json myapp"},
		{"scale 3 -1", "scale -1 3"},
		// A value flag last, without its value: urfave says so.
		{"scale 3 --control", "scale --control"},
		{"scale 3 myapp --json --control", "scale --json --control"},
		// "-" and "" are arguments.
		{"status - --json", "status --json -"},
		{"status  --json", "status --json "},
		// A completion request is left to urfave/cli, which reads os.Args.
		{"scale 3 --control P --generate-bash-completion", ""},
		{"scale 3 --con --generate-bash-completion", ""},
		{"status myapp --generate-bash-completion", ""},
		{"run -- sleep --generate-bash-completion", ""},
		// Nothing to do, or nothing known.
		{"", ""},
		{"scale", ""},
		{"nosuch 3 --control P", ""},
		{"--bogus scale 3 --control P", ""},
		{"--help", ""},
		{"-- scale 3 --control P", ""},
	} {
		args := append([]string{"baton"}, strings.Split(tc.args, " ")...)
		if tc.args == "" {
			args = args[:1]
		}
		want := args
		if tc.want != "" {
			want = append([]string{"baton"}, strings.Split(tc.want, " ")...)
		}
		in := slices.Clone(args)
		got := reorderArgs(newApp(), args)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("reorderArgs(%q) (-want +got):\n%s", tc.args, diff)
		}
		if !slices.Equal(in, args) {
			t.Errorf("reorderArgs(%q) changed its argument to %q", tc.args, args)
		}
	}
}

// TestReorderArgsEveryFlag moves each flag of each command from after an
// argument to before it; run and units (a command line as arguments) and
// shim keep the order. A command added later is covered as it is.
func TestReorderArgsEveryFlag(t *testing.T) {
	app := newApp()
	for _, c := range app.Commands {
		kept := c.SkipFlagParsing || strings.HasPrefix(c.ArgsUsage, "--")
		for _, f := range append(slices.Clone(c.Flags), cli.HelpFlag) {
			for _, name := range f.Names() {
				dash := "--"
				if len(name) == 1 {
					dash = "-"
				}
				fl := []string{dash + name}
				if takesValue(f) {
					fl = append(fl, "V")
				}
				args := append([]string{"baton", c.Name, "ARG"}, fl...)
				want := append(append([]string{"baton", c.Name}, fl...), "ARG")
				if isHelp(fl[0]) {
					want = want[:len(want)-1]
				}
				if kept {
					want = args
				}
				if got := reorderArgs(app, args); !slices.Equal(got, want) {
					t.Errorf("reorderArgs(%q) = %q, want %q", args, got, want)
				}
			}
		}
	}
}

func TestTakesValue(t *testing.T) {
	for _, tc := range []struct {
		f    cli.Flag
		want bool
	}{
		{&cli.BoolFlag{Name: "b"}, false},
		{&cli.StringFlag{Name: "s"}, true},
		{&cli.StringSliceFlag{Name: "ss"}, true},
		{&cli.IntFlag{Name: "i"}, true},
		{&cli.DurationFlag{Name: "d"}, true},
		{&cli.GenericFlag{Name: "g", Value: &boolValue{}}, false},
		{&cli.GenericFlag{Name: "g", Value: &stringValue{}}, true},
	} {
		if got := takesValue(tc.f); got != tc.want {
			t.Errorf("takesValue(%T %s) = %v, want %v", tc.f, tc.f.Names()[0], got, tc.want)
		}
	}
}

type stringValue struct{ s string }

func (v *stringValue) Set(s string) error { v.s = s; return nil }
func (v *stringValue) String() string     { return v.s }

type boolValue struct{ stringValue }

func (*boolValue) IsBoolFlag() bool { return true }

var _ flag.Value = (*boolValue)(nil)

// testApp has what baton's app has not (yet): global flags, subcommands,
// short option handling, a boolean generic flag. Its actions record what
// urfave/cli parsed.
func testApp(got *[]string) *cli.App {
	record := func(c *cli.Context) error {
		for _, f := range c.Command.Flags {
			if name := f.Names()[0]; c.IsSet(name) {
				*got = append(*got, name+"="+c.Generic(name).(flag.Value).String())
			}
		}
		*got = append(*got, c.Args().Slice()...)
		return nil
	}
	return &cli.App{
		Name:            "t",
		Version:         "1",
		Writer:          io.Discard,
		ErrWriter:       io.Discard,
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "global"},
			&cli.BoolFlag{Name: "verbose"},
		},
		Commands: []*cli.Command{
			{
				Name:      "get",
				ArgsUsage: "NAME...",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "all", Aliases: []string{"a"}},
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}},
					&cli.IntFlag{Name: "count", Aliases: []string{"c"}},
					&cli.GenericFlag{Name: "toggle", Value: &boolValue{}},
				},
				UseShortOptionHandling: true,
				Action:                 record,
			},
			{
				Name:  "remote",
				Flags: []cli.Flag{&cli.StringFlag{Name: "host"}},
				Subcommands: []*cli.Command{{
					Name:   "add",
					Flags:  []cli.Flag{&cli.StringFlag{Name: "url"}},
					Action: record,
				}},
			},
			{
				Name:      "exec",
				ArgsUsage: "-- CMD [ARG...]",
				Flags:     []cli.Flag{&cli.IntFlag{Name: "count"}},
				Action:    record,
			},
		},
	}
}

// TestReorderArgsParsed runs what reorderArgs makes through urfave/cli.
func TestReorderArgsParsed(t *testing.T) {
	for _, tc := range []struct {
		args string
		want string // the flags set, then the arguments
	}{
		{"get x --all y --count 3", "all=true count=3 x y"},
		{"get x -aq", "all=true quiet=true x"},
		{"get x -ac 4 y", "all=true count=4 x y"},
		{"get x --toggle y", "toggle=true x y"},
		{"get x --count=-2", "count=-2 x"},
		{"get x -- --all", "x -- --all"},
		{"--global G --verbose get x --all", "all=true x"},
		{"remote --host h add origin --url U", "url=U origin"},
		{"remote add origin --url U", "url=U origin"},
		{"exec ls --count 3", "ls --count 3"},
		{"exec --count 1 ls --count 3", "count=1 ls --count 3"},
	} {
		var got []string
		args := append([]string{"t"}, strings.Split(tc.args, " ")...)
		app := testApp(&got)
		if err := app.Run(reorderArgs(app, args)); err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if diff := cmp.Diff(strings.Split(tc.want, " "), got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.args, diff)
		}
	}
}

// TestReorderArgsGlobal: the app's own flags before the command's name.
func TestReorderArgsGlobal(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"--global G get x --all", "--global G get --all x"},
		{"--global=G --verbose get x -c 3", "--global=G --verbose get -c 3 x"},
		{"-v get x --all", "-v get --all x"}, // --version: a version is set
		{"--global", ""},
		{"--verbose", ""},
		{"--global G", ""},
		{"--nosuch get x --all", ""},
		{"-- get x --all", ""},
	} {
		args := append([]string{"t"}, strings.Split(tc.args, " ")...)
		want := args
		if tc.want != "" {
			want = append([]string{"t"}, strings.Split(tc.want, " ")...)
		}
		if got := reorderArgs(testApp(nil), args); !slices.Equal(got, want) {
			t.Errorf("reorderArgs(%q) = %q, want %q", args, got, want)
		}
	}
}

// TestReorderArgsErrors: a flag that is not defined, or lacks its value,
// is reported by name, not taken for an argument.
func TestReorderArgsErrors(t *testing.T) {
	for _, tc := range []struct{ args, want string }{
		{"get x --bogus", "flag provided but not defined: -bogus"},
		{"get x --bogus 3 --all", "flag provided but not defined: -bogus"},
		{"get x y --count", "flag needs an argument: -count"},
		{"get x -az", "flag provided but not defined: -az"},
	} {
		var got []string
		args := append([]string{"t"}, strings.Split(tc.args, " ")...)
		app := testApp(&got)
		app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return err }
		for _, c := range app.Commands {
			c.OnUsageError = app.OnUsageError
		}
		err := app.Run(reorderArgs(app, args))
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %q (parsed %q)", tc.args, err, tc.want, got)
		}
	}
}

// TestReorderArgsHelp: help asked for after an argument shows the
// command's help, not "No help topic for 'x'".
func TestReorderArgsHelp(t *testing.T) {
	for _, args := range []string{"get x --help", "get x y -h --count 3", "get --help x"} {
		var got []string
		var out strings.Builder
		app := testApp(&got)
		app.Writer = &out
		if err := app.Run(reorderArgs(app, append([]string{"t"}, strings.Split(args, " ")...))); err != nil {
			t.Errorf("%q: %v", args, err)
		}
		if !strings.Contains(out.String(), "t get - ") && !strings.Contains(out.String(), "t get [command options] NAME...") {
			t.Errorf("%q: no help for get:\n%s", args, out.String())
		}
		if got != nil {
			t.Errorf("%q: the action ran with %q", args, got)
		}
	}
}

func TestCompletingAfterDashes(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{[]string{"baton", "units", "--install", "--", "/bin/true", "--generate-bash-completion"}, true},
		{[]string{"baton", "units", "--generate-bash-completion"}, false},
		{[]string{"baton", "run", "--", "sh"}, false},
		{[]string{"baton"}, false},
	} {
		if got := completingAfterDashes(tt.args); got != tt.want {
			t.Errorf("completingAfterDashes(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}
