package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The Node scenarios run bench/node/app.js, the Go example worker's twin:
// PM2's cluster mode and Node's own cluster module work only with Node.

// PM2Version is the PM2 the benchmark installs from npm.
const PM2Version = "7.0.4"

func (p Params) nodeEnv() []string {
	return append(os.Environ(),
		"PORT="+strconv.Itoa(p.Port),
		"WORK_MS="+strconv.FormatInt(p.Work.Milliseconds(), 10),
		"START_MS="+strconv.FormatInt(p.StartDelay.Milliseconds(), 10),
		"WORKERS="+strconv.Itoa(p.Workers))
}

// nodeCluster is the Node cluster rolling-restart pattern: the primary
// forks a new worker, waits for its 'listening', disconnects an old one.
type nodeCluster struct {
	p     Params
	cmd   *exec.Cmd
	lines chan string // the primary's stdout
}

func (s *nodeCluster) Name() string { return "Node cluster, rolling restart (Node worker)" }

func (s *nodeCluster) Start(ctx context.Context) error {
	s.cmd = exec.Command("node", filepath.Join(s.p.NodeDir, "app.js"), "cluster")
	s.cmd.Env = s.p.nodeEnv()
	s.cmd.Stderr = os.Stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.lines = make(chan string, 16)
	go scanLines(out, s.lines)
	return waitLine(ctx, s.lines, "serving")
}

func (s *nodeCluster) Deploy(ctx context.Context) error {
	s.cmd.Process.Signal(syscall.SIGHUP)
	return waitLine(ctx, s.lines, "rolled")
}

// PID is the cluster primary's (the supervisor).
func (s *nodeCluster) PID() int { return s.cmd.Process.Pid }

func (s *nodeCluster) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		stopAll([]*exec.Cmd{s.cmd})
	}
}

func scanLines(r io.Reader, lines chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines <- sc.Text()
	}
	close(lines)
}

func waitLine(ctx context.Context, lines <-chan string, want string) error {
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return fmt.Errorf("exited before printing %q", want)
			}
			if l == want {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w", want, ctx.Err())
		}
	}
}

// pm2Cluster is PM2's cluster mode reloaded with `pm2 reload`, configured
// as its docs recommend for graceful reloads: wait_ready (the app sends
// 'ready' once listening), listen_timeout, and a kill_timeout as long as the
// other scenarios' stop timeout.
type pm2Cluster struct {
	p    Params
	home string // PM2_HOME: its own daemon
}

func (s *pm2Cluster) Name() string {
	return "PM2 " + PM2Version + " cluster mode, pm2 reload (Node worker)"
}

func (s *pm2Cluster) pm2(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.p.PM2Dir, "node_modules", ".bin", "pm2"), args...)
	cmd.Env = append(s.p.nodeEnv(), "PM2_HOME="+s.home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pm2 %v: %w\n%s", args, err, out)
	}
	return nil
}

func (s *pm2Cluster) Start(ctx context.Context) error {
	var err error
	if s.home, err = os.MkdirTemp("", "bench-pm2"); err != nil {
		return err
	}
	app := map[string]any{
		"name":           "bench",
		"script":         filepath.Join(s.p.NodeDir, "app.js"),
		"instances":      s.p.Workers,
		"exec_mode":      "cluster",
		"wait_ready":     true,
		"listen_timeout": 10000,
		"kill_timeout":   stopTimeout.Milliseconds(),
	}
	eco := filepath.Join(s.home, "ecosystem.json")
	b, _ := json.Marshal(map[string]any{"apps": []any{app}})
	if err := os.WriteFile(eco, b, 0o644); err != nil {
		return err
	}
	if err := s.pm2(ctx, "start", eco); err != nil {
		return err
	}
	return waitHTTP(ctx, fmt.Sprintf("http://%s/", s.p.addr()), s.p.StartDelay)
}

func (s *pm2Cluster) Deploy(ctx context.Context) error { return s.pm2(ctx, "reload", "bench") }

func (s *pm2Cluster) Stop() {
	if s.home == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.pm2(ctx, "kill"); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	os.RemoveAll(s.home)
}

// PID is the PM2 daemon's (the supervisor; 0 if unknown).
func (s *pm2Cluster) PID() int {
	b, _ := os.ReadFile(filepath.Join(s.home, "pm2.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// InstallPM2 installs PM2Version from npm into dir unless it is there.
func InstallPM2(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "pm2")); err == nil {
		return nil
	}
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--prefix", dir, "pm2@"+PM2Version)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return errors.Join(fmt.Errorf("npm install pm2@%s", PM2Version), err)
	}
	return nil
}
