package activation

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// ChildEnv returns env without any LISTEN_* variable, followed by LISTEN_FDS
// and LISTEN_FDNAMES for a child that receives sockets named names as fds 3..
// in that order. LISTEN_PID is left to Exec, which runs as the child.
func ChildEnv(env []string, names []string) []string {
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LISTEN_") {
			out = append(out, kv)
		}
	}
	if len(names) == 0 {
		return out
	}
	return append(out,
		"LISTEN_FDS="+strconv.Itoa(len(names)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"))
}

// Exec is the exec shim: it replaces the calling process with the program
// name (looked up in PATH), after setting the variables that must hold the
// pid the program will run as. A parent cannot set them before fork (it does
// not know the pid yet), so it starts a shim that calls Exec:
//
//   - LISTEN_PID, when env has LISTEN_FDS: libsystemd, python-systemd and
//     gunicorn ignore the sockets unless it is their own pid;
//   - WATCHDOG_PID, when env has WATCHDOG_USEC (sd_watchdog_enabled(3)).
//
// Call Exec from the main thread (runtime.LockOSThread in an init
// function): Linux keeps the parent-death signal per thread and new threads
// start without it, so an execve from another thread of a Go program drops a
// PR_SET_PDEATHSIG the parent set.
//
// Exec returns only on failure.
func Exec(name string, args []string, env []string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return err
	}
	pid := strconv.Itoa(os.Getpid())
	out := make([]string, 0, len(env)+2)
	var hasFDs, hasWatchdog bool
	for _, kv := range env {
		switch {
		case strings.HasPrefix(kv, "LISTEN_PID="), strings.HasPrefix(kv, "WATCHDOG_PID="):
			continue
		case strings.HasPrefix(kv, "LISTEN_FDS="):
			hasFDs = true
		case strings.HasPrefix(kv, "WATCHDOG_USEC="):
			hasWatchdog = true
		}
		out = append(out, kv)
	}
	if hasFDs {
		out = append(out, "LISTEN_PID="+pid)
	}
	if hasWatchdog {
		out = append(out, "WATCHDOG_PID="+pid)
	}
	argv := append([]string{name}, args...)
	if err := syscall.Exec(path, argv, out); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}
