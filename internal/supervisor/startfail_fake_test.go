package supervisor

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/worker"
)

// TestStartFailuresAtFirstStart: a worker that cannot be exec'd with the
// configuration baton started with (its directory, its environment's size)
// ends the first start with ErrCannotStart, naming why, instead of being
// retried for ever; a failure for want of resources (EMFILE) is retried.
func TestStartFailuresAtFirstStart(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		stop bool
	}{
		{"an environment too large", &worker.ExecError{Path: "/bin/sh", Err: syscall.E2BIG}, true},
		{"a directory gone", &worker.ExecError{Path: "/bin/sh", Dir: "/srv/app/releases/v1", BadDir: true, Err: syscall.ENOENT}, true},
		{"a shim not executable", &worker.ExecError{Path: "/bin/sh", Err: syscall.EACCES}, true},
		{"no file descriptors", &worker.ExecError{Path: "/bin/sh", Err: syscall.EMFILE}, false},
		{"no processes", &worker.ExecError{Path: "/bin/sh", Err: syscall.EAGAIN}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fw := &fakeWorld{clock: fakeClock{now: time.Unix(1e9, 0)}, pid: 1000, procs: map[int]*fakeProcess{}, mem: map[int]uint64{}}
			w := fw.world()
			starts := 0
			w.start = func(worker.Spec) (process, error) { starts++; return nil, tt.err }
			cfg := Config{Workers: 2}
			cfg.Command = []string{"worker"}
			cfg.ShimPath, cfg.ShimArgv = "/bin/sh", []string{"shim"}
			cfg.ReadyTimeout, cfg.DrainTimeout = time.Minute, 10*time.Second
			cfg.MaxSurge = 1
			cfg.RestartBackoff = Backoff{Min: 100 * time.Millisecond, Max: time.Second}
			cfg.CrashLimit = CrashLimit{N: 10, Per: time.Minute}
			s, err := newIn(w, func() (Config, error) { return cfg, nil })
			if err != nil {
				t.Fatal(err)
			}
			s.makeSlots()
			s.startQueued()
			if got := s.stopping; got != tt.stop {
				t.Fatalf("stopping %v after %d failed starts, want %v (exit error %v)", got, starts, tt.stop, s.exitErr)
			}
			if !tt.stop {
				if s.slots[0].restart == nil || !strings.Contains(s.slots[0].StartErr, tt.err.Error()) {
					t.Errorf("slot 0: no retry scheduled, or no reason in status: %q", s.slots[0].StartErr)
				}
				return
			}
			if !errors.Is(s.exitErr, ErrCannotStart) || !strings.Contains(s.exitErr.Error(), tt.err.Error()) {
				t.Errorf("exit error %v, want ErrCannotStart with %q", s.exitErr, tt.err)
			}
			for _, sl := range s.slots {
				if sl.restart != nil {
					t.Errorf("slot %d: a retry is scheduled while baton stops", sl.Index)
				}
			}
		})
	}
}

// TestStartFailureLaterRetries: after the service was ready, the same
// failure (a crash restart into a release that was removed, replaced by a
// file, or made not enterable) keeps the slot retrying, and says in status
// what became of the directory, by the chdir's errno, and what to do.
func TestStartFailureLaterRetries(t *testing.T) {
	for _, tt := range []struct {
		errno syscall.Errno
		want  []string
	}{
		{syscall.ENOENT, []string{"working directory /srv/app/releases/v1: no such file or directory", "generation 1 was pinned to is gone", "baton rollback"}},
		{syscall.ENOTDIR, []string{"working directory /srv/app/releases/v1: not a directory", "generation 1 was pinned to is not a directory", "baton rollback"}},
		{syscall.EACCES, []string{"working directory /srv/app/releases/v1: permission denied", "may not enter the release generation 1 was pinned to", "search permission", "baton rollback"}},
	} {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			ts := newTestSupervisor(t, Config{Workers: 2})
			ts.world.start = func(worker.Spec) (process, error) {
				return nil, &worker.ExecError{Path: "/bin/sh", Dir: "/srv/app/releases/v1", BadDir: true, Err: tt.errno}
			}
			sl := ts.slots[0]
			ts.exit(sl.w, 1)
			ts.fw.clock.advance(time.Second)
			ts.settle()
			if ts.stopping {
				t.Fatalf("baton stops: %v", ts.exitErr)
			}
			for _, want := range tt.want {
				if !strings.Contains(sl.StartErr, want) {
					t.Errorf("slot 0's reason %q lacks %q", sl.StartErr, want)
				}
			}
			if tt.errno != syscall.ENOENT && strings.Contains(sl.StartErr, "gone") {
				t.Errorf("slot 0's reason %q says the directory is gone", sl.StartErr)
			}
			if sl.restart == nil {
				t.Error("slot 0: no retry scheduled")
			}
		})
	}
}

// TestRolloutStartFailureSaysWhy: a rollout whose new worker cannot be
// started fails with the reason (what `baton reload` prints), not only
// "could not be started", and the old generation keeps serving.
func TestRolloutStartFailureSaysWhy(t *testing.T) {
	ts := newTestSupervisor(t, Config{Workers: 2})
	ts.deployed("/srv/app/releases/v2")
	ts.world.start = func(worker.Spec) (process, error) {
		return nil, &worker.ExecError{Path: "/bin/sh", Dir: "/srv/app/releases/v2", BadDir: true, Err: syscall.ENOENT}
	}
	reply := make(chan rolloutResult, 1)
	ts.requestRollout(reply)
	ts.settle()
	res := ts.result(reply)
	want := "worker 0 of generation 2 could not be started: working directory /srv/app/releases/v2: no such file or directory"
	if res.err == nil || !strings.Contains(res.err.Error(), want) {
		t.Fatalf("reload: %v, want %q", res.err, want)
	}
	if ts.stopping || ts.Supervisor.serving.gen != 1 {
		t.Errorf("stopping %v, generation %d serving; want generation 1 serving", ts.stopping, ts.Supervisor.serving.gen)
	}
}
