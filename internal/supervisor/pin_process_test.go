package supervisor_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

// releaseRoot makes root/releases/v1 and v2, each with bin/app, a script
// that records what its worker runs (its own release, its working
// directory, the RELEASE its environment file set) in out/gen-G.S, then
// execs the example worker; and release.env, RELEASE=v1 or v2. current
// points to v1.
func releaseRoot(t *testing.T) (root, out string) {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(root, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1", "v2"} {
		dir := filepath.Join(root, "releases", v)
		if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		app := fmt.Sprintf("#!/bin/sh\nprintf 'prog=%s dir=%%s env=%%s\\n' \"$(pwd -P)\" \"$RELEASE\" > %s/gen-$BATON_GENERATION.$BATON_WORKER\nexec %s\n",
			v, out, bins.Worker)
		if err := os.WriteFile(filepath.Join(dir, "bin", "app"), []byte(app), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "release.env"), []byte("RELEASE="+v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("releases/v1", filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	return root, out
}

// TestOneGenerationOneRelease: `current` flips between two releases in a
// tight loop while baton reloads, again and again, for a few seconds. Each
// generation's worker reports what it runs (the release its program
// belongs to, its working directory, the release its environment file
// came from): all three are one release, in every generation, and status
// shows the directory and program of one release too. The program and the
// environment file are named through the link (/…/current/bin/app,
// /…/current/release.env), as a unit written for a release-directory
// deploy names them.
func TestOneGenerationOneRelease(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	root, out := releaseRoot(t)
	current := filepath.Join(root, "current")
	s := startService(t, fmt.Sprintf("directory = %q\ncommand = [%q]\nenv-file = [%q]\n",
		current, current+"/bin/app", current+"/release.env"), "--workers", "1")

	// The flipper: ln -sfn's rename, as a deploy moves the link.
	var stop atomic.Bool
	var flips atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			if err := testsd.Point(root, []string{"v2", "v1"}[i%2]); err != nil {
				t.Error(err)
				return
			}
			flips.Add(1)
		}
	})
	var gens []int
	deadline := time.Now().Add(4 * time.Second)
	for len(gens) < 150 && time.Now().Before(deadline) {
		r, err := reload(ctx, s.ctl)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("reload %d: %v", len(gens)+1, err)
		}
		gens = append(gens, r.To)
	}
	stop.Store(true)
	wg.Wait()

	seen := map[string]int{}
	var mixed []string
	for _, g := range gens {
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("gen-%d.0", g)))
		if err != nil {
			t.Fatalf("generation %d's worker left no record: %v", g, err)
		}
		var prog, dir, env string
		if _, err := fmt.Sscanf(string(b), "prog=%s dir=%s env=%s", &prog, &dir, &env); err != nil {
			t.Fatalf("generation %d's record %q: %v", g, b, err)
		}
		if dir != filepath.Join(root, "releases", prog) || env != prog {
			mixed = append(mixed, fmt.Sprintf("generation %d: program of %s, directory %s, environment of %s", g, prog, dir, env))
		}
		seen[prog]++
	}
	t.Logf("%d reloads, %d flips of current; programs run: %v; %d generations of two releases", len(gens), flips.Load(), seen, len(mixed))
	if len(mixed) > 0 {
		t.Errorf("%d of %d generations hold two releases:\n%s", len(mixed), len(gens), strings.Join(mixed[:min(len(mixed), 10)], "\n"))
	}
	// The test means something only if the link moved between reloads.
	if seen["v1"] == 0 || seen["v2"] == 0 {
		t.Fatalf("premise: every generation ran the same release (%v): the flips never landed between two reloads", seen)
	}
	st := testsd.WaitStatus(ctx, t, s.ctl, "the last generation serving", func(st control.Status) bool { return true })
	for _, g := range st.Generations {
		rel := strings.TrimPrefix(g.Directory, root+"/releases/")
		if len(g.Command) == 0 || g.Command[0] != filepath.Join(g.Directory, "bin", "app") || strings.Contains(rel, "/") {
			t.Errorf("status: generation %d (%s): directory %s, command %q: not one release", g.Generation, g.Role, g.Directory, g.Command)
		}
	}
}

// TestEnvironmentTooLargeToExec: a 200 KB value (execve(2) takes 128 KiB
// in one variable) fails the reload with the reason (the key, the file and
// line, the limit) while the old generation keeps serving; at a first
// start it makes baton exit 1 naming it, rather than retry for ever.
func TestEnvironmentTooLargeToExec(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	dir := testsd.ShortDir(t)
	envFile := filepath.Join(dir, "app.env")
	if err := os.WriteFile(envFile, []byte("GREETING=hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startService(t, fmt.Sprintf("command = [%q]\nenv-file = [%q]\n", bins.Worker, envFile), "--workers", "1")
	big := []byte("GREETING=hello\nBIG=" + strings.Repeat("x", 200<<10) + "\n")
	if err := os.WriteFile(envFile, big, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := reload(ctx, s.ctl)
	// MAX_ARG_STRLEN is 32 pages.
	want := fmt.Sprintf("--env-file %s:2: BIG is 204804 bytes with its value, more than exec(2) takes in one variable (%d bytes", envFile, 32*os.Getpagesize())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("reload: %v\nwant an error with %q", err, want)
	}
	st := testsd.Status(ctx, t, s.ctl)
	if len(st.Workers) != 1 || st.Workers[0].Generation != 1 || st.Workers[0].State != "ready" {
		t.Errorf("after the failed reload: %+v, want generation 1 serving", st.Workers)
	}

	// A first start with it: exit 1, the reason said.
	svc := s.sd.Start(bins, []*activation.Listener{s.web}, nil,
		"run", "--control", filepath.Join(dir, "c2.sock"), "--env-file", envFile, "--", bins.Worker)
	exited := timeout(t, 10*time.Second)
	if code := svc.Wait(exited, t); code != 1 {
		t.Errorf("baton exited %d, want 1", code)
	}
	if out := svc.Output.String(); !strings.Contains(out, want) {
		t.Errorf("baton's output does not say why:\n%s", out)
	}
}

// TestCrashRestartIntoRemovedRelease: the release a generation was pinned
// to is deleted, then its worker crashes: the restart fails, and the
// journal and status say which directory is gone and what to do, while
// the slot waits in its backoff.
func TestCrashRestartIntoRemovedRelease(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	root, _ := releaseRoot(t)
	current := filepath.Join(root, "current")
	s := startService(t, fmt.Sprintf("directory = %q\ncommand = [%q]\n", current, current+"/bin/app"),
		"--restart-backoff", "50ms..1s", "--workers", "1")
	v1 := filepath.Join(root, "releases", "v1")
	if err := os.RemoveAll(v1); err != nil {
		t.Fatal(err)
	}
	st := testsd.Status(ctx, t, s.ctl)
	if err := unix.Kill(st.Workers[0].PID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	want := "working directory " + v1 + ": no such file or directory: the release generation 1 was pinned to is gone"
	st = testsd.WaitStatus(ctx, t, s.ctl, "the slot's reason", func(st control.Status) bool {
		return len(st.Workers) == 1 && st.Workers[0].Error != ""
	})
	if got := st.Workers[0].Error; !strings.Contains(got, want) || !strings.Contains(got, "baton rollback") {
		t.Errorf("status says %q, want %q and a way out", got, want)
	}
	s.svc.WaitOutput(ctx, t, want)
}

// TestEnvFileLinesNeverShown: a value written on the line after its key
// (here base64 with its padding, which parses as a valid key) and a
// malformed line: neither the reload's answer, nor status, nor the
// journal shows any of that text; they say the file and the line.
func TestEnvFileLinesNeverShown(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 30*time.Second)
	const secret = "c2VjcmV0LXRva2Vu" // base64 of "secret-token"
	envFile := filepath.Join(testsd.ShortDir(t), "app.env")
	if err := os.WriteFile(envFile, []byte("GREETING=hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startService(t, fmt.Sprintf("command = [%q]\nenv-file = [%q]\n", bins.Worker, envFile), "--workers", "1")

	// A value on the line after its key: TOKEN is empty, and the value's
	// text, a valid name, a key.
	if err := os.WriteFile(envFile, []byte("GREETING=hello\nTOKEN=\n"+secret+"==\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := reload(ctx, s.ctl)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if got := strings.Join(r.Changes, "; "); strings.Contains(got, secret[:8]) || !strings.Contains(got, "TOKEN") {
		t.Errorf("the reload's changes show the line's text, or not TOKEN: %s", got)
	}
	st := testsd.Status(ctx, t, s.ctl)
	for _, g := range st.Generations {
		if keys := strings.Join(g.EnvKeys, " "); strings.Contains(keys, secret[:8]) {
			t.Errorf("status: generation %d's keys show the line's text: %s", g.Generation, keys)
		}
	}
	// A malformed line, a character no key has before its '='.
	if err := os.WriteFile(envFile, []byte("GREETING=hello\nTOKEN=\n"+secret+"+/x==\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = reload(ctx, s.ctl)
	if err == nil || strings.Contains(err.Error(), secret[:8]) || !strings.Contains(err.Error(), envFile+":3: invalid key") {
		t.Errorf("reload of a malformed line: %v; want the file and line 3, none of its text", err)
	}
	s.svc.WaitOutput(ctx, t, envFile+":3: invalid key")
	if out := s.svc.Output.String(); strings.Contains(out, secret[:8]) {
		t.Errorf("the journal shows the line's text:\n%s", out)
	}
}
