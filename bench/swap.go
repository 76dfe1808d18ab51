package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
)

// SwapOverhead is what baton adds to each swap of a rollout.
type SwapOverhead struct {
	// Wall is a rollout's time per swap beyond the new worker's own time
	// from main() to READY=1 (which the example worker writes down).
	Wall time.Duration `json:"wall_ns"`
	// SpawnToMain is what starting the worker costs anyone: from a Go
	// parent's exec.Cmd.Start to the worker's main(), the kernel's fork and
	// exec and the Go runtime's start. Part of Wall.
	SpawnToMain time.Duration `json:"spawn_to_main_ns"`
	// CPU is baton's own CPU time per swap (/proc/PID/stat over all the
	// rollouts).
	CPU time.Duration `json:"cpu_ns"`
}

// Baton is the wall time per swap that is baton's alone.
func (o SwapOverhead) Baton() time.Duration { return o.Wall - o.SpawnToMain }

// MeasureSwapOverhead rolls p.Workers workers (no start-up delay) one at a
// time, rollouts times after one rollout not counted, timing the reload
// from the control socket's side: fork and exec through the shim, the
// READY=1 notification's way to baton, signalling the old worker,
// bookkeeping, the control round trip.
func MeasureSwapOverhead(ctx context.Context, p Params, rollouts int) (SwapOverhead, error) {
	var o SwapOverhead
	dir, err := os.MkdirTemp("", "bench-swap")
	if err != nil {
		return o, err
	}
	defer os.RemoveAll(dir)
	timings := filepath.Join(dir, "timings")
	if o.SpawnToMain, err = spawnToMain(ctx, p.Worker, filepath.Join(dir, "direct"), 20); err != nil {
		return o, err
	}
	ctl := filepath.Join(dir, "c.sock")
	cmd := exec.Command(p.Baton, "run", "--workers", strconv.Itoa(p.Workers), "--max-surge", "1", "--listen", "app="+p.addr(),
		"--control", ctl, "--log", "inherit", "--", p.Worker, "-timings", timings)
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		return o, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	if err := waitReady(ctx, ctl, p.Workers); err != nil {
		return o, err
	}
	// One rollout first, not counted: it carries one-off costs that are
	// not a swap's, among them the kernel's cleanup of the /proc entries
	// that waitReady's status requests had baton read for each worker,
	// which reaping those workers paid (up to 20 ms of the first rollout
	// on a busy host).
	if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
		return o, err
	}
	cpu0 := cpuTime(cmd.Process.Pid)
	var over time.Duration
	for range rollouts {
		os.Remove(timings)
		start := time.Now()
		if _, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload}); err != nil {
			return o, err
		}
		took := time.Since(start)
		own, n, err := sumTimings(timings)
		if err != nil {
			return o, err
		}
		if n != p.Workers {
			return o, fmt.Errorf("%d workers wrote timings in a rollout of %d", n, p.Workers)
		}
		over += took - own
	}
	swaps := time.Duration(rollouts * p.Workers)
	o.Wall = over / swaps
	o.CPU = (cpuTime(cmd.Process.Pid) - cpu0) / swaps
	return o, nil
}

// spawnToMain starts the worker directly (binding a port of its own) n
// times and returns the mean time from Start to its main().
func spawnToMain(ctx context.Context, worker, timings string, n int) (time.Duration, error) {
	var sum time.Duration
	for range n {
		os.Remove(timings)
		cmd := exec.Command(worker, "-bind", "127.0.0.1:0", "-timings", timings)
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		var line []byte
		for len(line) == 0 {
			line, _ = os.ReadFile(timings)
			select {
			case <-ctx.Done():
				cmd.Process.Kill()
				cmd.Wait()
				return 0, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
		var started, ready int64
		if _, err := fmt.Sscan(string(line), &started, &ready); err != nil {
			return 0, fmt.Errorf("%s: %q: %w", timings, line, err)
		}
		sum += time.Unix(0, started).Sub(t0)
	}
	return sum / time.Duration(n), nil
}

// sumTimings adds up the "START READY" spans in path.
func sumTimings(path string) (time.Duration, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var sum time.Duration
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var start, ready int64
		if _, err := fmt.Sscan(sc.Text(), &start, &ready); err != nil {
			return 0, 0, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		sum += time.Duration(ready - start)
		n++
	}
	return sum, n, sc.Err()
}
