package supervisor

import (
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
			if err := pin(&cfg, "/", "/nonexistent:"+current+"/bin"); err != nil {
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
	if err := pin(&cfg, root, ""); err != nil {
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
			err := pin(&cfg, root, "/usr/bin:/bin")
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
	if err := pin(&cfg, "/", ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"GREETING=from the release", "LIST=a,b", "PATH=/usr/bin:/bin", "DB=postgres://u:pw@db/app", "RELEASE=v1"}
	if diff := cmp.Diff(want, cfg.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	cfg.Sources.EnvFiles = []string{root + "/reserved.env"}
	if err := pin(&cfg, "/", ""); err == nil || err.Error() != "--env-file "+root+"/reserved.env:2: NOTIFY_SOCKET: baton sets it for each worker" {
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
