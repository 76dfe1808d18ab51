package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/systemd"
	"github.com/urfave/cli/v2"
)

// controlFlag is the --control flag of the client commands.
var controlFlag = &cli.StringFlag{Name: "control", Usage: "control socket `PATH` (default: $RUNTIME_DIRECTORY/control.sock, else the only one in /run/baton)"}

// controlPath resolves the control socket a client command talks to.
func controlPath(c *cli.Context) (string, error) {
	if p := c.String("control"); p != "" {
		return p, nil
	}
	return control.Find(control.OSEnv())
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show the generation, each worker, the listeners; with UNIT, systemd's view of it too",
		ArgsUsage: "[UNIT]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "check", Usage: "exit 0 only when every slot has a ready worker and every listener listens, else non-zero with the reason (for probes)"},
			controlFlag,
		},
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 1); err != nil {
				return err
			}
			unit := c.Args().First()
			path, err := controlPathFor(c, unit)
			if errors.As(err, new(notUnitsError)) {
				return err
			}
			if unit != "" && !c.Bool("json") && !c.Bool("check") {
				printUnit(c, unit) // also when baton does not run: systemd may say why
			}
			if err != nil {
				return err
			}
			resp, err := control.Call(c.Context, path, control.Request{Command: control.CmdStatus})
			if err != nil {
				return err
			}
			if c.Bool("check") {
				if err := resp.Status.Health(); err != nil {
					return fmt.Errorf("not serving at full strength: %w", err)
				}
				fmt.Fprintln(c.App.Writer, resp.Status.Healthy())
				return nil
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(resp.Status)
			}
			printStatus(c.App.Writer, resp.Status)
			return nil
		},
	}
}

func printStatus(w io.Writer, st *control.Status) {
	printBaton(w, st)
	printWorkers(w, st)
	printRollouts(w, st)
	for _, g := range st.Generations {
		printGeneration(w, g)
	}
	if line := totalsLine(st.Totals); line != "" {
		fmt.Fprintln(w, "since the start: "+line)
	}
	printListeners(w, st)
}

// printBaton: baton's own state, costs and version.
func printBaton(w io.Writer, st *control.Status) {
	fmt.Fprintf(w, "baton pid %d: %s, generation %d, %d/%d ready", st.PID, st.State, st.Generation, st.Ready, st.Slots)
	if st.Crashes > 0 {
		fmt.Fprintf(w, ", %d recent crashes", st.Crashes)
	}
	fmt.Fprintln(w)
	if st.RSSBytes > 0 {
		fmt.Fprintf(w, "baton itself: %.1f%% CPU, %s resident\n", st.CPUPercent, control.IEC(st.RSSBytes))
	}
	fmt.Fprintf(w, "version %s", control.Printable(st.Version))
	if version != st.Version {
		fmt.Fprintf(w, " (this baton command: %s)", version)
	}
	if st.ExeReplaced {
		fmt.Fprintf(w, "; %s was replaced on disk since it started: `baton upgrade` runs the new binary in place", control.Printable(st.Exe))
	}
	fmt.Fprintln(w)
	if !st.SignalRelay.Protected && st.SignalRelay.Mode != "" {
		fmt.Fprintf(w, "signal relay %s\n", control.Printable(st.SignalRelay.Mode))
	}
}

// printWorkers: the slots' workers, then those draining and incoming.
func printWorkers(w io.Writer, st *control.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tPID\tGEN\tSTATE\tUPTIME\tRESTARTS\tRECYCLES\tCPU\tMEM\tPROCS\tSTATUS")
	for _, wk := range st.Workers {
		printWorker(tw, wk)
	}
	tw.Flush()
	for _, wk := range st.Workers {
		if wk.RecycleHeld != "" && wk.RecycleHeldUntil != nil {
			what := "automatically"
			if wk.RecycleHeldMemoryOnly {
				what = "by memory"
			}
			fmt.Fprintf(w, "slot %d: %s (not recycled %s for %s)\n", wk.Slot, control.Printable(wk.RecycleHeld), what,
				max(time.Until(*wk.RecycleHeldUntil), 0).Round(time.Second))
		}
	}
	if len(st.Draining) > 0 {
		fmt.Fprintln(w, "draining:")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, wk := range st.Draining {
			fmt.Fprintf(tw, "  slot %d\tpid %d\tgen %d\tkilled in %s\n", wk.Slot, wk.PID, wk.Generation,
				time.Until(*wk.Deadline).Round(time.Second))
		}
		tw.Flush()
	}
	if len(st.Incoming) > 0 {
		fmt.Fprintln(w, "incoming:")
		for _, wk := range st.Incoming {
			fmt.Fprintf(w, "  slot %d pid %d gen %d %s\n", wk.Slot, wk.PID, wk.Generation, wk.State)
		}
	}
}

// printRollouts: the rollout running and the last one.
func printRollouts(w io.Writer, st *control.Status) {
	if r := st.Rollout; r != nil {
		switch r.Kind {
		case "scale":
			fmt.Fprintf(w, "scale: %s%s, %s so far\n", r.State, sizes(r), secs(r.DurationSeconds))
		case "recycle":
			fmt.Fprintf(w, "recycle (%s): %s, %d/%d workers replaced, %s so far\n", r.Reason, r.State, r.Moved, r.Slots, secs(r.DurationSeconds))
		default:
			fmt.Fprintf(w, "rollout: %s, generation %d to %d%s, %d/%d slots moved, %s so far\n", r.State, r.From, r.To, sizes(r), r.Moved, r.Slots, secs(r.DurationSeconds))
		}
	}
	if r := st.LastRollout; r != nil {
		switch r.Kind {
		case "scale":
			fmt.Fprintf(w, "last scale: %s%s, took %s", r.State, sizes(r), secs(r.DurationSeconds))
		case "recycle":
			fmt.Fprintf(w, "last recycle (%s): %s, %d workers replaced, took %s", r.Reason, r.State, len(r.Replaced), secs(r.DurationSeconds))
		case "rollback":
			fmt.Fprintf(w, "last rollback: %s, generation %d to %d (the settings of %d), took %s", r.State, r.From, r.To, r.RollbackOf, secs(r.DurationSeconds))
		default:
			fmt.Fprintf(w, "last rollout: %s, generation %d to %d%s, took %s", r.State, r.From, r.To, sizes(r), secs(r.DurationSeconds))
		}
		if r.Error != "" {
			fmt.Fprintf(w, ": %s", control.Printable(r.Error))
		}
		fmt.Fprintln(w)
	}
}

// printListeners: each shared socket and what baton last saw of it.
func printListeners(w io.Writer, st *control.Status) {
	fmt.Fprintln(w, "listeners:")
	for _, l := range st.Listeners {
		fmt.Fprintf(w, "  %s %s (%s)", control.Printable(l.Name), control.Printable(l.Address), l.Source)
		if l.Error != "" {
			fmt.Fprintf(w, " NOT LISTENING: %s", control.Printable(l.Error))
		}
		if l.Backlog > 0 {
			fmt.Fprintf(w, ", accept queue %d", l.Backlog)
		}
		if l.NonBlocking {
			fmt.Fprint(w, ", non-blocking")
		}
		fmt.Fprintln(w)
		if n := len(l.Changes); n > 0 {
			fmt.Fprintf(w, "    last change: %s\n", control.Printable(l.Changes[n-1]))
		}
	}
}

// printGeneration says what a generation's workers are started with: its
// directory, command and environment (keys and digest, never values).
func printGeneration(w io.Writer, g control.Generation) {
	dir := g.Directory
	if dir == "" {
		dir = "(baton's own)"
	}
	env := "none added"
	if len(g.EnvKeys) > 0 {
		env = fmt.Sprintf("%d added (digest %s): %s", len(g.EnvKeys), g.EnvDigest, strings.Join(g.EnvKeys, " "))
	}
	fmt.Fprintf(w, "generation %d (%s):\n  directory %s\n  command %s\n  environment %s\n", g.Generation, g.Role,
		control.Printable(dir), control.Printable(strings.Join(g.Command, " ")), control.Printable(env))
}

func printWorker(w io.Writer, wk control.Worker) {
	pid, gen, up, cpu, rss, procs := "-", "-", "-", "-", "-", "-"
	if wk.PID != 0 {
		pid = fmt.Sprint(wk.PID)
		gen = fmt.Sprint(wk.Generation)
		up = (time.Duration(wk.UptimeSeconds) * time.Second).String()
	}
	if wk.Processes > 0 {
		cpu, rss, procs = fmt.Sprintf("%.1f%%", wk.CPUPercent), control.IEC(wk.TreeRSSBytes), fmt.Sprint(wk.Processes)
	}
	status := wk.Status
	if wk.Error != "" {
		status = "cannot start: " + wk.Error
	}
	if wk.AboveCeiling && wk.RecycleHeld == "" {
		// A baton before recycle_held says a back-off only so.
		note := fmt.Sprintf("above --recycle-memory from its start (%s), as the worker it replaced: recycling backs off", control.IEC(wk.MemoryBytes))
		if status != "" {
			note += "; " + status
		}
		status = note
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", wk.Slot, pid, gen, wk.State, up, wk.Restarts, wk.Recycles, cpu, rss, procs, control.Printable(status))
}

func secs(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// notUnitsError: a unit and a --control that is not that unit's socket
// were both given, so one of them would go unused.
type notUnitsError struct{ msg string }

func (e notUnitsError) Error() string { return e.msg }

// controlPathFor is UNIT's control socket when a unit is named, else
// --control when given, else the default one. A unit and --control together
// must name the same socket: --control must be one of the paths where the
// unit's socket is (unitControlPaths), compared as paths, so a baton that
// has stopped and removed its socket is still the unit's.
func controlPathFor(c *cli.Context, unit string) (string, error) {
	switch {
	case unit != "" && c.String("control") != "":
		p := c.String("control")
		for _, up := range unitControlPaths(unit) {
			if samePath(up, p) {
				return p, nil
			}
		}
		return "", notUnitsError{fmt.Sprintf("%s: unit %q is not the baton at --control %s: give one of them (see baton %s --help)", c.Command.Name, unit, p, c.Command.Name)}
	case unit != "":
		return unitControlPath(unit)
	}
	return controlPath(c)
}

// unitControlPaths are where the control socket of a baton run as UNIT is:
// under RuntimeDirectory=UNIT (as `baton units` writes it), else in Dir.
func unitControlPaths(unit string) []string {
	name := strings.TrimSuffix(unit, ".service")
	return []string{filepath.Join("/run", name, "control.sock"), filepath.Join(control.Dir(control.OSEnv()), name+".sock")}
}

// unitControlPath finds the control socket of a baton run as UNIT: the
// first of unitControlPaths that exists.
func unitControlPath(unit string) (string, error) {
	name := strings.TrimSuffix(unit, ".service")
	for _, p := range unitControlPaths(unit) {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no control socket for %s in /run/%s or %s: is it running under baton?", unit, name, control.Dir(control.OSEnv()))
}

// printUnit prints systemd's view of the unit, over D-Bus.
func printUnit(c *cli.Context, unit string) {
	if !strings.Contains(unit, ".") {
		unit += ".service"
	}
	conn, err := systemd.Connect(c.Context)
	if err != nil {
		fmt.Fprintf(c.App.Writer, "systemd: %v\n", err)
		return
	}
	defer conn.Close()
	u, err := conn.Unit(c.Context, unit)
	if err != nil {
		fmt.Fprintf(c.App.Writer, "systemd: %v\n", err)
		return
	}
	fmt.Fprintf(c.App.Writer, "systemd: %s %s (%s), main pid %d, %d restarts\n  status: %s\n",
		u.Name, u.ActiveState, u.SubState, u.MainPID, u.NRestarts, control.Printable(u.StatusText))
}

// sizes is ", N to M workers" for a rollout that changes the number of
// workers, and nothing for one that does not.
func sizes(r *control.Rollout) string {
	if r.WorkersFrom == 0 || r.Workers == r.WorkersFrom {
		return ""
	}
	return fmt.Sprintf(", %d to %d workers", r.WorkersFrom, r.Workers)
}

// totalsLine says what happened since the service started, leaving out
// what did not happen; empty if nothing did.
func totalsLine(t control.Totals) string {
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(t.Rollouts)) {
		parts = append(parts, fmt.Sprintf("%ss %s", kind, byKey(t.Rollouts[kind])))
	}
	for _, c := range []struct {
		what string
		m    map[string]uint64
	}{{"crashes", t.Crashes}, {"new workers failed", t.NewWorkerFailures}} {
		if len(c.m) > 0 {
			parts = append(parts, c.what+" "+byKey(c.m))
		}
	}
	if t.Restarts > 0 {
		parts = append(parts, fmt.Sprintf("restarts %d", t.Restarts))
	}
	if len(t.Recycles) > 0 {
		parts = append(parts, "workers recycled "+byKey(t.Recycles))
	}
	if t.DrainKills > 0 {
		parts = append(parts, fmt.Sprintf("draining workers killed %d", t.DrainKills))
	}
	return strings.Join(parts, ", ")
}

// byKey writes m as "key n, key n" in key order.
func byKey(m map[string]uint64) string {
	var s []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		s = append(s, fmt.Sprintf("%s %d", k, m[k]))
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// samePath reports whether paths a and b name the same place, whether or
// not a file is there: equal once absolute and with their directories'
// symbolic links resolved (/var/run is /run).
func samePath(a, b string) bool {
	return placeOf(a) == placeOf(b)
}

// placeOf is p absolute, its directory's symbolic links resolved where the
// directory exists.
func placeOf(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	dir, base := filepath.Split(p)
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	return filepath.Join(dir, base)
}
