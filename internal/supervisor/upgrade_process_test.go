package supervisor_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/supervisor"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// ownBaton copies baton into a directory of the test's own, so the test
// can replace the file on disk.
func ownBaton(t *testing.T) (testsd.Bins, string) {
	t.Helper()
	b := bins
	b.Baton = filepath.Join(t.TempDir(), "baton")
	copyFile(t, bins.Baton, b.Baton)
	return b, b.Baton
}

// startOwnBaton starts baton, from a copy of its binary (path) that the
// test may replace, with 2 workers and a configuration file, and waits
// until it is ready.
func startOwnBaton(ctx context.Context, t *testing.T) (s *service, path string) {
	t.Helper()
	b, path := ownBaton(t)
	s = &service{sd: testsd.New(t), web: listener(t, "web=127.0.0.1:0"), ctl: controlPath(t)}
	s.config = filepath.Join(filepath.Dir(s.ctl), "baton.toml")
	s.write(t, `command = ["@WORKER@"]`)
	s.svc = s.sd.Start(b, []*activation.Listener{s.web}, nil, "run", "--workers", "2", "--config", s.config, "--control", s.ctl)
	s.sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	return s, path
}

// speaksProtocol99 replaces the binary at path with one whose `version`
// says it speaks handoff protocol 99.
func speaksProtocol99(t *testing.T, path string) {
	t.Helper()
	script := filepath.Join(filepath.Dir(path), "other")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho baton v9\necho handoff-protocol 99\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, script, path)
}

// copyFile writes src over dst the way a package upgrade does: a new file
// renamed into place, so the running image keeps its old inode.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tmp := dst + ".new"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func upgrade(ctx context.Context, ctl string) (*control.Upgrade, error) {
	resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdUpgrade})
	return resp.Upgrade, err
}

// TestUpgradeInPlaceUnderLoad: the binary is replaced on disk and `baton
// upgrade` run under load: same main pid, now running the new file, same
// workers, whose watchdog it keeps; a reload then rolls them out; SIGTERM
// leaves no orphan; no request failed.
func TestUpgradeInPlaceUnderLoad(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	b, path := ownBaton(t)
	sd := testsd.New(t)
	web := listener(t, "web=127.0.0.1:0")
	ctl := controlPath(t)
	svc := sd.Start(b, []*activation.Listener{web}, nil, "run", "--workers", "4", "--watchdog", "400ms", "--control", ctl, "--", bins.Worker)
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	load := testsd.StartLoad("http://"+web.Addr()+"/", 4, 4, 2*time.Millisecond)
	defer load.Stop()
	before := testsd.Status(ctx, t, ctl)
	if before.Version != "dev" {
		t.Fatalf("version %q before the upgrade", before.Version)
	}

	copyFile(t, bins.BatonV2, path)
	u, err := upgrade(ctx, ctl)
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, svc.Output.String())
	}
	if u.PID != svc.PID() || u.Version != "v2" || u.Workers != 4 {
		t.Errorf("upgrade answer %+v, want pid %d, version v2, 4 workers", u, svc.PID())
	}
	exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(svc.PID()), "exe"))
	if err != nil || exe != path {
		t.Errorf("/proc/%d/exe = %q (%v), want the new file %s", svc.PID(), exe, err, path)
	}
	after := testsd.Status(ctx, t, ctl)
	if after.PID != svc.PID() || after.Version != "v2" || !samePIDs(after, before) {
		t.Fatalf("after the upgrade: %+v\nbefore: %+v", after, before)
	}
	// baton's own CPU share counts from the process's start: divided by the
	// new image's age, it once read 57914%.
	if limit := float64(100 * runtime.NumCPU()); after.CPUPercent > limit || !after.ProcessStarted.Equal(before.ProcessStarted) {
		t.Errorf("after the upgrade, baton uses %.1f%% CPU (more than %.0f%%), process started %v, was %v",
			after.CPUPercent, limit, after.ProcessStarted, before.ProcessStarted)
	}
	for _, l := range after.Listeners {
		if l.Address != web.Addr() {
			t.Errorf("listener %+v after the upgrade", l)
		}
	}
	if _, failures := load.Stop(); failures != "" {
		t.Errorf("failed requests across the upgrade: %s", failures)
	}

	// The new image watches the adopted workers and hears their pings:
	// three intervals on by its own clock (the workers' uptime in status),
	// none was replaced; then one that stops pinging is (without load: its
	// SIGABRT cuts the requests it holds). Had the others' pings gone
	// unheard, their watchdogs, armed at the adoption, would have fired
	// before the hung one's.
	at := after.Workers[0].UptimeSeconds
	testsd.WaitStatus(ctx, t, ctl, "three watchdog intervals since the upgrade", func(st control.Status) bool {
		return !samePIDs(st, before) || st.Workers[0].UptimeSeconds >= at+1.2
	})
	if st := testsd.Status(ctx, t, ctl); !samePIDs(st, before) {
		t.Fatalf("adopted workers were replaced: their notify messages went unheard\n%s", svc.Output.String())
	}
	body, err := testsd.Get(ctx, "http://"+web.Addr()+"/hang")
	if err != nil {
		t.Fatal(err)
	}
	m := hungRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("GET /hang: %q", body)
	}
	slot, _ := strconv.Atoi(m[1])
	hung, _ := strconv.Atoi(m[2])
	st := testsd.WaitStatus(ctx, t, ctl, "the hung adopted worker replaced", func(st control.Status) bool {
		w := st.Workers[slot]
		return w.PID != hung && w.PID != 0 && w.State == "ready"
	})
	for i, w := range st.Workers {
		if i != slot && (w.PID != before.Workers[i].PID || w.Restarts != 0) {
			t.Errorf("slot %d: pid %d, %d restarts; want the adopted pid %d kept: its pings went unheard", i, w.PID, w.Restarts, before.Workers[i].PID)
		}
	}

	// The new image is the workers' parent: it rolls them out under load
	// and stops them.
	load = testsd.StartLoad("http://"+web.Addr()+"/", 4, 4, 2*time.Millisecond)
	defer load.Stop()
	r, err := reload(ctx, ctl)
	if err != nil {
		t.Fatalf("reload after the upgrade: %v", err)
	}
	allAt(t, testsd.Status(ctx, t, ctl), r.To, pidsOf(before))
	if _, failures := load.Stop(); failures != "" {
		t.Errorf("failed requests across the reload: %s", failures)
	}
	final := testsd.Status(ctx, t, ctl)
	svc.Signal(t, unix.SIGTERM)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for _, w := range append(final.Workers, before.Workers...) {
		if !testsd.ProcessGone(ctx, w.PID) {
			t.Errorf("worker %d survived", w.PID)
		}
	}
}

// TestUpgradeRefusals: a binary speaking another handoff protocol, or a
// rollout in progress, refuse the upgrade with the reason; nothing changes.
func TestUpgradeRefusals(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s, path := startOwnBaton(ctx, t)
	before := testsd.Status(ctx, t, s.ctl)

	speaksProtocol99(t, path)
	_, err := upgrade(ctx, s.ctl)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("speaks state-handoff protocol 99 (reads 99-99), this baton hands over %d", supervisor.HandoffProtocol)) || !strings.Contains(err.Error(), "systemctl restart") {
		t.Errorf("upgrade to another protocol: %v", err)
	}
	copyFile(t, bins.Baton, path)

	// A rollout is in progress (its workers wait at a gate): the upgrade
	// must wait for it.
	gate, done := s.reloadAtGate(ctx, t)
	if _, err := upgrade(ctx, s.ctl); err == nil || !strings.Contains(err.Error(), "a rollout is in progress") {
		t.Errorf("upgrade during a rollout: %v", err)
	}
	openGate(t, gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	after := testsd.Status(ctx, t, s.ctl)
	if after.PID != before.PID || !after.Started.Equal(before.Started) {
		t.Errorf("baton re-executed although every upgrade was refused")
	}
}

// TestUpgradeBySIGUSR2 and no fd leak: 20 re-execs by signal and 1000
// rollouts leave baton with as many open fds as after the first.
func TestUpgradeBySIGUSR2WithoutFDLeaks(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 300*time.Second)
	b, _ := ownBaton(t)
	sd := testsd.New(t)
	web := listener(t, "web=127.0.0.1:0")
	ctl := controlPath(t)
	svc := sd.Start(b, []*activation.Listener{web}, nil, "run", "--workers", "2", "--ready", "exec", "--control", ctl, "--", "sleep", "600")
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	if _, err := reload(ctx, ctl); err != nil {
		t.Fatal(err)
	}
	// Draining workers hold fds until they exit: count without them.
	testsd.WaitStatus(ctx, t, ctl, "no draining worker", func(st control.Status) bool { return len(st.Draining) == 0 })
	baseline, baseFDs := settledFDs(t, svc.PID())
	for i := range 20 {
		started := testsd.Status(ctx, t, ctl).Started
		svc.Signal(t, unix.SIGUSR2)
		testsd.WaitStatus(ctx, t, ctl, "a re-executed image", func(st control.Status) bool {
			return st.Started.After(started) && st.Ready == 2
		})
		for range 50 {
			if _, err := reload(ctx, ctl); err != nil {
				t.Fatalf("re-exec %d: reload: %v", i, err)
			}
		}
	}
	st := testsd.Status(ctx, t, ctl)
	if st.Generation != 1002 {
		t.Errorf("generation %d after 1001 rollouts, want 1002", st.Generation)
	}
	testsd.WaitStatus(ctx, t, ctl, "no draining worker", func(st control.Status) bool { return len(st.Draining) == 0 })
	got, gotFDs := settledFDs(t, svc.PID())
	if got != baseline {
		t.Errorf("baton has %d open fds after 20 re-execs and 1000 rollouts, %d after the first rollout\nfirst: %s\nnow:   %s", got, baseline, baseFDs, gotFDs)
	}
	t.Logf("open fds: %d after the first rollout, %d after 20 re-execs and 1000 rollouts", baseline, got)
}

// settledFDs counts pid's open fds once the count has held for 150 ms: a
// control connection may still be closing on baton's side.
func settledFDs(t *testing.T, pid int) (int, string) {
	t.Helper()
	n, what := openFDs(t, pid)
	for same, deadline := 0, time.Now().Add(5*time.Second); same < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		m, w := openFDs(t, pid)
		if m == n {
			same++
		} else {
			n, what, same = m, w, 0
		}
	}
	return n, what
}

// openFDs counts pid's open fds and names their targets.
func openFDs(t *testing.T, pid int) (int, string) {
	t.Helper()
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var what []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		what = append(what, e.Name()+"->"+target)
	}
	return len(ents), strings.Join(what, " ")
}

// TestFailedExecKeepsTheOldImage: the binary on disk passes the protocol
// check, then cannot be executed (it drops its own execute bits): the old
// image goes on, says why, leaks nothing, and a later upgrade works.
func TestFailedExecKeepsTheOldImage(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	b, path := ownBaton(t)
	sd := testsd.New(t)
	web := listener(t, "web=127.0.0.1:0")
	ctl := controlPath(t)
	svc := sd.Start(b, []*activation.Listener{web}, nil, "run", "--workers", "2", "--control", ctl, "--", bins.Worker)
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	before := testsd.Status(ctx, t, ctl)
	fds, fdList := settledFDs(t, svc.PID())

	script := filepath.Join(filepath.Dir(path), "vanishing")
	os.WriteFile(script, fmt.Appendf(nil, "#!/bin/sh\necho handoff-protocol %d\nchmod a-x \"$0\"\n", supervisor.HandoffProtocol), 0o755)
	copyFile(t, script, path)
	_, err := upgrade(ctx, ctl)
	if err == nil || !strings.Contains(err.Error(), "exec "+path+": permission denied; the running baton goes on") {
		t.Fatalf("upgrade to an unexecutable file: %v", err)
	}
	after := testsd.Status(ctx, t, ctl)
	if after.PID != before.PID || !after.Started.Equal(before.Started) || !samePIDs(after, before) || after.Ready != 2 {
		t.Fatalf("the old image did not go on unchanged: %+v", after)
	}
	if n, list := settledFDs(t, svc.PID()); n != fds {
		t.Errorf("%d open fds after the failed exec, %d before\nbefore: %s\nafter:  %s", n, fds, fdList, list)
	}
	if _, err := testsd.Get(ctx, "http://"+web.Addr()+"/"); err != nil {
		t.Errorf("not serving after the failed exec: %v", err)
	}
	copyFile(t, bins.BatonV2, path)
	if u, err := upgrade(ctx, ctl); err != nil || u.Version != "v2" {
		t.Fatalf("upgrade after the failed one: %+v, %v", u, err)
	}
}

// TestUpgradeAll is what the package does after installing a new binary:
// every `baton run` of that binary's path on the host is upgraded in place,
// one that is rolling out once its rollout has ended; the binaries of
// other paths are not touched. Until then status says the binary on disk
// was replaced.
func TestUpgradeAll(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	b, path := ownBaton(t)
	quiet := &service{sd: testsd.New(t), web: listener(t, "web=127.0.0.1:0"), ctl: controlPath(t)}
	quiet.svc = quiet.sd.Start(b, []*activation.Listener{quiet.web}, nil, "run", "--workers", "2", "--control", quiet.ctl, "--", bins.Worker)
	busy := &service{sd: testsd.New(t), web: listener(t, "web=127.0.0.1:0"), ctl: controlPath(t)}
	busy.config = filepath.Join(filepath.Dir(busy.ctl), "baton.toml")
	busy.write(t, `command = ["@WORKER@"]`)
	busy.svc = busy.sd.Start(b, []*activation.Listener{busy.web}, nil, "run", "--workers", "2", "--config", busy.config, "--control", busy.ctl)
	// Another path's baton, which the package does not own.
	other := &service{sd: testsd.New(t), web: listener(t, "web=127.0.0.1:0"), ctl: controlPath(t)}
	other.svc = other.sd.Start(bins, []*activation.Listener{other.web}, nil, "run", "--workers", "1", "--control", other.ctl, "--", bins.Worker)
	for _, s := range []*service{quiet, busy, other} {
		s.sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	}
	before := map[string]control.Status{}
	for _, s := range []*service{quiet, busy, other} {
		before[s.ctl] = testsd.Status(ctx, t, s.ctl)
	}

	copyFile(t, bins.BatonV2, path) // the package's new binary
	if st := testsd.Status(ctx, t, quiet.ctl); !st.ExeReplaced {
		t.Errorf("status does not say the binary on disk was replaced: %+v", st)
	}
	// A rollout in progress (its workers wait at a gate): the upgrade
	// waits for it, asking again until the gate is opened.
	gate, _ := busy.reloadAtGate(ctx, t)

	var output testsd.SyncBuffer
	cmd := exec.CommandContext(ctx, path, "upgrade", "--all", "--wait", "30s")
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	busy.svc.WaitOutput(ctx, t, `msg="upgrade refused" err="a rollout is in progress`)
	openGate(t, gate)
	err := cmd.Wait()
	out := output.String()
	if err != nil {
		t.Fatalf("baton upgrade --all: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "upgraded in place to version v2"); n != 2 {
		t.Errorf("%d supervisors upgraded, want 2:\n%s", n, out)
	}
	for _, s := range []*service{quiet, busy} {
		st := testsd.Status(ctx, t, s.ctl)
		if st.Version != "v2" || st.PID != before[s.ctl].PID || st.ExeReplaced {
			t.Errorf("after upgrade --all: version %q pid %d (was %d) exe replaced %v", st.Version, st.PID, before[s.ctl].PID, st.ExeReplaced)
		}
	}
	if st := testsd.Status(ctx, t, quiet.ctl); st.Workers[0].PID != before[quiet.ctl].Workers[0].PID {
		t.Errorf("the workers were not kept: %+v", st.Workers)
	}
	if st := testsd.Status(ctx, t, other.ctl); !st.Started.Equal(before[other.ctl].Started) {
		t.Errorf("a baton of another path was upgraded too")
	}
}

// TestRecycleQueuedBehindARefusedUpgrade: a recycle asked for while a
// rollout runs and an upgrade (SIGUSR2) waits for it. The upgrade goes
// first and is refused (the binary on disk speaks another protocol); the
// recycle then runs. It once waited for some later rollout to come along,
// its caller with it.
func TestRecycleQueuedBehindARefusedUpgrade(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	s, path := startOwnBaton(ctx, t)
	before := testsd.Status(ctx, t, s.ctl)

	gate, reloaded := s.reloadAtGate(ctx, t)
	s.svc.Signal(t, unix.SIGUSR2)
	s.svc.WaitOutput(ctx, t, "upgrade deferred until the rollout or start has ended")
	recycled := make(chan error, 1)
	go func() { _, err := recycle(ctx, s.ctl, 0, false); recycled <- err }()
	s.svc.WaitOutput(ctx, t, "recycle asked during a rollout")
	speaksProtocol99(t, path)
	openGate(t, gate)
	if err := <-reloaded; err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := <-recycled; err != nil {
		t.Fatalf("the recycle queued behind the refused upgrade: %v", err)
	}
	st := testsd.Status(ctx, t, s.ctl)
	if !strings.Contains(s.svc.Output.String(), "upgrade refused") || !st.Started.Equal(before.Started) {
		t.Errorf("the upgrade was not refused: started %s, was %s", st.Started, before.Started)
	}
	if st.LastRollout == nil || st.LastRollout.Kind != "recycle" || st.Totals.Recycles[control.RecycleManual] != 1 {
		t.Errorf("after the refused upgrade: last %+v, recycles %v", st.LastRollout, st.Totals.Recycles)
	}
}
