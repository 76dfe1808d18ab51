package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// release makes root/releases/id/bin/serve (executable) and returns root.
func releases(t *testing.T, ids ...string) string {
	t.Helper()
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		bin := filepath.Join(root, "releases", id, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, "serve"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestPinFollowsTheSymlinkOnce(t *testing.T) {
	root := releases(t, "v1", "v2")
	current := filepath.Join(root, "current")
	if err := os.Symlink("releases/v1", current); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, command, want string
	}{
		{"relative to the directory", "bin/serve", root + "/releases/v1/bin/serve"},
		{"through the symlink", current + "/bin/serve", root + "/releases/v1/bin/serve"},
		// The file itself is not resolved: a package that re-points
		// /usr/bin/python3 is followed at the next start.
		{"a bare name through PATH", "serve", root + "/releases/v1/bin/serve"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{GenSettings: GenSettings{Command: []string{tt.command, "--port", "0"}}, Sources: Sources{Directory: current}}
			if err := pin(&cfg, "/", []string{"PATH=/nonexistent:" + current + "/bin"}); err != nil {
				t.Fatal(err)
			}
			if cfg.Directory != root+"/releases/v1" {
				t.Errorf("directory %q", cfg.Directory)
			}
			if want := []string{tt.want, "--port", "0"}; !slices.Equal(cfg.Command, want) {
				t.Errorf("command %q, want %q", cfg.Command, want)
			}
		})
	}
	// A link in the program's own place is kept: only its directories are
	// resolved.
	if err := os.Symlink("serve", filepath.Join(root, "releases/v2/bin/link")); err != nil {
		t.Fatal(err)
	}
	cfg := Config{GenSettings: GenSettings{Command: []string{current + "/../releases/v2/bin/link"}}}
	if err := pin(&cfg, root, nil); err != nil {
		t.Fatal(err)
	}
	if want := root + "/releases/v2/bin/link"; cfg.Command[0] != want || cfg.Directory != root {
		t.Errorf("command %q in %q, want %q in the start directory", cfg.Command[0], cfg.Directory, want)
	}
}

func TestPinRefuses(t *testing.T) {
	root := releases(t, "v1")
	noexec := filepath.Join(root, "releases/v1/bin/data")
	os.WriteFile(noexec, nil, 0o644)
	os.WriteFile(filepath.Join(root, "file"), nil, 0o644)
	os.Symlink("releases/pruned", filepath.Join(root, "current"))
	for _, tt := range []struct {
		name    string
		src     Sources
		command string
		want    string
	}{
		{"a pruned release", Sources{Directory: root + "/current"}, "bin/serve",
			"--directory " + root + "/current: " + root + "/releases/pruned: no such file or directory"},
		{"a file as directory", Sources{Directory: root + "/file"}, "bin/serve", root + "/file is not a directory"},
		{"a missing program", Sources{Directory: root + "/releases/v1"}, "bin/nope",
			`worker command "bin/nope": ` + root + "/releases/v1/bin/nope: no such file or directory"},
		{"a program that is not executable", Sources{Directory: root + "/releases/v1"}, "bin/data", "not executable"},
		{"not in PATH", Sources{Directory: root}, "nope", `worker command "nope": not found in PATH`},
		{"an --env without =", Sources{Env: []string{"FOO"}}, "/bin/sh", `--env "FOO": want KEY=VALUE`},
		{"an --env of an invalid name", Sources{Env: []string{"1X=y"}}, "/bin/sh", `--env "1X": not a valid variable name`},
		{"an --env that baton sets", Sources{Env: []string{"LISTEN_FDS=9"}}, "/bin/sh", "--env LISTEN_FDS: baton sets it for each worker"},
		{"a missing --env-file", Sources{EnvFiles: []string{root + "/none.env"}}, "/bin/sh", root + "/none.env"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{GenSettings: GenSettings{Command: []string{tt.command}}, Sources: tt.src}
			err := pin(&cfg, root, []string{"PATH=/usr/bin:/bin"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("pin: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestPinEnv(t *testing.T) {
	root := releases(t, "v1")
	dir := root + "/releases/v1"
	os.WriteFile(filepath.Join(root, "shared.env"), []byte("# shared\nGREETING=hello\nDB='postgres://u:pw@db/app'\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".env"), []byte("GREETING=from the release\nRELEASE=v1\n"), 0o644)
	os.WriteFile(filepath.Join(root, "reserved.env"), []byte("A=1\nNOTIFY_SOCKET=/x\n"), 0o644)
	cfg := Config{GenSettings: GenSettings{Command: []string{"/bin/sh"}}, Sources: Sources{
		Directory: dir,
		Env:       []string{"GREETING=flag", "LIST=a,b", "PATH=/usr/bin:/bin"},
		// Files win over --env and later files over earlier ones, as
		// systemd's EnvironmentFile= over Environment=; a relative file is
		// the release's; "-" makes a missing file no error.
		EnvFiles: []string{root + "/shared.env", ".env", "-" + root + "/missing.env"},
	}}
	if err := pin(&cfg, "/", nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"GREETING=from the release", "LIST=a,b", "PATH=/usr/bin:/bin", "DB=postgres://u:pw@db/app", "RELEASE=v1"}
	if diff := cmp.Diff(want, cfg.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	cfg.Sources.EnvFiles = []string{root + "/reserved.env"}
	if err := pin(&cfg, "/", nil); err == nil || err.Error() != "--env-file "+root+"/reserved.env:2: NOTIFY_SOCKET: baton sets it for each worker" {
		t.Errorf("a file that sets NOTIFY_SOCKET: %v", err)
	}
}

func TestWorkerEnvOverBatons(t *testing.T) {
	base := []string{"PATH=/usr/bin", "HOME=/root", "GREETING=baton's"}
	cfg := Config{GenSettings: GenSettings{Env: []string{"GREETING=mine", "NEW=1"}, Watchdog: 2e9}}
	got := workerEnv(base, cfg)
	want := []string{"PATH=/usr/bin", "HOME=/root", "GREETING=mine", "NEW=1", "WATCHDOG_USEC=2000000"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if base[2] != "GREETING=baton's" || len(base) != 3 {
		t.Errorf("base changed: %q", base)
	}
}

func TestChangesNeverShowValues(t *testing.T) {
	from := GenSettings{Directory: "/srv/app/releases/v1", Command: []string{"/srv/app/releases/v1/bin/serve"},
		Env: []string{"DB=postgres://u:old-secret@db", "GONE=1", "SAME=x"}}
	to := GenSettings{Directory: "/srv/app/releases/v2", Command: []string{"/srv/app/releases/v2/bin/serve"},
		Env: []string{"SAME=x", "DB=postgres://u:new-secret@db", "NEW=2"}}
	want := []string{
		"directory /srv/app/releases/v1 → /srv/app/releases/v2",
		"command /srv/app/releases/v1/bin/serve → /srv/app/releases/v2/bin/serve",
		"environment added: NEW", "environment changed: DB", "environment removed: GONE",
	}
	if diff := cmp.Diff(want, changes(from, to)); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	if changes(to, to) != nil {
		t.Errorf("no change: %q", changes(to, to))
	}
	if d := envDigest(from.Env); len(d) != 12 || d == envDigest(to.Env) || strings.Contains(d, "secret") {
		t.Errorf("digests %q and %q", d, envDigest(to.Env))
	}
	if envDigest([]string{"A=1", "B=2"}) != envDigest([]string{"B=2", "A=1"}) {
		t.Error("the digest depends on the order")
	}
}

// TestReleaseOnto: the paths that go through --directory as spelled are
// rewritten onto its one resolution; no other path is.
func TestReleaseOnto(t *testing.T) {
	r := release{given: "/srv/app/current", real: "/srv/app/releases/v2"}
	for _, tt := range []struct{ in, want string }{
		{"/srv/app/current", "/srv/app/releases/v2"},
		{"/srv/app/current/", "/srv/app/releases/v2"},
		{"/srv/app/current/bin/app", "/srv/app/releases/v2/bin/app"},
		{"//srv/app//current/./bin/app", "/srv/app/releases/v2/bin/app"},
		{"/srv/app/current/.env", "/srv/app/releases/v2/.env"},
		// Not through the directory: as they are.
		{"/srv/app/currently/bin/app", "/srv/app/currently/bin/app"},
		{"/srv/app/shared/app.env", "/srv/app/shared/app.env"},
		{"/srv/shared/current/app.env", "/srv/shared/current/app.env"}, // another link: resolved on its own
		{"/srv/app/current/../shared/x", "/srv/app/current/../shared/x"},
		{"bin/app", "bin/app"}, // relative: joined to the resolved directory by the caller
		{"/srv/app", "/srv/app"},
	} {
		if got := r.onto(tt.in); got != tt.want {
			t.Errorf("onto(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, want := r.ontoList("/srv/app/current/bin::bin:/usr/bin"), "/srv/app/releases/v2/bin::bin:/usr/bin"; got != want {
		t.Errorf("ontoList = %q, want %q", got, want)
	}
	none := release{} // no --directory: nothing to rewrite
	if got := none.onto("/srv/app/current/bin/app"); got != "/srv/app/current/bin/app" {
		t.Errorf("without a directory: %q", got)
	}
}

// TestPinDerivesFromOneLook: the program, the absolute and relative env
// files and the PATH entries through the `current` link all come from the
// release the directory resolved to, and so does the pinned PATH.
func TestPinDerivesFromOneLook(t *testing.T) {
	root := releases(t, "v1", "v2")
	current := filepath.Join(root, "current")
	if err := os.Symlink("releases/v1", current); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v1", "v2"} {
		os.WriteFile(filepath.Join(root, "releases", v, "release.env"), []byte("RELEASE="+v+"\n"), 0o644)
		os.WriteFile(filepath.Join(root, "releases", v, "local.env"), []byte("LOCAL="+v+"\n"), 0o644)
	}
	v1 := root + "/releases/v1"
	for _, tt := range []struct {
		name    string
		command string
		env     []string
	}{
		{"an absolute program through the link", current + "/bin/serve", nil},
		{"a bare program through a PATH entry naming the link", "serve", []string{"PATH=/nonexistent:" + current + "/bin"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{GenSettings: GenSettings{Command: []string{tt.command}}, Sources: Sources{
				Directory: current, Env: tt.env,
				EnvFiles: []string{current + "/release.env", "local.env"},
			}}
			if err := pin(&cfg, "/", []string{"PATH=/usr/bin:/bin"}); err != nil {
				t.Fatal(err)
			}
			if cfg.Directory != v1 || cfg.Command[0] != v1+"/bin/serve" {
				t.Errorf("directory %q, program %q; want both in %s", cfg.Directory, cfg.Command[0], v1)
			}
			want := []string{"RELEASE=v1", "LOCAL=v1"}
			if tt.env != nil {
				want = append([]string{"PATH=/nonexistent:" + v1 + "/bin"}, want...)
			}
			if diff := cmp.Diff(want, cfg.Env); diff != "" {
				t.Errorf("env (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPinRefusesWhatExecCannotTake: an environment or a command that
// execve(2) would refuse with E2BIG fails the pin, naming the key and
// where it was set, and the limit; over the total, the largest keys and
// where each was set.
func TestPinRefusesWhatExecCannotTake(t *testing.T) {
	root := releases(t, "v1")
	big := strings.Repeat("x", 200<<10)
	os.WriteFile(filepath.Join(root, "big.env"), []byte("A=1\nBIG="+big+"\n"), 0o644)
	// 12 files of 8 values of 100 KiB (one of 120 KiB, in part5.env): 9.6
	// MB, more than the 6 MiB that Linux takes in all whatever the stack
	// limit.
	for i := range 12 {
		var f strings.Builder
		for j := range 8 {
			size := 100 << 10
			if i == 5 && j == 0 {
				size = 120 << 10
			}
			fmt.Fprintf(&f, "V%d_%d=%s\n", i, j, strings.Repeat("x", size))
		}
		os.WriteFile(filepath.Join(root, fmt.Sprintf("part%d.env", i)), []byte(f.String()), 0o644)
	}
	var parts []string
	for i := range 12 {
		parts = append(parts, filepath.Join(root, fmt.Sprintf("part%d.env", i)))
	}
	for _, tt := range []struct {
		name string
		src  Sources
		args []string
		want string
	}{
		{"a 200 KB value in a file", Sources{EnvFiles: []string{root + "/big.env"}}, nil,
			"--env-file " + root + "/big.env:2: BIG is 204804 bytes with its value, more than exec(2) takes in one variable (" + fmt.Sprint(32*os.Getpagesize()) + " bytes as KEY=VALUE with its NUL, MAX_ARG_STRLEN)"},
		{"a 200 KB --env", Sources{Env: []string{"BIG=" + big}}, nil, "--env: BIG is 204804 bytes with its value"},
		{"a 200 KB argument", Sources{}, []string{"--x", big}, "worker command: argument 2 is 204800 bytes"},
		{"9.6 MB of values", Sources{EnvFiles: parts}, nil, fmt.Sprintf("more than exec(2) takes in all (%d bytes: a quarter of the stack limit, ulimit -s, less 16384 for what baton adds); the largest: ", argMax()) +
			"V5_0 (122886 bytes, --env-file " + root + "/part5.env:1), V10_0 (102407 bytes, --env-file " + root + "/part10.env:1), V10_1 (102407 bytes, --env-file " + root + "/part10.env:2)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{GenSettings: GenSettings{Command: append([]string{"/bin/sh"}, tt.args...)}, Sources: tt.src}
			err := pin(&cfg, root, []string{"PATH=/usr/bin:/bin"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("pin: %v, want an error with %q", err, tt.want)
			}
		})
	}
}
