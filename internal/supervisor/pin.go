package supervisor

// Pinning: what says which release a generation runs (its working
// directory, its program, its environment) is resolved once, when the
// generation is made from a re-read configuration, and kept in its
// GenSettings. A crash restart or a scale-up of that generation starts
// exactly there, even after `current` has moved on to a release nobody has
// reloaded yet, and a rollback rolls out the same values again. This is
// what Capistrano-style deploys (`ln -sfn releases/v2 current && baton
// reload`) need and what puma's phased restart, supervisord and roadrunner
// get wrong (a worker restarted in the old release, or in the next one).

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/batonsd/baton/internal/envfile"
	"golang.org/x/sys/unix"
)

// Sources are the settings a generation's pinned ones are resolved from,
// as the command line and the config file give them.
type Sources struct {
	// Directory is --directory as given: a path through a `current`
	// symlink, say. Empty is the directory baton was started in, as
	// getcwd(3) (or $PWD, when it names the same directory) names it.
	Directory string
	// Env is --env, KEY=VALUE each; EnvFiles is --env-file, each a path
	// (relative: to the generation's directory; a leading "-" makes a
	// missing file no error, as in systemd's EnvironmentFile=).
	Env      []string
	EnvFiles []string
}

// pin resolves cfg's sources into its GenSettings: the directory through
// its symlinks, the command's program to a path, the environment files
// read. startDir is baton's working directory at start, basePath the PATH
// baton has. Each error names the flag and the path (or file and line).
func pin(cfg *Config, startDir, basePath string) error {
	dir, err := pinDirectory(cmp.Or(cfg.Sources.Directory, startDir), startDir)
	if err != nil {
		return err
	}
	env, err := pinEnv(cfg.Sources, dir)
	if err != nil {
		return err
	}
	path := basePath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v // the workers' own PATH finds their program
		}
	}
	if len(cfg.Command) == 0 {
		return errors.New("no worker command")
	}
	prog, err := pinProgram(cfg.Command[0], dir, path)
	if err != nil {
		return fmt.Errorf("worker command %q: %w", cfg.Command[0], err)
	}
	cfg.Command = append([]string{prog}, cfg.Command[1:]...)
	cfg.Directory, cfg.Env = dir, env
	return nil
}

// pinDirectory resolves dir (relative: to baton's start directory) through
// its symlinks and checks a worker can work in it. Empty stays empty: the
// workers inherit baton's directory.
func pinDirectory(dir, startDir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(startDir, dir)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("--directory %s: %w", dir, unwrapPath(err))
	}
	fi, err := os.Stat(real)
	switch {
	case err != nil:
		return "", fmt.Errorf("--directory %s: %w", dir, unwrapPath(err))
	case !fi.IsDir():
		return "", fmt.Errorf("--directory %s: %s is not a directory", dir, real)
	}
	// Workers run as baton's user: what baton may do there, they may.
	if err := unix.Access(real, unix.R_OK|unix.X_OK); err != nil {
		return "", fmt.Errorf("--directory %s: %s cannot be read and entered: %w", dir, real, err)
	}
	return real, nil
}

// reserved are the variables baton sets for each worker itself.
func reserved(key string) bool {
	switch {
	case key == "NOTIFY_SOCKET", key == "WATCHDOG_USEC", key == "WATCHDOG_PID",
		strings.HasPrefix(key, "LISTEN_"), strings.HasPrefix(key, "BATON_"):
		return true
	}
	return false
}

// pinEnv reads --env, then the --env-file files in order: as with systemd's
// Environment= and EnvironmentFile=, a file's assignment wins over --env,
// and a later one over an earlier one. The result has each key once, in the
// order keys first appeared.
func pinEnv(src Sources, dir string) ([]string, error) {
	var keys []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range src.Env {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("--env %q: want KEY=VALUE", k)
		case !envfile.ValidKey(k):
			return nil, fmt.Errorf("--env %q: not a valid variable name", k)
		case reserved(k):
			return nil, fmt.Errorf("--env %s: baton sets it for each worker", k)
		}
		set(k, v)
	}
	for _, name := range src.EnvFiles {
		path, optional := strings.CutPrefix(name, "-")
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		vars, err := envfile.Read(path)
		if optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("--env-file: %w", err)
		}
		for _, v := range vars {
			if reserved(v.Key) {
				return nil, fmt.Errorf("--env-file %s:%d: %s: baton sets it for each worker", path, v.Line, v.Key)
			}
			set(v.Key, v.Value)
		}
	}
	env := make([]string, len(keys))
	for i, k := range keys {
		env[i] = k + "=" + vals[k]
	}
	return env, nil
}

// pinProgram resolves a worker's program: a name with a slash against the
// directory, a bare name through PATH. The directories on its path are
// resolved through their symlinks (/srv/app/current/bin/server becomes
// /srv/app/releases/v2/bin/server); the file itself is not, so a program a
// package replaces or re-points (/usr/bin/python3) is found at its place.
func pinProgram(name, dir, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return executable(name)
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		if p, err := executable(filepath.Join(d, name)); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in PATH %s", path)
}

// executable resolves p's directories and checks p is an executable file.
func executable(p string) (string, error) {
	d, err := filepath.EvalSymlinks(filepath.Dir(p))
	if err != nil {
		return "", unwrapPath(err)
	}
	p = filepath.Join(d, filepath.Base(p))
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return "", unwrapPath(err)
	case fi.IsDir():
		return "", fmt.Errorf("%s is a directory", p)
	}
	if err := unix.Access(p, unix.X_OK); err != nil {
		return "", fmt.Errorf("%s: not executable: %w", p, err)
	}
	return p, nil
}

// stillThere checks that a pinned generation's directory and program are
// still there (a pruned release is not), so that a rollback to it fails
// before any worker starts, saying what is gone.
func stillThere(g GenSettings) error {
	if g.Directory != "" {
		if fi, err := os.Stat(g.Directory); err != nil {
			return fmt.Errorf("its directory %w", unwrapPath(err))
		} else if !fi.IsDir() {
			return fmt.Errorf("its directory %s is not a directory", g.Directory)
		}
	}
	if len(g.Command) > 0 && filepath.IsAbs(g.Command[0]) {
		if _, err := executable(g.Command[0]); err != nil {
			return fmt.Errorf("its program %w", err)
		}
	}
	return nil
}

// unwrapPath turns a *fs.PathError into "PATH: reason" without the
// operation's name ("lstat"), which says nothing to a user.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// envDigest is a short digest of a pinned environment: it tells two
// environments apart in status and logs without showing a value.
func envDigest(env []string) string {
	if len(env) == 0 {
		return ""
	}
	sorted := slices.Sorted(slices.Values(env))
	h := sha256.New()
	for _, kv := range sorted {
		h.Write([]byte(kv))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// envKeys are the keys of a pinned environment, in order.
func envKeys(env []string) []string {
	keys := make([]string, len(env))
	for i, kv := range env {
		keys[i], _, _ = strings.Cut(kv, "=")
	}
	return keys
}

// changes says what differs between two generations' pinned settings, for
// the journal and the rollout's result: never an environment value.
func changes(from, to GenSettings) []string {
	var out []string
	if from.Directory != to.Directory {
		out = append(out, fmt.Sprintf("directory %s → %s", cmp.Or(from.Directory, "(baton's)"), cmp.Or(to.Directory, "(baton's)")))
	}
	if !slices.Equal(from.Command, to.Command) {
		out = append(out, fmt.Sprintf("command %s → %s", strings.Join(from.Command, " "), strings.Join(to.Command, " ")))
	}
	old := map[string]string{}
	for _, kv := range from.Env {
		k, v, _ := strings.Cut(kv, "=")
		old[k] = v
	}
	var added, changed, removed []string
	seen := map[string]bool{}
	for _, kv := range to.Env {
		k, v, _ := strings.Cut(kv, "=")
		seen[k] = true
		switch ov, ok := old[k]; {
		case !ok:
			added = append(added, k)
		case ov != v:
			changed = append(changed, k)
		}
	}
	for _, k := range envKeys(from.Env) {
		if !seen[k] {
			removed = append(removed, k)
		}
	}
	for _, c := range []struct {
		what string
		keys []string
	}{{"added", added}, {"changed", changed}, {"removed", removed}} {
		if len(c.keys) > 0 {
			out = append(out, fmt.Sprintf("environment %s: %s", c.what, strings.Join(c.keys, " ")))
		}
	}
	return out
}

// workerEnv is a generation's worker environment: baton's own (base),
// with the generation's pinned variables over it, and its watchdog.
func workerEnv(base []string, cfg Config) []string {
	env := base
	if len(cfg.Env) > 0 {
		over := map[string]bool{}
		for _, k := range envKeys(cfg.Env) {
			over[k] = true
		}
		env = make([]string, 0, len(base)+len(cfg.Env)+1)
		for _, kv := range base {
			if k, _, _ := strings.Cut(kv, "="); !over[k] {
				env = append(env, kv)
			}
		}
		env = append(env, cfg.Env...)
	}
	if cfg.Watchdog > 0 {
		// WATCHDOG_PID is set by the exec shim, to the worker's own pid.
		env = append(env[:len(env):len(env)], fmt.Sprintf("WATCHDOG_USEC=%d", cfg.Watchdog.Microseconds()))
	}
	return env
}
