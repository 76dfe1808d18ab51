// Package e2e tests baton as users meet it: a .deb installed under a real
// systemd (PID 1 of a systemd-nspawn container), on Debian 12's systemd 252
// (Type=notify with the blocking ExecReload=), bookworm-backports' 254 and
// Debian 13's 257 (Type=notify-reload), under steady load.
//
// Needs root, systemd-container and mmdebstrap (scripts/test installs
// them). Root filesystems are cached in /var/cache/baton-e2e, or in the
// directory BATON_E2E_CACHE names (testbed.sh cached-rootfs); the .deb is
// built with scripts/deb unless BATON_E2E_DEB names one.
//
// The tests of one systemd version each run in parallel (as many at once
// as -parallel allows, GOMAXPROCS by default), each in a container of its
// own, after TestFleet, which runs alone. Each asks for its root filesystem
// first, so that every build the run needs starts at once, beside the build
// of the .deb: on an empty cache the mmdebstraps overlap.
package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/testsd"
)

var (
	skipReason string
	// prepared is closed when what the containers need is built (or
	// failed to be: prepareErr).
	prepared   = make(chan struct{})
	prepareErr error
	deb        string // the package under test
	loadgen    string // e2e/loadgen, built for the host
	plain      string // faults/testdata/plainworker, a Go worker as users write them
	// debV2 is deb with version 0.1.1 (a package upgrade), debOther 0.1.2
	// whose binary says it speaks another handoff protocol.
	debV2, debOther string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "container layer: skipped with -short" // each test says so too (testsd.Container)
	case os.Geteuid() != 0:
		skipReason = "booting a container needs root"
	case !have("systemd-nspawn") || !have("mmdebstrap"):
		skipReason = "systemd-nspawn and mmdebstrap are not installed (scripts/test installs them)"
	}
	if skipReason != "" {
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "baton-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// Built while the tests start their root filesystems' builds.
	go func() {
		prepareErr = prepare(tmp)
		close(prepared)
	}()
	code := m.Run()
	<-prepared // it writes in tmp
	return code
}

// prepare builds into tmp what the tests install in the containers.
func prepare(tmp string) error {
	loadgen = filepath.Join(tmp, "loadgen")
	if out, err := exec.Command("go", "build", "-o", loadgen, "./loadgen").CombinedOutput(); err != nil {
		return fmt.Errorf("build loadgen: %w\n%s", err, out)
	}
	plain = filepath.Join(tmp, "plainworker")
	build := exec.Command("go", "build", "-o", plain, "../faults/testdata/plainworker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // static: it runs in the container
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build plainworker: %w\n%s", err, out)
	}
	if deb = os.Getenv("BATON_E2E_DEB"); deb == "" {
		out, err := exec.Command("../scripts/deb").CombinedOutput()
		if err != nil {
			return fmt.Errorf("scripts/deb: %w\n%s", err, out)
		}
		debs, _ := filepath.Glob("../dist/baton_*.deb")
		if len(debs) == 0 {
			return fmt.Errorf("scripts/deb made no package\n%s", out)
		}
		deb, _ = filepath.Abs(debs[len(debs)-1])
	}
	var err error
	if debV2, err = repack(tmp, "0.1.1", ""); err != nil {
		return err
	}
	debOther, err = repack(tmp, "0.1.2", "99")
	return err
}

// ready waits until what the containers need is built.
func ready(t *testing.T) {
	t.Helper()
	<-prepared
	if prepareErr != nil {
		t.Fatal(prepareErr)
	}
}

func have(cmd string) bool {
	_, err := exec.LookPath(cmd)
	return err == nil
}

// A rootfsBuild is the root filesystem of a systemd version, from the cache
// or being built; the tests that boot it share it.
type rootfsBuild struct {
	version int
	done    chan struct{} // closed when dir or err is set
	dir     string
	err     error
	note    string // what it took: a build, a wait for one
}

var (
	buildsMu sync.Mutex
	builds   = map[int]*rootfsBuild{}
)

// startRootfs gets the root filesystem for a systemd version in the
// background: from the cache, or built with mmdebstrap (one to two
// minutes) if the cache has none. Tests call it before t.Parallel, so that
// the builds of all the tests that run start at once.
func startRootfs(version int) *rootfsBuild {
	buildsMu.Lock()
	defer buildsMu.Unlock()
	if b, ok := builds[version]; ok {
		return b
	}
	b := &rootfsBuild{version: version, done: make(chan struct{})}
	builds[version] = b
	go func() {
		defer close(b.done)
		b.dir, b.note, b.err = buildRootfs(version)
	}()
	return b
}

// wait returns the root filesystem's directory once it is built.
func (b *rootfsBuild) wait(t *testing.T) string {
	t.Helper()
	<-b.done
	if b.err != nil {
		t.Fatal(b.err)
	}
	if b.note != "" {
		t.Logf("systemd %d: %s", b.version, b.note)
	}
	return b.dir
}

// buildRootfs returns the root filesystem for a systemd version from the
// cache, which testbed.sh cached-rootfs fills: it builds one that is
// missing or was built with other packages, or waits for a build of it
// under way (scripts/test starts them early).
func buildRootfs(version int) (dir, note string, err error) {
	start := time.Now()
	cmd := exec.Command("./testbed.sh", "cached-rootfs", fmt.Sprint(version))
	var log bytes.Buffer
	cmd.Stderr = &log
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("root filesystem for systemd %d: %w\n%s", version, err, log.Bytes())
	}
	took := time.Since(start).Round(time.Second)
	switch {
	case bytes.Contains(log.Bytes(), []byte("its packages changed")):
		note = fmt.Sprintf("root filesystem rebuilt in %s: its packages changed", took)
	case bytes.Contains(log.Bytes(), []byte("rootfs ready in")):
		note = fmt.Sprintf("root filesystem built in %s", took)
	case took > 0:
		note = fmt.Sprintf("root filesystem: waited %s for its build under way", took)
	}
	return strings.TrimSpace(string(out)), note, nil
}

// box is a booted container.
type box struct {
	t      *testing.T
	name   string
	leader string
}

// boot boots a container of the root filesystem fs once it is built.
func boot(t *testing.T, fs *rootfsBuild) *box {
	t.Helper()
	version, dir := fs.version, fs.wait(t)
	name := fmt.Sprintf("baton-e2e-%d", version)
	exec.Command("./testbed.sh", "stop", name).Run() // a leftover from an interrupted run, if any
	if out, err := exec.Command("./testbed.sh", "boot", dir, name, "--ephemeral", "--timeout", "120").CombinedOutput(); err != nil {
		t.Fatalf("boot systemd %d: %v\n%s", version, err, out)
	}
	b := &box{t: t, name: name}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.sh("journalctl -u myapp --no-pager -n 150")
			t.Logf("journal of myapp:\n%s", out)
		}
		exec.Command("./testbed.sh", "stop", name).Run()
	})
	out, err := exec.Command("./testbed.sh", "leader", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	b.leader = strings.TrimSpace(string(out))
	return b
}

// copyIn copies a file or directory of the host into the container.
func (b *box) copyIn(src, dst string) {
	b.t.Helper()
	if out, err := exec.Command("./testbed.sh", "copy-in", b.name, src, dst).CombinedOutput(); err != nil {
		b.t.Fatalf("copy-in %s: %v\n%s", src, err, out)
	}
}

// exposure is systemd-analyze security's overall rating of unit; a rating
// above 2.5 (worse than OK) fails the test.
func (b *box) exposure(unit string) float64 {
	b.t.Helper()
	sec := b.must("systemd-analyze security " + unit + " 2>&1 | grep 'Overall exposure level'")
	var e float64
	if _, err := fmt.Sscanf(sec[strings.LastIndex(sec, ": ")+2:], "%g", &e); err != nil || e > 2.5 {
		b.t.Errorf("systemd-analyze security %s: %q, want 2.5 or lower", unit, sec)
	}
	return e
}

// sh runs a bash script inside the container.
func (b *box) sh(script string) (string, error) {
	out, err := exec.Command("./testbed.sh", "exec", b.name, "--", "bash", "-c", script).CombinedOutput()
	return string(out), err
}

func (b *box) must(script string) string {
	b.t.Helper()
	out, err := b.sh(script)
	if err != nil {
		b.t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

// waitFor runs script until it succeeds, for up to d.
func (b *box) waitFor(what, script string, d time.Duration) string {
	b.t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, err = b.sh(script); err == nil {
			return out
		}
	}
	b.t.Fatalf("never %s: %v\n%s", what, err, out)
	return ""
}

type status struct {
	PID             int     `json:"pid"`
	State           string  `json:"state"`
	LameDuckSeconds float64 `json:"lame_duck_seconds"`
	Generation      int     `json:"generation"`
	Ready           int     `json:"ready"`
	Workers         []struct {
		Slot int `json:"slot"`
		PID  int `json:"pid"`
	} `json:"workers"`
	Listeners []struct {
		Name   string `json:"name"`
		Source string `json:"source"`
	} `json:"listeners"`
}

func (b *box) status() status {
	b.t.Helper()
	return b.statusOf("myapp")
}

func (b *box) statusOf(unit string) status {
	b.t.Helper()
	return parseStatus(b.t, b.must("baton status --json "+unit))
}

func parseStatus(t *testing.T, out string) status {
	t.Helper()
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("baton status --json: %v\n%s", err, out)
	}
	return st
}

// drained waits until unit's baton has no draining worker: one of the
// generation just replaced may still take a connection before it closes
// its copy of the socket (gunicorn's worker does, under load), and a test
// that reads what serves must not take its answer for the new one's.
func (b *box) drained(unit string) {
	b.t.Helper()
	b.waitFor(unit+"'s old workers gone", "baton status --json "+unit+
		` | python3 -c 'import json,sys; sys.exit(len(json.load(sys.stdin)["draining"]) > 0)'`, 60*time.Second)
}

// load is loadgen running in the container's network namespace.
type load struct {
	cmd      *exec.Cmd
	out      bytes.Buffer
	progress testsd.SyncBuffer // loadgen's "ok N" lines, every 50 ms
}

func (b *box) startLoad(url string) *load { return b.startLoadOf(url, 4, 4) }

// startLoadOf runs loadgen with fresh clients opening a connection per
// request and keepAlive clients reusing theirs.
func (b *box) startLoadOf(url string, fresh, keepAlive int) *load {
	b.t.Helper()
	return runLoad(b.t, exec.Command("nsenter", "-t", b.leader, "-n", loadgen, "-url", url,
		"-fresh", fmt.Sprint(fresh), "-keepalive", fmt.Sprint(keepAlive)))
}

// runLoad starts a loadgen command; stop ends it and reads its result.
func runLoad(t *testing.T, cmd *exec.Cmd) *load {
	t.Helper()
	l := &load{cmd: cmd}
	l.cmd.Args = append(l.cmd.Args, "-report", "50ms")
	l.cmd.Stdout = &l.out
	l.cmd.Stderr = &l.progress
	// A killed test must not leave it running, nor a test that fails
	// before stop (one did, at 14% of a core each, for as long as the
	// machine ran).
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.cmd.Process.Kill() // gone already after stop: nothing to kill
	})
	return l
}

type loadResult struct {
	OK       int64    `json:"ok"`
	Refused  int      `json:"refused"`
	Failures []string `json:"failures"`
}

func (l *load) stop(t *testing.T) loadResult {
	t.Helper()
	l.cmd.Process.Signal(syscall.SIGTERM)
	l.cmd.Wait()
	var r loadResult
	if err := json.Unmarshal(l.out.Bytes(), &r); err != nil {
		t.Fatalf("loadgen: %v: %q\n%s", err, l.out.String(), l.progress.String())
	}
	return r
}

// answered is how many requests loadgen last said were answered.
func (l *load) answered() int64 {
	lines := strings.Split(strings.TrimSpace(l.progress.String()), "\n")
	var n int64
	fmt.Sscanf(lines[len(lines)-1], "ok %d", &n) // none yet, or not a count: 0
	return n
}

// waitAnswered waits until loadgen says n requests were answered in all:
// the load is flowing.
func (l *load) waitAnswered(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); l.answered() < n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("loadgen answered %d requests in 30 s, want %d:\n%s", l.answered(), n, l.progress.String())
		}
	}
}

func TestSystemd252(t *testing.T) {
	testsd.Container(t)
	testUnderSystemd(t, 252, "Type=notify")
}

func TestSystemd254(t *testing.T) {
	testsd.Container(t)
	testUnderSystemd(t, 254, "Type=notify-reload")
}

func TestSystemd257(t *testing.T) {
	testsd.Container(t)
	testUnderSystemd(t, 257, "Type=notify-reload")
}

func testUnderSystemd(t *testing.T, version int, wantType string) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	fs := startRootfs(version)
	t.Parallel()
	ready(t)
	b := boot(t, fs)
	if out := b.must("systemctl --version | head -1"); !strings.HasPrefix(out, fmt.Sprintf("systemd %d", version)) {
		t.Fatalf("container runs %q, want systemd %d", out, version)
	}

	// Install the .deb and the units, as a user would.
	b.copyIn(deb, "/tmp/baton.deb")
	b.must("dpkg -i /tmp/baton.deb")
	// The app's own binary, not the package's: a package upgrade replaces
	// baton's files, not the app's (needrestart below tells them apart).
	b.must("mkdir -p /opt/myapp && cp /usr/lib/baton/example-worker /opt/myapp/")
	// workers in the config file, not on the command line (which would win
	// over the file): scaling below edits it.
	b.must(`mkdir -p /etc/myapp && printf 'listen = ["app=127.0.0.1:8081"]\nworkers = 4\n' > /etc/myapp/baton.toml`)
	b.must("baton units --name myapp --listen http=127.0.0.1:8080 --watchdog 2s --ready-timeout 20s " +
		"--drain-timeout 10s --config /etc/myapp/baton.toml --metrics 127.0.0.1:9100 --install -- /opt/myapp/example-worker")
	// Installed units need no daemon-reload: on 257 they did, when baton
	// reloaded before enabling them (a warning from every systemctl).
	if out := b.must("systemctl show -p NeedDaemonReload myapp.service myapp.socket"); strings.Contains(out, "=yes") {
		t.Errorf("after baton units --install: %s", out)
	}
	svc := b.must("cat /etc/systemd/system/myapp.service")
	if !strings.Contains(svc, "\n"+wantType+"\n") {
		t.Fatalf("installed unit lacks %s:\n%s", wantType, svc)
	}
	if out, err := b.sh("systemd-analyze verify /etc/systemd/system/myapp.service /etc/systemd/system/myapp.socket"); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The default sandbox, as this systemd rates it.
	t.Logf("systemd %d: myapp.service exposure %.1f", version, b.exposure("myapp.service"))
	b.must("systemctl start myapp.socket myapp.service")

	// Socket-activated myapp starts and answers, on its .socket unit's socket
	// and on the one baton opened itself (config listen = app).
	b.must("curl -sf http://127.0.0.1:8080/ && curl -sf http://127.0.0.1:8081/")
	out := b.must("baton status myapp")
	for _, want := range []string{"systemd: myapp.service active (running)", "ready, generation 1, 4/4 ready", "http 127.0.0.1:8080 (systemd)", "app 127.0.0.1:8081 (listen)"} {
		if !strings.Contains(out, want) {
			t.Errorf("baton status myapp lacks %q:\n%s", want, out)
		}
	}

	// systemctl reload, several times, under load: nothing lost.
	l := b.startLoad("http://127.0.0.1:8080/")
	for gen := 2; gen <= 4; gen++ {
		b.must("systemctl reload myapp")
		if st := b.status(); st.Generation != gen || st.Ready != 4 {
			t.Fatalf("after reload %d: %+v", gen-1, st)
		}
	}

	// A broken deploy: systemctl reload fails, the old workers keep serving,
	// the journal says why.
	b.must(`cd /opt/myapp && mv example-worker example-worker.good && printf '#!/bin/sh\necho broken deploy: cannot open database >&2\nexit 1\n' > example-worker && chmod +x example-worker`)
	before := b.status()
	if out, err := b.sh("systemctl reload myapp"); err == nil {
		t.Fatalf("systemctl reload of a broken worker succeeded:\n%s", out)
	}
	if st := b.status(); st.Generation != before.Generation || st.Ready != 4 || st.Workers[0].PID != before.Workers[0].PID {
		t.Fatalf("after the failed reload: %+v, before: %+v", st, before)
	}
	journal := b.must("journalctl -u myapp --no-pager")
	for _, want := range []string{"rollout failed", "broken deploy: cannot open database"} {
		if !strings.Contains(journal, want) {
			t.Errorf("journalctl -u myapp lacks %q", want)
		}
	}
	b.must("cd /opt/myapp && mv example-worker.good example-worker && systemctl reload myapp")

	// Scaling, under the same load: workers edited in the configuration and
	// systemctl reload (either unit type), then baton scale.
	b.must(`printf 'listen = ["app=127.0.0.1:8081"]\nworkers = 6\n' > /etc/myapp/baton.toml && systemctl reload myapp`)
	if st := b.status(); st.Ready != 6 || len(st.Workers) != 6 {
		t.Fatalf("after workers = 6 and systemctl reload: %+v", st)
	}
	if out := b.must("baton scale 3 myapp"); !strings.HasPrefix(out, "3 workers serve generation") {
		t.Errorf("baton scale 3 myapp: %q", out)
	}
	if st := b.status(); st.Ready != 3 || len(st.Workers) != 3 {
		t.Fatalf("after baton scale 3 myapp: %+v", st)
	}
	b.must(`printf 'listen = ["app=127.0.0.1:8081"]\nworkers = 4\n' > /etc/myapp/baton.toml && systemctl reload myapp`)
	if st := b.status(); st.Ready != 4 || len(st.Workers) != 4 {
		t.Fatalf("after workers = 4 and systemctl reload: %+v", st)
	}
	if journal := b.must("journalctl -u myapp --no-pager"); !strings.Contains(journal, "workers changed in the configuration: the rollout scales") ||
		!strings.Contains(journal, "scaled down: stopping the workers above the new size") {
		t.Error("the journal does not say the reloads scaled")
	}
	r := l.stop(t)
	if len(r.Failures) > 0 {
		t.Errorf("%d failed requests across 6 reloads (one aborted, two scaling) and a scale (%d ok): %v", len(r.Failures), r.OK, r.Failures)
	}
	t.Logf("systemd %d: %d requests across 6 reloads (one aborted; 4 to 6 and 3 to 4 workers) and baton scale 3; %d failed", version, r.OK, len(r.Failures))

	// The metrics endpoint under the sandbox counted all that; /healthz
	// agrees with status --check.
	metrics := b.must("curl -sf http://127.0.0.1:9100/metrics")
	for _, want := range []string{"\nbaton_slots 4\n", "\nbaton_healthy 1\n", `baton_rollouts_total{kind="reload",result="failed"} 1`,
		`baton_rollouts_total{kind="scale",result="ok"} 1`, `baton_new_worker_failures_total{cause="exit"} `} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, metrics)
		}
	}
	if out := b.must("curl -sf http://127.0.0.1:9100/healthz"); !strings.HasPrefix(out, "ok: 4/4 ready") {
		t.Errorf("/healthz: %q", out)
	}

	// Journal fields: a slot's lines, and baton logs following them.
	lines := strings.Split(strings.TrimSpace(b.must("journalctl -u myapp BATON_WORKER=1 -o json --no-pager")), "\n")
	for _, line := range lines {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || e["BATON_WORKER"] != "1" {
			t.Errorf("journalctl BATON_WORKER=1 gave %s", line)
		}
	}
	if len(lines) < 2 {
		t.Errorf("journalctl BATON_WORKER=1: %d entries", len(lines))
	}
	// Its stderr too goes to the file: on the pipe of this command it kept
	// the command waiting for its end, 10 s.
	b.must("(timeout 10 baton logs -f -n 0 myapp > /tmp/follow.log 2>&1 &) ; sleep 1; systemctl reload myapp; sleep 1")
	follow := b.waitFor("baton logs -f shows the rollout", "grep -q 'rollout done' /tmp/follow.log && cat /tmp/follow.log", 10*time.Second)
	if !strings.Contains(follow, " w1 ") || !strings.Contains(follow, "baton ") {
		t.Errorf("baton logs -f output lacks worker or baton columns:\n%s", follow)
	}

	// A worker that stops pinging its watchdog is replaced.
	hang := b.must("curl -sf http://127.0.0.1:8080/hang")
	var slot, pid int
	if _, err := fmt.Sscanf(hang, "slot %d pid %d", &slot, &pid); err != nil {
		t.Fatalf("/hang answered %q", hang)
	}
	b.waitFor("the hung worker replaced", fmt.Sprintf(
		"baton status --json myapp | tr -d ' \\n' | grep -q '\"slot\":%d,\"pid\":' && ! baton status --json myapp | grep -q '\"pid\": %d,'", slot, pid), 20*time.Second)
	if !strings.Contains(b.must("journalctl -u myapp --no-pager"), "worker watchdog expired") {
		t.Error("no watchdog event in the journal")
	}

	// kill -9 of baton: systemd restarts it; the .socket unit's socket and the
	// one in the FD store both keep queueing connections: none refused.
	b.waitFor("4 ready workers", "baton status myapp | grep -q '4/4 ready'", 20*time.Second)
	l80, l81 := b.startLoad("http://127.0.0.1:8080/"), b.startLoad("http://127.0.0.1:8081/")
	l80.waitAnswered(t, 100) // load flowing before the kill
	l81.waitAnswered(t, 100)
	old := strings.TrimSpace(b.must("systemctl show -p MainPID --value myapp"))
	b.must("kill -9 " + old)
	b.waitFor("systemd's restart of baton", fmt.Sprintf(
		"p=$(systemctl show -p MainPID --value myapp); [ \"$p\" != 0 ] && [ \"$p\" != %s ] && baton status myapp | grep -q '4/4 ready'", old), 30*time.Second)
	l80.waitAnswered(t, l80.answered()+100) // load flowing after the restart
	l81.waitAnswered(t, l81.answered()+100)
	for port, l := range map[int]*load{8080: l80, 8081: l81} {
		r := l.stop(t)
		if r.Refused > 0 {
			t.Errorf("port %d: %d connections refused across kill -9 and restart", port, r.Refused)
		}
		t.Logf("systemd %d, port %d, kill -9: %d answered, %d lost in flight in killed workers, %d refused", version, port, r.OK, len(r.Failures), r.Refused)
	}
	if !strings.Contains(b.must("journalctl -u myapp --no-pager"), "listener back from the FD store, not re-bound") {
		t.Error("the restarted baton did not get its own socket back from the FD store")
	}
	st := b.status()
	for _, l := range st.Listeners {
		if l.Name == "app" && l.Source != "fd store" {
			t.Errorf("listener app after the restart: %+v", l)
		}
	}

	plainWorkerSurvivesKill9(t, b, version)
	contribWorkersUnderSandbox(t, b, version)
	releaseDeploysUnderSandbox(t, b, version)
	recycleUnderSandbox(t, b, version)
	packageUpgrade(t, b, version)

	// Removal leaves the running service running, and says so; purge
	// leaves none of the package's files.
	out = b.must("dpkg -r baton")
	if !strings.Contains(out, "keep running on the removed binary") || !strings.Contains(out, "myapp.service") {
		t.Errorf("dpkg -r baton does not say myapp keeps running:\n%s", out)
	}
	b.must("systemctl is-active myapp.service && curl -sf http://127.0.0.1:8080/")
	b.must("dpkg --purge baton")
	if out, err := b.sh("ls -d /usr/bin/baton /etc/needrestart/conf.d/baton.conf /usr/share/doc/baton /usr/lib/baton 2>/dev/null"); err == nil || out != "" {
		t.Errorf("files left after dpkg --purge: %s", out)
	}

	// systemctl stop leaves nothing.
	b.must("systemctl stop myapp.service myapp.socket")
	if out, err := b.sh("pgrep -af '/opt/myapp/example-worker|baton run'"); err == nil {
		t.Errorf("processes left after systemctl stop:\n%s", out)
	}
	if out, _ := b.sh("systemctl is-active myapp.service"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("myapp.service is %q after stop", out)
	}
}

// plainWorkerSurvivesKill9: kill -9 of baton while plain Go workers (no
// SIGPIPE handling, http.Server.Shutdown) hold slow requests. They drain
// on their parent-death signal and log as they go; their output pipes are
// in the FD store, so no log line kills them: every request is answered,
// and the restarted baton journals each old worker's last line with its
// slot and generation.
func plainWorkerSurvivesKill9(t *testing.T, b *box, version int) {
	b.copyIn(plain, "/usr/local/bin/plainworker")
	b.must("baton units --name plain --listen http=127.0.0.1:8090 --workers 3 --drain-timeout 10s --lame-duck 6s --install -- /usr/local/bin/plainworker 300ms")
	b.must("systemctl start plain.socket plain.service")
	b.waitFor("plain ready", "baton status plain | grep -q '3/3 ready'", 20*time.Second)
	st := b.statusOf("plain")
	l := b.startLoadOf("http://127.0.0.1:8090/", 9, 0) // fresh connections: each request's fate is its own
	l.waitAnswered(t, 20)                              // 300 ms each: the workers hold some when baton is killed
	old := strings.TrimSpace(b.must("systemctl show -p MainPID --value plain"))
	b.must("kill -9 " + old)
	b.waitFor("systemd's restart of baton", fmt.Sprintf(
		"p=$(systemctl show -p MainPID --value plain); [ \"$p\" != 0 ] && [ \"$p\" != %s ] && baton status plain | grep -q '3/3 ready'", old), 30*time.Second)
	l.waitAnswered(t, l.answered()+20)
	r := l.stop(t)
	// A worker killed by SIGPIPE loses every request it held; Shutdown's
	// own race (golang/go#75591) may drop one fresh connection per worker.
	if r.Refused > 0 || len(r.Failures) > len(st.Workers) {
		t.Errorf("kill -9 with plain Go workers: %d refused, %d failed: %v", r.Refused, len(r.Failures), r.Failures)
	} else if len(r.Failures) > 0 {
		t.Logf("kill -9 with plain Go workers: %d dropped by http.Server.Shutdown's own race: %v", len(r.Failures), r.Failures)
	}
	for _, w := range st.Workers {
		b.waitFor(fmt.Sprintf("worker %d's last line in the journal", w.PID), fmt.Sprintf(
			"journalctl -u plain --no-pager -o verbose BATON_WORKER_PID=%d | grep -q 'MESSAGE=.*drained: <nil>'", w.PID), 10*time.Second)
		entry := b.must(fmt.Sprintf("journalctl -u plain --no-pager -o json BATON_WORKER_PID=%d | grep 'drained: <nil>'", w.PID))
		var e map[string]any
		if json.Unmarshal([]byte(entry), &e) != nil || e["BATON_WORKER"] != fmt.Sprint(w.Slot) || e["BATON_GENERATION"] != "1" || e["_PID"] == old {
			t.Errorf("worker %d's last line: %s", w.PID, entry)
		}
	}
	if out, _ := b.sh("journalctl -u plain --no-pager | grep -c 'SIGPIPE\\|signal: broken pipe'"); strings.TrimSpace(out) != "0" {
		t.Errorf("a plain worker died of SIGPIPE:\n%s", b.must("journalctl -u plain --no-pager"))
	}
	t.Logf("systemd %d, plain Go workers, kill -9: %d answered, %d failed, none refused; each old worker's last line journaled by the restarted baton", version, r.OK, len(r.Failures))
	stopKeepsItsOrder(t, b, "plain", "http://127.0.0.1:8090/")
	b.must("systemctl stop plain.socket")
}

// stopKeepsItsOrder: systemctl stop of a unit with a lame duck runs
// `baton stop` (ExecStop=) first, so every worker serves through the lame
// duck, the same pids, and drains on baton's word; none exits unasked and
// none is restarted. KillMode=control-group's SIGTERM alone would reach
// the workers with baton's: they would stop serving at once, and baton
// would restart them as crashed.
func stopKeepsItsOrder(t *testing.T, b *box, unit, url string) {
	before := b.statusOf(unit)
	cursor := b.must("journalctl -u " + unit + " -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")
	// One exec for what must happen inside the lame duck (6 s).
	b.must(fmt.Sprintf(`systemctl stop --no-block %[1]s.service
		for i in $(seq 200); do baton status --check %[1]s 2>&1 | grep -q 'lame duck' && break; sleep 0.02; done
		baton status --json %[1]s > /tmp/during.json; curl -sf -o /dev/null %[2]s`, unit, url))
	// (systemctl's warnings, such as 257's "changed on disk", stay out of
	// the JSON.)
	during := b.must("cat /tmp/during.json")
	st := parseStatus(t, during)
	if st.State != "stopping" || st.LameDuckSeconds <= 0 {
		t.Fatalf("%s: status taken after the lame duck (state %q, %.1fs of it left): the test proves nothing\n%s", unit, st.State, st.LameDuckSeconds, during)
	}
	if fmt.Sprint(st.Workers) != fmt.Sprint(before.Workers) || st.Ready != len(before.Workers) {
		t.Errorf("%s: in the lame duck, workers %v (%d ready), want the same %v all ready", unit, st.Workers, st.Ready, before.Workers)
	}
	b.waitFor(unit+" stopped", "systemctl is-active "+unit+".service | grep -qx inactive", 30*time.Second)
	journal := b.must("journalctl -u " + unit + " --no-pager --after-cursor '" + strings.TrimSpace(cursor) + "'")
	if !strings.Contains(journal, `stop requested by="baton stop"`) {
		t.Errorf("%s: the stop was not baton stop's (ExecStop=):\n%s", unit, journal)
	}
	if strings.Contains(journal, "worker exited unexpectedly") {
		t.Errorf("%s: a worker exited unasked during the stop (systemd's SIGTERM?):\n%s", unit, journal)
	}
	if t.Failed() {
		return
	}
	t.Logf("%s: systemctl stop kept its order: %d workers served through the lame duck (%.1fs left when looked at), then drained", unit, st.Ready, st.LameDuckSeconds)
}

// repack makes a copy of the package under test with another version: its
// binary built again with that version (and, if protocol is set, saying it
// speaks that handoff protocol), its control file saying so.
func repack(tmp, version, protocol string) (string, error) {
	root := filepath.Join(tmp, "deb-"+version)
	run := func(name string, args ...string) error {
		cmd := exec.Command(name, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
		}
		return nil
	}
	if err := run("dpkg-deb", "-R", deb, root); err != nil {
		return "", err
	}
	ldflags := "-X main.version=" + version
	if protocol != "" {
		ldflags += " -X main.handoffProtocol=" + protocol
	}
	if err := run("go", "build", "-ldflags", ldflags, "-o", filepath.Join(root, "usr/bin/baton"), "../cmd/baton"); err != nil {
		return "", err
	}
	if err := run("sed", "-i", "s/^Version: .*/Version: "+version+"/", filepath.Join(root, "DEBIAN/control")); err != nil {
		return "", err
	}
	// md5sums lists the binary's old sum; dpkg -i does not check it, and
	// debsums would rightly complain: write it anew.
	if err := run("sh", "-c", "cd "+root+" && find usr etc -type f -exec md5sum {} + > DEBIAN/md5sums"); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "baton_"+version+".deb")
	return out, run("dpkg-deb", "-b", root, out)
}

// packageUpgrade: dpkg -i of a newer package while myapp serves under load
// re-executes its supervisor in place (same MainPID, the new file, workers
// kept, no request lost); a package whose binary speaks another handoff
// protocol leaves it running its old binary and says what to do.
func packageUpgrade(t *testing.T, b *box, version int) {
	for _, d := range []string{debV2, debOther} {
		b.copyIn(d, "/tmp/"+filepath.Base(d))
	}
	b.waitFor("4 ready workers", "baton status myapp | grep -q '4/4 ready'", 20*time.Second)
	before := b.status()
	mainPID := strings.TrimSpace(b.must("systemctl show -p MainPID --value myapp"))
	counters := rolloutCounters(b.must("curl -sf http://127.0.0.1:9100/metrics"))
	l := b.startLoad("http://127.0.0.1:8080/")
	l.waitAnswered(t, 100)
	out := b.must("dpkg -i /tmp/" + filepath.Base(debV2))
	if !strings.Contains(out, "myapp.service (pid "+mainPID+"): upgraded in place to version 0.1.1") {
		t.Errorf("dpkg -i of 0.1.1 did not upgrade myapp in place:\n%s", out)
	}
	l.waitAnswered(t, l.answered()+100)
	r := l.stop(t)
	if len(r.Failures) > 0 || r.Refused > 0 {
		t.Errorf("dpkg -i under load: %d failed, %d refused: %v", len(r.Failures), r.Refused, r.Failures)
	}
	if now := strings.TrimSpace(b.must("systemctl show -p MainPID --value myapp")); now != mainPID {
		t.Errorf("MainPID %s after the package upgrade, was %s", now, mainPID)
	}
	if exe := strings.TrimSpace(b.must("readlink /proc/" + mainPID + "/exe")); exe != "/usr/bin/baton" {
		t.Errorf("/proc/MAINPID/exe is %q after the package upgrade", exe)
	}
	var st struct {
		Version     string `json:"version"`
		ExeReplaced bool   `json:"exe_replaced"`
		Workers     []struct {
			PID int `json:"pid"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(b.must("baton status --json myapp")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "0.1.1" || st.ExeReplaced || len(st.Workers) != 4 || st.Workers[0].PID != before.Workers[0].PID {
		t.Errorf("status after the package upgrade: %+v (workers before: %+v)", st, before.Workers)
	}
	t.Logf("systemd %d: dpkg -i of 0.1.1 under load: %d requests, none failed; MainPID %s kept, now runs 0.1.1", version, r.OK, mainPID)
	// The upgraded image serves the metrics on the listener it was handed,
	// with the counters so far.
	metrics := b.must("curl -sf http://127.0.0.1:9100/metrics")
	if want := `baton_info{version="0.1.1",exe="/usr/bin/baton"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("/metrics after the package upgrade lacks %q", want)
	}
	if now := rolloutCounters(metrics); now != counters || !strings.Contains(now, "baton_rollouts_total") {
		t.Errorf("rollout counters after the package upgrade:\n%s\nbefore:\n%s", now, counters)
	}
	// Re-executed in place, myapp runs no replaced binary: needrestart has
	// nothing to restart, whatever its configuration.
	if out := b.must("needrestart -b -r l 2>&1"); strings.Contains(out, "myapp.service") {
		t.Errorf("needrestart wants myapp restarted after the in-place upgrade:\n%s", out)
	}

	// Another handoff protocol: not upgraded, still serving, told.
	out = b.must("dpkg -i /tmp/" + filepath.Base(debOther))
	if !strings.Contains(out, "myapp.service (pid "+mainPID+"): not upgraded") || !strings.Contains(out, "systemctl restart myapp.service") ||
		!strings.Contains(out, "protocol 99") {
		t.Errorf("dpkg -i of a package of another protocol:\n%s", out)
	}
	if err := json.Unmarshal([]byte(b.must("baton status --json myapp")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Version != "0.1.1" || !st.ExeReplaced {
		t.Errorf("status after a refused upgrade: %+v", st)
	}
	if human := b.must("baton status myapp"); !strings.Contains(human, "was replaced on disk since it started") {
		t.Errorf("baton status does not say the binary was replaced:\n%s", human)
	}

	// needrestart (Ubuntu servers have it) looks for processes running
	// replaced binaries and restarts their services. myapp's supervisor
	// still runs the replaced baton; without the package's answer
	// needrestart would restart myapp, with it, it leaves myapp alone.
	const nr = "needrestart -b -r l 2>&1"
	b.must("mv /etc/needrestart/conf.d/baton.conf /tmp/baton.conf")
	without := b.must(nr)
	b.must("mv /tmp/baton.conf /etc/needrestart/conf.d/baton.conf")
	with := b.must(nr)
	if !strings.Contains(without, "NEEDRESTART-SVC: myapp.service") {
		t.Errorf("needrestart without baton's configuration does not want myapp restarted: the check proves nothing:\n%s", without)
	}
	if strings.Contains(with, "myapp.service") {
		t.Errorf("needrestart wants myapp restarted although baton's package told it not to:\n%s", with)
	}
	t.Logf("systemd %d: needrestart lists myapp.service for a restart without /etc/needrestart/conf.d/baton.conf, not with it", version)
	b.must("curl -sf http://127.0.0.1:8080/")
}

// contribWorkersUnderSandbox runs the Python examples of contrib/ (Debian's
// gunicorn, python3-systemd and uvicorn) as users would, with the units
// `baton units --install` writes for this systemd, under the default
// sandbox: each starts, serves, rolls out on systemctl reload, and rates
// 2.5 or lower. The Node example too where the container's Node has the
// ABI of the host's, for which scripts/test built its unix-dgram (Debian
// 13's Node 20 and the host's 20 here; Debian 12 has no Node in the root
// filesystem).
func contribWorkersUnderSandbox(t *testing.T, b *box, version int) {
	examples, err := os.ReadFile("../contrib/examples.txt")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(examples)) {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 3 || strings.HasPrefix(parts[0], "#") {
			continue
		}
		name, flags, command := parts[0], parts[1], parts[2]
		if name == "example-worker" {
			continue // it runs above
		}
		if name == "node" {
			host, _ := exec.Command("node", "-p", "process.versions.modules").Output()
			guest, _ := b.sh("node -p process.versions.modules")
			if len(host) == 0 || strings.TrimSpace(string(host)) != strings.TrimSpace(guest) {
				t.Logf("systemd %d: Node example skipped: the host's unix-dgram is built for Node ABI %q, the container has %q",
					version, strings.TrimSpace(string(host)), strings.TrimSpace(guest))
				continue
			}
		}
		b.copyIn("../contrib/"+name, "/srv/"+name)
		b.must("baton units --name " + name + " " + flags + " --install -- " + command)
		b.must("systemctl start " + name + ".socket " + name + ".service")
		_, addr, _ := strings.Cut(flags[strings.Index(flags, "--listen ")+len("--listen "):], "=")
		addr, _, _ = strings.Cut(addr, " ")
		b.waitFor(name+" ready", "baton status --json "+name+" | grep -q '\"state\": \"ready\"'", 30*time.Second)
		b.must("curl -sf http://" + addr + "/")
		b.must("systemctl reload " + name)
		b.must("curl -sf http://" + addr + "/ && baton status --json " + name + " | grep -q '\"generation\": 2'")
		exposure := b.exposure(name + ".service")
		b.must("systemctl stop " + name + ".service " + name + ".socket")
		t.Logf("systemd %d: %s under the default sandbox: served, rolled out, exposure %.1f", version, name, exposure)
	}
}

// rolloutCounters is the baton_rollouts_total samples of a scrape.
func rolloutCounters(metrics string) string {
	var lines []string
	for line := range strings.Lines(metrics) {
		if strings.HasPrefix(line, "baton_rollouts_total{") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "")
}

// releaseDeploysUnderSandbox deploys by release directories as Capistrano
// and Deployer do, under the sandboxed unit `baton units --directory
// /srv/myrel/current` writes, with Debian's gunicorn and contrib/deploy's
// app, which reads its VERSION file by a relative path: each step reads
// what every worker serves (release, directory, environment), under load.
func releaseDeploysUnderSandbox(t *testing.T, b *box, version int) {
	b.copyIn("../contrib/deploy/app.py", "/tmp/release-app.py")
	b.must(`set -e; for v in v1 v2 v3; do mkdir -p /srv/myrel/releases/$v; cp /tmp/release-app.py /srv/myrel/releases/$v/app.py; echo $v > /srv/myrel/releases/$v/VERSION; done
mkdir -p /srv/myrel/shared; printf '# settings\nGREETING=hello\nDATABASE_URL=postgres://app:s3cr3t-pw@db/app\n' > /srv/myrel/shared/app.env; ln -sfn releases/v1 /srv/myrel/current`)
	// The file holds a secret: root's, readable by the group the sandboxed
	// service (a dynamic user) is given, as docs/deploying.md says.
	b.must(`set -e; groupadd --system myrel-secrets; chgrp myrel-secrets /srv/myrel/shared/app.env; chmod 0640 /srv/myrel/shared/app.env
mkdir -p /etc/systemd/system/myrel.service.d; printf '[Service]\nSupplementaryGroups=myrel-secrets\n' > /etc/systemd/system/myrel.service.d/secrets.conf`)
	b.must("baton units --name myrel --listen http=127.0.0.1:8070 --workers 2 --directory /srv/myrel/current " +
		"--env-file /srv/myrel/shared/app.env --restart-backoff 50ms..1s --install -- /usr/bin/gunicorn --preload --workers 1 app:app")
	if unit := b.must("cat /etc/systemd/system/myrel.service"); !strings.Contains(unit, "--directory /srv/myrel/current") {
		t.Fatalf("the unit does not pass --directory:\n%s", unit)
	}
	b.must("systemctl start myrel.socket myrel.service")
	b.waitFor("myrel ready", "baton status myrel | grep -q '2/2 ready'", 30*time.Second)
	point := func(v string) {
		b.must("cd /srv/myrel && ln -sfn releases/" + v + " current.new && mv -T current.new current")
	}
	// serves checks that both slots answer from release v with greeting g.
	serves := func(v, g string) {
		t.Helper()
		b.drained("myrel")
		want := fmt.Sprintf("release %s dir /srv/myrel/releases/%s greeting %s slot ", v, v, g)
		seen := map[string]bool{}
		for i := 0; i < 200 && len(seen) < 2; i++ {
			out := b.must("curl -sf http://127.0.0.1:8070/")
			if !strings.HasPrefix(out, want) {
				t.Fatalf("systemd %d: a worker answers %q, want %q...", version, out, want)
			}
			seen[strings.Fields(strings.TrimPrefix(out, want))[0]] = true
		}
		if len(seen) < 2 {
			t.Fatalf("systemd %d: only slots %v answered", version, seen)
		}
	}
	// crash stops slot's gunicorn behind baton's back (SIGTERM: it finishes
	// its requests) and waits for its restart.
	crash := func(slot int) {
		t.Helper()
		pid := strings.TrimSpace(b.must(fmt.Sprintf("baton status --json myrel | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"workers\"][%d][\"pid\"])'", slot)))
		b.must("kill -TERM " + pid)
		b.waitFor("slot restarted", fmt.Sprintf("baton status --json myrel | python3 -c 'import json,sys; w=json.load(sys.stdin)[\"workers\"][%d]; sys.exit(not (w[\"state\"]==\"ready\" and str(w[\"pid\"])!=\"%s\"))'", slot, pid), 30*time.Second)
	}
	serves("v1", "hello")
	l := b.startLoadOf("http://127.0.0.1:8070/", 2, 2)

	point("v2")
	b.must("systemctl reload myrel")
	serves("v2", "hello")
	crash(0)
	serves("v2", "hello")
	point("v3") // moved, not reloaded: a crash restart stays in v2
	crash(1)
	serves("v2", "hello")
	b.must("rm -rf /srv/myrel/releases/v1") // the release the service started in
	b.must(`printf 'GREETING=bonjour\nDATABASE_URL=postgres://app:s3cr3t-pw@db/app\n' > /srv/myrel/shared/app.env && systemctl reload myrel`)
	serves("v3", "bonjour")
	b.must(`printf 'GREETING="open\n' > /srv/myrel/shared/app.env`)
	if out, err := b.sh("systemctl reload myrel"); err == nil {
		t.Errorf("systemd %d: reload with a broken environment file succeeded:\n%s", version, out)
	}
	b.waitFor("the reason in the journal", "journalctl -u myrel --no-pager | grep -q 'app.env:1: .*never closed'", 10*time.Second)
	serves("v3", "bonjour")
	b.must("baton rollback myrel")
	serves("v2", "hello")
	if out := b.must("journalctl -u myrel --no-pager -o verbose; baton status --json myrel; baton status myrel"); strings.Contains(out, "s3cr3t") {
		t.Errorf("systemd %d: the environment file's secret shows in the journal or status", version)
	}
	r := l.stop(t)
	if r.Refused > 0 || len(r.Failures) > 0 || r.OK == 0 {
		t.Errorf("systemd %d: release deploys: %d ok, %d refused, failed: %v", version, r.OK, r.Refused, r.Failures)
	}
	t.Logf("systemd %d: release directories under the sandbox: 2 deploys, 2 crash restarts, a pruned release, a refused environment file, a rollback; %d requests, none failed", version, r.OK)
	b.must("systemctl stop myrel.service myrel.socket")
}

// recycleUnderSandbox: gunicorn (a pre-fork server: the master and its
// worker make one tree) serving contrib/deploy's app, which keeps what
// ?leak= asks for, under the sandboxed unit with --recycle-memory: under
// load that leaks, baton recycles it again and again, successor first,
// and no request fails.
func recycleUnderSandbox(t *testing.T, b *box, version int) {
	b.must("baton units --name leaky --listen http=127.0.0.1:8071 --workers 2 --directory /srv/myrel/releases/v2 " +
		"--recycle-memory 60M --install -- /usr/bin/gunicorn --workers 1 app:app")
	b.must("systemctl start leaky.socket leaky.service")
	b.waitFor("leaky ready", "baton status leaky | grep -q '2/2 ready'", 30*time.Second)
	// Some 10 MB a second per worker: the ceiling is reached in seconds,
	// and the machine is never at risk. Successors cross it within their
	// warm-up, so each slot waits out a back-off (30 s, then 60 s) after
	// its first recycle: the third comes after 40 s, or 2 minutes if the
	// load reaches one slot only.
	l := b.startLoadOf("http://127.0.0.1:8071/?leak=65536", 1, 1)
	recycled := `baton status --json leaky | python3 -c 'import json,sys; sys.exit((json.load(sys.stdin)["totals"]["recycles"] or {}).get("memory",0) < 3)'`
	for deadline := time.Now().Add(150 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if _, err := b.sh(recycled); err == nil {
			break
		}
		if time.Now().After(deadline) {
			out, _ := b.sh("baton status leaky; baton status --json leaky; journalctl -u leaky --no-pager | tail -40")
			t.Fatalf("systemd %d: never 3 recycles by memory:\n%s", version, out)
		}
	}
	r := l.stop(t)
	if r.Refused > 0 || len(r.Failures) > 0 || r.OK == 0 {
		t.Errorf("systemd %d: recycling gunicorn by memory: %d ok, %d refused, failed: %v", version, r.OK, r.Refused, r.Failures)
	}
	b.must("journalctl -u leaky --no-pager | grep -q 'worker recycled: its successor is ready, it drains'")
	if out := b.must("baton status leaky"); !strings.Contains(out, "workers recycled (memory") {
		t.Errorf("systemd %d: status does not count the recycles:\n%s", version, out)
	}
	t.Logf("systemd %d: gunicorn recycled by memory under the sandbox, 3 times or more; %d requests, none failed", version, r.OK)
	b.must("systemctl stop leaky.service leaky.socket")
}
