package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/rig"
)

// TableflipVersion is the cloudflare/tableflip that bench/tableflip pins
// (the module proxy's latest-version lookup fails for it).
const TableflipVersion = "v1.2.3"

// BuildTableflip builds bench/tableflip, its own module, into dir.
func BuildTableflip(root, dir string) (string, error) {
	out := filepath.Join(dir, "tableflip-worker")
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, "bench", "tableflip")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build tableflip-worker: %w\n%s", err, b)
	}
	return out, nil
}

// tableflipScenario is one process upgraded by cloudflare/tableflip on
// SIGHUP: the new process inherits the listener, the old one drains once
// the new one is ready. The serving pid is in tableflip's PID file.
type tableflipScenario struct {
	p       Params
	dir     string
	first   *exec.Cmd
	lastPID int
}

func (s *tableflipScenario) Name() string {
	return "tableflip " + TableflipVersion + ", upgrade on SIGHUP (one process)"
}

func (s *tableflipScenario) pidFile() string { return filepath.Join(s.dir, "pid") }

func (s *tableflipScenario) Start(ctx context.Context) error {
	var err error
	if s.dir, err = os.MkdirTemp("", "bench-tableflip"); err != nil {
		return err
	}
	s.first = exec.Command(s.p.TableflipWorker, "-addr", s.p.addr(), "-pidfile", s.pidFile(),
		"-work", s.p.Work.String(), "-start-delay", s.p.StartDelay.String())
	s.first.Stderr = os.Stderr
	if err := s.first.Start(); err != nil {
		return err
	}
	return s.waitNewPID(ctx)
}

// waitNewPID waits until the PID file names a process other than the last
// one: tableflip writes it when the new process calls Ready.
func (s *tableflipScenario) waitNewPID(ctx context.Context) error {
	for {
		b, _ := os.ReadFile(s.pidFile())
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != s.lastPID {
			s.lastPID = pid
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tableflip: no new pid in %s: %w", s.pidFile(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *tableflipScenario) Deploy(ctx context.Context) error {
	if err := syscall.Kill(s.lastPID, syscall.SIGHUP); err != nil {
		return err
	}
	return s.waitNewPID(ctx)
}

func (s *tableflipScenario) Stop() {
	if s.lastPID > 0 {
		syscall.Kill(s.lastPID, syscall.SIGTERM)
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		if !rig.ProcessGone(ctx, s.lastPID) {
			syscall.Kill(s.lastPID, syscall.SIGKILL)
		}
		cancel()
	}
	if s.first != nil && s.first.Process != nil {
		s.first.Wait() // the first process, our child, exited at the first upgrade
	}
	os.RemoveAll(s.dir)
}
