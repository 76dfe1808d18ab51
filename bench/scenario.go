// Package bench measures deploys under load: baton's rolling reload side by
// side with what people use instead, on the same worker (contrib's example
// worker, with a per-request work time and a start-up time) and the same
// load. `scripts/bench` runs it; a short smoke run is part of the tests.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/rig"
	"golang.org/x/sys/unix"
)

// Params describe the worker every scenario runs.
type Params struct {
	Baton, Worker string // binaries
	Workers       int
	Work          time.Duration // per request
	StartDelay    time.Duration // a worker's start-up before it serves
	Port          int
	// NodeDir holds app.js, the Node twin of the worker; PM2Dir the PM2
	// installed from npm; TableflipWorker the tableflip build. A scenario
	// whose part is empty is left out.
	NodeDir, PM2Dir, TableflipWorker string
}

func (p Params) workerArgs() []string {
	return []string{"-work", p.Work.String(), "-start-delay", p.StartDelay.String()}
}

func (p Params) addr() string { return fmt.Sprintf("127.0.0.1:%d", p.Port) }

// Scenario is one way of running the workers and deploying a new version.
type Scenario interface {
	Name() string
	Start(ctx context.Context) error
	// Deploy replaces every worker with a new one and returns when the new
	// ones serve.
	Deploy(ctx context.Context) error
	Stop()
}

// batonScenario is baton with its own listener and a rolling reload.
type batonScenario struct {
	p   Params
	dir string
	cmd *exec.Cmd
	log rig.SyncBuffer // baton's stderr, shown if it fails to start
}

func (s *batonScenario) Name() string { return "baton (rolling reload)" }

func (s *batonScenario) control() string { return filepath.Join(s.dir, "c.sock") }

func (s *batonScenario) Start(ctx context.Context) error {
	var err error
	if s.dir, err = os.MkdirTemp("", "bb"); err != nil {
		return err
	}
	return s.launch(ctx, exec.Command(s.p.Baton, s.runArgs()...))
}

// runArgs is the scenario's `baton run` command line.
func (s *batonScenario) runArgs() []string {
	return append([]string{"run", "--workers", strconv.Itoa(s.p.Workers), "--listen", "app=" + s.p.addr(),
		"--control", s.control(), "--log", "inherit", "--", s.p.Worker}, s.p.workerArgs()...)
}

// launch starts cmd, a baton that runs runArgs, and waits until every
// worker is ready.
func (s *batonScenario) launch(ctx context.Context, cmd *exec.Cmd) error {
	s.cmd = cmd
	s.cmd.Stderr = &s.log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	if err := waitReady(ctx, s.control(), s.p.Workers); err != nil {
		return fmt.Errorf("%w\n%s", err, s.log.String())
	}
	return nil
}

func (s *batonScenario) Deploy(ctx context.Context) error {
	_, err := control.Call(ctx, s.control(), control.Request{Command: control.CmdReload})
	return err
}

func (s *batonScenario) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		s.cmd.Wait()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// PID is baton's pid, for resource measurements.
func (s *batonScenario) PID() int { return s.cmd.Process.Pid }

func waitReady(ctx context.Context, path string, n int) error {
	for {
		resp, err := control.Call(ctx, path, control.Request{Command: control.CmdStatus})
		if err == nil && resp.Status.Ready == n && resp.Status.Rollout == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("baton not ready: %w (last: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// heldSocket is what `systemctl restart` of a socket-activated service
// does: a socket held open by someone else (systemd's .socket unit; here
// the benchmark), every worker stopped, then every worker started.
// Connections queue in the socket meanwhile: none refused, all delayed.
type heldSocket struct {
	p    Params
	ln   *activation.Listener
	cmds []*exec.Cmd
}

func (s *heldSocket) Name() string { return "held socket, stop all + start all" }

func (s *heldSocket) Start(ctx context.Context) error {
	spec, err := activation.ParseSpec("app=" + s.p.addr())
	if err != nil {
		return err
	}
	if s.ln, err = activation.Listen(spec); err != nil {
		return err
	}
	return s.startAll()
}

func (s *heldSocket) startAll() error {
	s.cmds = nil
	for i := range s.p.Workers {
		fd, err := unix.FcntlInt(uintptr(s.ln.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f := os.NewFile(uintptr(fd), "app") // closed below: the child has its copy
		// LISTEN_PID is the worker's own pid, set in the child before the
		// exec, as systemd does: sh's $$ is the pid the worker runs as. (A Go
		// shim would do too, but a signal can be lost in its execve unless
		// the parent waits for the exec, as baton does.)
		cmd := exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$ exec "$@"`, "sh", s.p.Worker}, s.p.workerArgs()...)...)
		cmd.Env = append(activation.ChildEnv(os.Environ(), []string{"app"}), "BATON_WORKER="+strconv.Itoa(i))
		cmd.ExtraFiles = []*os.File{f}
		err = cmd.Start()
		f.Close()
		if err != nil {
			return err
		}
		s.cmds = append(s.cmds, cmd)
	}
	return nil
}

func (s *heldSocket) Deploy(ctx context.Context) error {
	return restartAll(ctx, s.cmds, s.startAll, s.p.StartDelay)
}

func (s *heldSocket) Stop() {
	stopAll(s.cmds)
	s.ln.Close()
}

// bindKill is workers that bind the port themselves (SO_REUSEPORT), all
// stopped and started again: each closing worker's accept queue dies with
// it, and nothing listens between the last stop and the first start.
type bindKill struct {
	p    Params
	cmds []*exec.Cmd
}

func (s *bindKill) Name() string { return "workers bind the port, stop all + start all" }

func (s *bindKill) Start(ctx context.Context) error {
	if err := s.startAll(); err != nil {
		return err
	}
	return waitServing(ctx, s.p.StartDelay)
}

func (s *bindKill) startAll() error {
	s.cmds = nil
	for range s.p.Workers {
		cmd := exec.Command(s.p.Worker, append([]string{"-bind", s.p.addr()}, s.p.workerArgs()...)...)
		if err := cmd.Start(); err != nil {
			return err
		}
		s.cmds = append(s.cmds, cmd)
	}
	return nil
}

func (s *bindKill) Deploy(ctx context.Context) error {
	return restartAll(ctx, s.cmds, s.startAll, s.p.StartDelay)
}

func (s *bindKill) Stop() { stopAll(s.cmds) }

// restartAll is the deploy of the scenarios without a supervisor: stop
// every worker, start every worker, wait out their start-up.
func restartAll(ctx context.Context, old []*exec.Cmd, startAll func() error, startDelay time.Duration) error {
	stopAll(old)
	if err := startAll(); err != nil {
		return err
	}
	return waitServing(ctx, startDelay)
}

// stopTimeout is what systemd's TimeoutStopSec= would allow a worker.
const stopTimeout = 10 * time.Second

// stopAll sends SIGTERM (the workers drain) and waits for every exit,
// SIGKILLing at stopTimeout, as systemd would; a kill is reported.
func stopAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(stopTimeout)
	for _, c := range cmds {
		done := make(chan struct{})
		go func() { c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			fmt.Fprintf(os.Stderr, "bench: worker %d still draining after %s: SIGKILL\n", c.Process.Pid, stopTimeout)
			c.Process.Kill()
			<-done
		}
	}
}

// waitServing waits out the workers' start-up: these scenarios have no
// readiness signal, which is part of what they are.
func waitServing(ctx context.Context, startDelay time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(startDelay + 50*time.Millisecond):
		return nil
	}
}

// waitHTTP waits until url answers, then another startDelay: the last
// workers may still be starting.
func waitHTTP(ctx context.Context, url string, startDelay time.Duration) error {
	for {
		if _, err := rig.Get(ctx, url); err == nil {
			return waitServing(ctx, startDelay)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered: %w", url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Scenarios are the ways of deploying compared, baton first.
func Scenarios(p Params) []Scenario {
	scs := []Scenario{&batonScenario{p: p}, &upgradeScenario{batonScenario{p: p}}, &kill9Scenario{batonScenario: batonScenario{p: p}},
		&heldSocket{p: p}, &bindKill{p: p}}
	if p.TableflipWorker != "" {
		scs = append(scs, &tableflipScenario{p: p})
	}
	if p.NodeDir != "" {
		scs = append(scs, &nodeCluster{p: p})
		if p.PM2Dir != "" {
			scs = append(scs, &pm2Cluster{p: p})
		}
	}
	return scs
}
