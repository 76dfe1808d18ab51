package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/urfave/cli/v2"
)

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "a unit's journal with worker and generation columns; rollout events stand out",
		ArgsUsage: "UNIT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new entries"},
			&cli.IntFlag{Name: "worker", Value: -1, Usage: "only slot `N`'s lines and events"},
			&cli.IntFlag{Name: "generation", Usage: "only generation `G`"},
			&cli.StringFlag{Name: "since", Usage: "entries since `TIME`, as journalctl --since takes it (\"10 min ago\")"},
			&cli.IntFlag{Name: "lines", Aliases: []string{"n"}, Value: 100, Usage: "the last `N` entries first"},
		},
		Action: logsAction,
	}
}

func logsAction(c *cli.Context) error {
	if err := noMoreArgs(c, 1); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return errors.New("baton logs [-f] [--worker N] [--generation G] UNIT")
	}
	unit := c.Args().First()
	if !strings.Contains(unit, ".") {
		unit += ".service"
	}
	args := []string{"-u", unit, "-o", "json", "--no-pager", "-n", strconv.Itoa(c.Int("lines"))}
	if c.Bool("follow") {
		args = append(args, "-f")
	}
	if s := c.String("since"); s != "" {
		args = append(args, "--since", s)
	}
	if w := c.Int("worker"); w >= 0 {
		args = append(args, "BATON_WORKER="+strconv.Itoa(w))
	}
	if g := c.Int("generation"); g > 0 {
		args = append(args, "BATON_GENERATION="+strconv.Itoa(g))
	}
	cmd := exec.CommandContext(c.Context, "journalctl", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	printEntries(c.App.Writer, out, isTerminal(c.App.Writer))
	if err := cmd.Wait(); err != nil && c.Context.Err() == nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	return nil
}

// printEntries formats journalctl's JSON lines: time, worker slot,
// generation, pid, message. baton's own events are marked, in bold on a
// terminal, and rollout events stand out.
func printEntries(w io.Writer, r io.Reader, tty bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue // not an entry: journalctl prints only entries with -o json
		}
		fmt.Fprintln(w, formatEntry(e, tty))
	}
}

func formatEntry(e map[string]any, tty bool) string {
	field := func(k string) string {
		switch v := e[k].(type) {
		case string:
			return v
		case []any: // binary field: an array of bytes
			b := make([]byte, 0, len(v))
			for _, x := range v {
				if f, ok := x.(float64); ok {
					b = append(b, byte(f))
				}
			}
			return string(b)
		}
		return ""
	}
	ts := "-"
	if us, err := strconv.ParseInt(field("__REALTIME_TIMESTAMP"), 10, 64); err == nil {
		ts = time.UnixMicro(us).Format("2006-01-02 15:04:05.000")
	}
	slot, gen, pid := field("BATON_WORKER"), field("BATON_GENERATION"), field("BATON_WORKER_PID")
	if slot == "" {
		slot = "-"
	}
	if gen == "" {
		gen = "-"
	}
	if pid == "" {
		pid = field("_PID")
	}
	// Each line escaped on its own: a worker's bytes must not drive the
	// terminal; the lines of a multi-line message keep their columns below.
	lines := strings.Split(field("MESSAGE"), "\n")
	for i, l := range lines {
		lines[i] = control.Printable(l)
	}
	msg := strings.Join(lines, "\n")
	slot, gen, pid = control.Printable(slot), control.Printable(gen), control.Printable(pid)
	source := "w" + slot
	if field("SYSLOG_IDENTIFIER") == "baton" || field("BATON_EVENT") != "" {
		source = "baton"
		if strings.Contains(msg, "rollout") || strings.Contains(msg, "upgrade") || strings.Contains(msg, "re-exec") {
			msg = ">> " + msg
		}
		if tty {
			msg = "\x1b[1m" + msg + "\x1b[0m"
		}
	}
	head := fmt.Sprintf("%s  %-5s %-4s %-7s ", ts, source, "g"+gen, pid)
	// A message of several lines keeps its columns.
	return head + strings.ReplaceAll(msg, "\n", "\n"+strings.Repeat(" ", len(head)))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
