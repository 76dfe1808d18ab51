package control

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Instance is a running `baton run` found on this host.
type Instance struct {
	PID int
	// Exe is the binary it runs, as /proc/PID/exe names it; Replaced is set
	// when that file was replaced or removed since ("(deleted)").
	Exe      string
	Replaced bool
	// Unit is the systemd service it runs in, "" outside one.
	Unit string
	// Control is its control socket.
	Control string
}

// Instances finds every `baton run` on the host by reading proc (normally
// "/proc"): a process whose argv[0] is named baton and whose argv[1] is
// run, its control socket as it would have chosen it: --control, else
// $RUNTIME_DIRECTORY/control.sock from its environment, else NAME.sock in
// the directory for its uid, NAME its service or its command's base name.
// Processes that vanish or cannot be read meanwhile are left out.
func Instances(proc string) []Instance {
	ents, _ := os.ReadDir(proc) // no /proc: no instances to find
	var found []Instance
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(proc, e.Name())
		argv := nulSplit(dir, "cmdline")
		if len(argv) < 2 || filepath.Base(argv[0]) != "baton" || argv[1] != "run" {
			continue
		}
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil {
			continue
		}
		env := map[string]string{}
		for _, kv := range nulSplit(dir, "environ") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		cgroup, _ := os.ReadFile(filepath.Join(dir, "cgroup")) // unreadable: named after the command
		uid := uidOf(dir)
		inst := Instance{PID: pid, Exe: strings.TrimSuffix(exe, " (deleted)"), Replaced: strings.HasSuffix(exe, " (deleted)")}
		if unit := serviceUnit(string(cgroup)); unit != "" {
			inst.Unit = unit + ".service"
		}
		inst.Control = controlOf(argv[2:], Env{Getenv: func(k string) string { return env[k] }, UID: uid}, string(cgroup))
		found = append(found, inst)
	}
	return found
}

// controlOf is the control socket `baton run args...` chose.
func controlOf(args []string, env Env, cgroup string) string {
	command := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				command = args[i+1]
			}
			i = len(args)
		case a == "--control" || a == "-control":
			if i+1 < len(args) {
				return args[i+1]
			}
		case strings.HasPrefix(a, "--control=") || strings.HasPrefix(a, "-control="):
			_, v, _ := strings.Cut(a, "=")
			return v
		}
	}
	return DefaultPath(env, ServiceName(cgroup, command))
}

func nulSplit(dir, name string) []string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil || len(b) == 0 {
		return nil
	}
	parts := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = string(p)
	}
	return out
}

// uidOf reads the effective uid from a /proc/PID/status.
func uidOf(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "status"))
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 1 {
				if uid, err := strconv.Atoi(f[1]); err == nil {
					return uid
				}
			}
		}
	}
	return -1
}
