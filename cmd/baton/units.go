package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/systemd"
	"github.com/batonsd/baton/units"
	"github.com/urfave/cli/v2"
)

// unitDir is where --install writes.
const unitDir = "/etc/systemd/system"

func unitsCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "name", Required: true, Usage: "the service's `NAME`: NAME.service and NAME.socket"},
		&cli.StringSliceFlag{Name: "listen", Usage: "`[NAME=]ADDR` a socket unit listens on: 127.0.0.1:8080, [::]:443, unix:/run/app.sock"},
		&cli.StringFlag{Name: "user", Usage: "run the service as `USER` (and its group); default: a dynamic user (DynamicUser=)"},
		&cli.BoolFlag{Name: "no-sandbox", Usage: "leave out the sandbox (DynamicUser=, ProtectSystem=strict, SystemCallFilter=, ...): the service runs as root or --user"},
		&cli.StringSliceFlag{Name: "writable", Usage: "`PATH` the sandboxed service may write (ReadWritePaths=; its own state directory is $STATE_DIRECTORY)"},
		&cli.StringSliceFlag{Name: "address-family", Usage: "`AF_NAME` the sandboxed service may use besides AF_UNIX, AF_INET, AF_INET6 (RestrictAddressFamilies=)"},
		&cli.StringFlag{Name: "description", Usage: "the units' Description="},
		&cli.IntFlag{Name: "systemd-version", Usage: "render for systemd `N` (default: the running systemd's, asked over D-Bus)"},
		&cli.StringFlag{Name: "output", Usage: "write the units into `DIR` instead of printing them"},
		&cli.BoolFlag{Name: "install", Usage: "write the units to " + unitDir + ", enable them, then daemon-reload"},
		&cli.StringFlag{Name: "baton", Value: "/usr/bin/baton", Usage: "the baton binary `PATH` in ExecStart="},
		&cli.DurationFlag{Name: "watchdog-sec", Value: 30 * time.Second, Usage: "WatchdogSec= for baton itself (0: off)"},
	}
	for _, f := range runFlags() {
		if f.Names()[0] != "listen" { // here --listen makes socket units
			flags = append(flags, f)
		}
	}
	return &cli.Command{
		Name:      "units",
		Usage:     "write NAME.socket and NAME.service for the running systemd; run flags given here go into ExecStart=",
		ArgsUsage: "-- CMD [ARG...]",
		Flags:     flags,
		Action:    unitsAction,
	}
}

func unitsAction(c *cli.Context) error {
	o, err := unitOptions(c)
	if err != nil {
		return err
	}
	files, err := units.Render(o)
	if err != nil {
		return err
	}
	switch {
	case c.Bool("install"):
		return installUnits(c, files, o.SystemdVersion)
	case c.String("output") != "":
		paths, err := units.Write(c.String("output"), files)
		if err != nil {
			return err
		}
		for _, p := range paths {
			fmt.Fprintln(c.App.Writer, p)
		}
	default:
		for i, f := range files {
			if i > 0 {
				fmt.Fprintln(c.App.Writer)
			}
			fmt.Fprintf(c.App.Writer, "# %s\n%s", f.Name, f.Content)
		}
	}
	return nil
}

// unitOptions reads the units' options from the command line: the units'
// own flags, and every `baton run` flag given, passed on to ExecStart=.
func unitOptions(c *cli.Context) (units.Options, error) {
	o := units.Options{
		Name:            c.String("name"),
		Description:     c.String("description"),
		Baton:           c.String("baton"),
		Command:         c.Args().Slice(),
		User:            c.String("user"),
		NoSandbox:       c.Bool("no-sandbox"),
		Writable:        c.StringSlice("writable"),
		AddressFamilies: c.StringSlice("address-family"),
		Control:         c.String("control"),
		DrainTimeout:    c.Duration("drain-timeout"),
		LameDuck:        c.Duration("lame-duck"),
		Watchdog:        c.Duration("watchdog-sec"),
		SystemdVersion:  c.Int("systemd-version"),
	}
	for _, l := range c.StringSlice("listen") {
		spec, err := activation.ParseSpec(l)
		if err != nil {
			return o, fmt.Errorf("--%w", err)
		}
		o.Listeners = append(o.Listeners, units.Listener{Name: spec.Name, Address: spec.Address})
	}
	o.RunArgs = runArgs(c)
	if o.SystemdVersion == 0 {
		v, err := runningSystemdVersion(c)
		if err != nil {
			return o, fmt.Errorf("%w; render for another host with --systemd-version N", err)
		}
		o.SystemdVersion = v
	}
	return o, nil
}

// runArgs are the `baton run` flags given on the command line (but
// --listen, which becomes the socket unit), as ExecStart= passes them on.
func runArgs(c *cli.Context) []string {
	var args []string
	for _, f := range runFlags() {
		name := f.Names()[0]
		if name == "listen" || !c.IsSet(name) {
			continue
		}
		if _, ok := f.(*cli.StringSliceFlag); ok {
			for _, v := range c.StringSlice(name) {
				args = append(args, "--"+name, v)
			}
			continue
		}
		if l, ok := listValues(c, name); ok {
			for _, v := range l {
				args = append(args, "--"+name, v)
			}
			continue
		}
		args = append(args, "--"+name, fmt.Sprint(c.Value(name)))
	}
	return args
}

// installUnits writes the units into systemd's unit directory, reloads
// systemd and enables them.
func installUnits(c *cli.Context, files []units.File, version int) error {
	paths, err := units.Write(unitDir, files)
	if err != nil {
		return err
	}
	conn, err := systemd.Connect(c.Context)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Install(c.Context, paths); err != nil {
		return err
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	fmt.Fprintf(c.App.Writer, "installed and enabled %v (systemd %d)\nstart: systemctl start %s\n", paths, version, strings.Join(names, " "))
	return nil
}

func runningSystemdVersion(c *cli.Context) (int, error) {
	conn, err := systemd.Connect(c.Context)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return conn.Version(c.Context)
}
