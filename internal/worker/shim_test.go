package worker

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestShellShim: the command runs with LISTEN_PID and WATCHDOG_PID naming
// its own pid, without BATON_EXEC_FD, and with the exec pipe closed, which
// the parent sees as EOF.
func TestShellShim(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	probe := `echo "$$ ${LISTEN_PID-none} ${WATCHDOG_PID-none} ${BATON_EXEC_FD-unset}"; if [ -e /proc/self/fd/3 ]; then echo open; else echo closed; fi`
	cmd := exec.Command(ShellShim, append(ShellShimArgv[1:], "/bin/sh", "-c", probe)...)
	cmd.Args[0] = ShellShimArgv[0]
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LISTEN_FDS=1", "WATCHDOG_USEC=1000000", ExecFDEnv + "=3"}
	cmd.ExtraFiles = []*os.File{w}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := io.Copy(io.Discard, r); err != nil { // EOF: the command runs
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	f := strings.Fields(lines[0])
	if len(lines) != 2 || len(f) != 4 {
		t.Fatalf("output %q", b)
	}
	if f[0] != f[1] || f[0] != f[2] {
		t.Errorf("pid %s, LISTEN_PID %s, WATCHDOG_PID %s: want all the same", f[0], f[1], f[2])
	}
	if f[3] != "unset" {
		t.Errorf("%s=%s reached the command", ExecFDEnv, f[3])
	}
	if lines[1] != "closed" {
		t.Errorf("the exec pipe (fd 3) is %s in the command", lines[1])
	}
}

// TestShellShimLeavesUnsetVariablesUnset: no LISTEN_FDS, no LISTEN_PID; a
// missing command fails under the name baton-shim.
func TestShellShimLeavesUnsetVariablesUnset(t *testing.T) {
	cmd := exec.Command(ShellShim, append(ShellShimArgv[1:], "/bin/sh", "-c", `echo "${LISTEN_PID-none} ${WATCHDOG_PID-none}"`)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	b, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(b)) != "none none" {
		t.Errorf("output %q, %v", b, err)
	}
	cmd = exec.Command(ShellShim, append(ShellShimArgv[1:], "/nonexistent/worker")...)
	b, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 127 || !strings.Contains(string(b), "baton-shim") {
		t.Errorf("missing command: %v, output %q", err, b)
	}
}
