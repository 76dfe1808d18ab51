package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){"baton": main})
}

func TestScripts(t *testing.T) {
	testsd.Process(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":   cmdExitcode,
			"waitstatus": cmdWaitStatus,
			"exited":     cmdExited,
			"waitfile":   cmdWaitFile,
			"waitsock":   cmdWaitSock,
		},
	})
}

// exitcode N CMD [ARG...] runs CMD and checks it exits with N; its output
// is kept for stdout/stderr checks.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N CMD [ARG...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// waitstatus PATH READY [STATE] waits until the baton behind control socket
// PATH reports READY ready workers in STATE (ready unless given).
func cmdWaitStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: waitstatus PATH READY [STATE]")
	}
	state := "ready"
	if len(args) == 3 {
		state = args[2]
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("waitstatus: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last string
	for ctx.Err() == nil {
		resp, err := control.Call(ctx, ts.MkAbs(args[0]), control.Request{Command: control.CmdStatus})
		if err == nil && resp.Status.Ready == want && resp.Status.State == state {
			return
		}
		last = fmt.Sprint(err)
		if resp.Status != nil {
			last = fmt.Sprintf("%+v", *resp.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.Fatalf("waitstatus: never %d ready, %s; last: %s", want, state, last)
}

// waitfile PATH waits until PATH exists (a worker's sign that it got
// somewhere).
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	waitPath(ts, neg, args, "waitfile", func(fs.FileInfo) bool { return true })
}

// waitsock PATH waits until a socket is bound at PATH (a helper server's).
func cmdWaitSock(ts *testscript.TestScript, neg bool, args []string) {
	waitPath(ts, neg, args, "waitsock", func(fi fs.FileInfo) bool { return fi.Mode().Type() == fs.ModeSocket })
}

// waitPath waits up to 20 s until the file at args[0] is there and ok
// says it is what name waits for.
func waitPath(ts *testscript.TestScript, neg bool, args []string, name string, ok func(fs.FileInfo) bool) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: %s PATH", name)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		fi, err := os.Stat(ts.MkAbs(args[0]))
		if err == nil && ok(fi) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("%s: %s never came: %v", name, args[0], err)
		}
	}
}

// exited checks that every process the script started in the background
// has exited (reaped or not): what baton stop's return promises.
func cmdExited(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: exited")
	}
	for _, cmd := range ts.BackgroundCmds() {
		var info unix.Siginfo // Signo stays 0 while it runs (WNOHANG)
		// WNOWAIT: the script's own wait still reaps it. ECHILD: reaped.
		err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if err == nil && info.Signo == 0 {
			ts.Fatalf("%s (pid %d) has not exited", cmd.Path, cmd.Process.Pid)
		}
		if err != nil && !errors.Is(err, unix.ECHILD) {
			ts.Fatalf("waitid %d: %v", cmd.Process.Pid, err)
		}
	}
}
