package control

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Env is the part of the process environment the default paths depend on.
type Env struct {
	Getenv func(string) string
	UID    int
}

// OSEnv is the running process's Env.
func OSEnv() Env { return Env{Getenv: os.Getenv, UID: os.Geteuid()} }

// DefaultPath is where `baton run` puts its control socket without
// --control: $RUNTIME_DIRECTORY/control.sock under systemd's
// RuntimeDirectory=, else NAME.sock in Dir.
func DefaultPath(env Env, name string) string {
	if d := env.Getenv("RUNTIME_DIRECTORY"); d != "" {
		first, _, _ := strings.Cut(d, ":") // several directories are colon-separated
		return filepath.Join(first, "control.sock")
	}
	return filepath.Join(Dir(env), name+".sock")
}

// Dir is the directory of control sockets not under RuntimeDirectory=:
// /run/baton for root, else $XDG_RUNTIME_DIR/baton, else a per-user
// directory in the temporary directory.
func Dir(env Env) string {
	switch {
	case env.UID == 0:
		return "/run/baton"
	case env.Getenv("XDG_RUNTIME_DIR") != "":
		return filepath.Join(env.Getenv("XDG_RUNTIME_DIR"), "baton")
	}
	return filepath.Join(os.TempDir(), "baton-"+strconv.Itoa(env.UID))
}

// Find returns the control socket a client should use without --control:
// $RUNTIME_DIRECTORY/control.sock (as in ExecReload=), else the only socket
// in Dir. With several, it asks for --control and names them.
func Find(env Env) (string, error) {
	if d := env.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return DefaultPath(env, ""), nil
	}
	dir := Dir(env)
	socks, _ := filepath.Glob(filepath.Join(dir, "*.sock")) // only ErrBadPattern, impossible here
	switch len(socks) {
	case 0:
		return "", fmt.Errorf("no control socket in %s: is baton running? (or give --control)", dir)
	case 1:
		return socks[0], nil
	}
	// A baton killed with -9 leaves its socket file: several files with
	// one live socket among them is one baton.
	var live []string
	for _, p := range socks {
		if c, err := net.Dial("unix", p); err == nil {
			c.Close()
			live = append(live, p)
		}
	}
	if len(live) == 1 {
		return live[0], nil
	}
	return "", fmt.Errorf("several batons run here (%s): choose one with --control", strings.Join(socks, ", "))
}

// ServiceName names a baton for its default control socket: the systemd
// service it runs in, read from a /proc/self/cgroup text, else the base name
// of the worker command.
func ServiceName(cgroup string, command string) string {
	if unit := serviceUnit(cgroup); unit != "" {
		return unit
	}
	return filepath.Base(command)
}

// serviceUnit is the name of the systemd service a /proc/PID/cgroup text
// places the process in, without ".service"; "" if none.
func serviceUnit(cgroup string) string {
	for line := range strings.Lines(cgroup) {
		// "0::/system.slice/myapp.service" (v2) or "1:name=systemd:/..." (v1)
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if unit, ok := strings.CutSuffix(filepath.Base(parts[2]), ".service"); ok && unit != "" {
			return unit
		}
	}
	return ""
}
