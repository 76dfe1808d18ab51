package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/rig"
	"github.com/batonsd/baton/notify"
)

// upgradeScenario is baton replacing its own binary in place (`baton
// upgrade`, same pid): the workers are adopted, not replaced.
type upgradeScenario struct{ batonScenario }

func (s *upgradeScenario) Name() string { return "baton upgrade (re-exec, workers kept)" }

func (s *upgradeScenario) Deploy(ctx context.Context) error {
	resp, err := control.Call(ctx, s.control(), control.Request{Command: control.CmdUpgrade})
	if err == nil && resp.Upgrade == nil {
		err = errors.New("no answer from the new image")
	}
	return err
}

// kill9Scenario is baton SIGKILLed and started again by a stand-in for
// systemd: baton stores its listener in the FD store (FDSTORE=1 on the
// NOTIFY_SOCKET the benchmark holds), and after the kill the benchmark does
// what systemd's Restart=always does: wait for the unit's remaining
// processes (the workers, draining on their parent-death signal) to exit,
// wait RestartSec, start baton with the stored socket in LISTEN_FDS.
type kill9Scenario struct {
	batonScenario
	notify *notify.Socket
	mu     sync.Mutex
	stored *os.File // the FD store's copy of the listener
	name   string   // its FDNAME
}

// restartDelay is systemd's default RestartSec=.
const restartDelay = 100 * time.Millisecond

func (s *kill9Scenario) Name() string { return "baton kill -9, restarted with the FD store" }

func (s *kill9Scenario) Start(ctx context.Context) error {
	var err error
	if s.dir, err = os.MkdirTemp("", "bk"); err != nil {
		return err
	}
	if s.notify, err = notify.Listen(filepath.Join(s.dir, "notify")); err != nil {
		return err
	}
	go s.readNotify()
	return s.startBaton(ctx)
}

// readNotify keeps the first socket baton stores, as the FD store does.
func (s *kill9Scenario) readNotify() {
	for {
		d, err := s.notify.Read()
		if err != nil {
			return
		}
		s.mu.Lock()
		for _, f := range d.Files {
			if s.stored == nil && d.Msg.Is("FDSTORE", "1") {
				s.stored, s.name = f, d.Msg["FDNAME"]
			} else {
				f.Close()
			}
		}
		s.mu.Unlock()
	}
}

// PID is 0: each kill ends the supervising process, so there is no one
// process to measure.
func (s *kill9Scenario) PID() int { return 0 }

// startBaton starts baton through its shim (LISTEN_PID must be its own), as
// a systemd unit with the stored socket once there is one.
func (s *kill9Scenario) startBaton(ctx context.Context) error {
	cmd := exec.Command(s.p.Baton, append([]string{"shim", s.p.Baton}, s.runArgs()...)...)
	env := append(os.Environ(), "NOTIFY_SOCKET="+s.notify.Addr(), "INVOCATION_ID=0123456789abcdef0123456789abcdef")
	s.mu.Lock()
	if s.stored != nil {
		fd, err := syscall.Dup(int(s.stored.Fd()))
		if err != nil {
			s.mu.Unlock()
			return err
		}
		f := os.NewFile(uintptr(fd), "app")
		defer f.Close() // the child has its copy
		cmd.ExtraFiles = []*os.File{f}
		env = activation.ChildEnv(env, []string{s.name})
	}
	s.mu.Unlock()
	cmd.Env = env
	return s.launch(ctx, cmd)
}

func (s *kill9Scenario) Deploy(ctx context.Context) error {
	resp, err := control.Call(ctx, s.control(), control.Request{Command: control.CmdStatus})
	if err != nil {
		return err
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	for _, w := range resp.Status.Workers {
		if !rig.ProcessGone(ctx, w.PID) {
			return fmt.Errorf("worker %d still running: %w", w.PID, ctx.Err())
		}
	}
	time.Sleep(restartDelay)
	return s.startBaton(ctx)
}

func (s *kill9Scenario) Stop() {
	s.batonScenario.Stop()
	if s.notify != nil {
		s.notify.Close()
	}
	if s.stored != nil {
		s.stored.Close()
	}
}
