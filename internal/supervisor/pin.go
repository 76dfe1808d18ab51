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

// pin resolves cfg's sources into its GenSettings from one look at the
// release: the directory is resolved through its symlinks once, and every
// other path that goes through it as --directory spells it (a program
// /srv/app/current/bin/app, an env file /srv/app/current/.env, a PATH
// entry /srv/app/current/bin) is rewritten onto that one result before it
// is used, so a `current` flipped during the pin cannot give a generation
// whose directory is one release and whose program or environment is
// another. A path through any other symlink is resolved once, on its own.
// The pinned environment's PATH gets the same rewrite, so what the workers
// find through it is their own release too.
//
// startDir is baton's working directory at start, base the environment
// baton gives its workers (its PATH finds the program when the pinned
// environment sets none). Each error names the flag and the path (or file
// and line).
func pin(cfg *Config, startDir string, base []string) error {
	rel, err := pinDirectory(cmp.Or(cfg.Sources.Directory, startDir), startDir)
	if err != nil {
		return err
	}
	env, from, err := pinEnv(cfg.Sources, rel)
	if err != nil {
		return err
	}
	path := lookup(base, "PATH")
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			env[i] = "PATH=" + rel.ontoList(v)
			path = v // the workers' own PATH finds their program
		}
	}
	if len(cfg.Command) == 0 {
		return errors.New("no worker command")
	}
	prog, err := pinProgram(cfg.Command[0], rel, rel.ontoList(path))
	if err != nil {
		return fmt.Errorf("worker command %q: %w", cfg.Command[0], err)
	}
	command := append([]string{prog}, cfg.Command[1:]...)
	if err := fitsExec(command, env, from, base); err != nil {
		return err
	}
	cfg.Command = command
	cfg.Directory, cfg.Env = rel.real, env
	return nil
}

// release is the one look at a generation's directory: as --directory
// spells it (absolute, cleaned) and as it resolved.
type release struct{ given, real string }

// onto rewrites an absolute path that goes through the directory as given
// onto the resolved one (/srv/app/current/bin/app becomes
// /srv/app/releases/v2/bin/app); any other path comes back as it is. The
// match is on the path as spelled, lexically.
func (r release) onto(p string) string {
	if r.given == r.real || !filepath.IsAbs(p) {
		return p
	}
	c := filepath.Clean(p)
	if c == r.given {
		return r.real
	}
	if rest, ok := strings.CutPrefix(c, strings.TrimSuffix(r.given, "/")+"/"); ok {
		return filepath.Join(r.real, rest)
	}
	return p
}

// ontoList rewrites each entry of a PATH-like list as onto does.
func (r release) ontoList(list string) string {
	if list == "" {
		return list
	}
	dirs := filepath.SplitList(list)
	for i, d := range dirs {
		dirs[i] = r.onto(d)
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// pinDirectory resolves dir (relative: to baton's start directory) through
// its symlinks, once, and checks a worker can work in it. Empty stays
// empty: the workers inherit baton's directory.
func pinDirectory(dir, startDir string) (release, error) {
	if dir == "" {
		return release{}, nil
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(startDir, dir)
	}
	dir = filepath.Clean(dir)
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return release{}, fmt.Errorf("--directory %s: %w", dir, unwrapPath(err))
	}
	fi, err := os.Stat(real)
	switch {
	case err != nil:
		return release{}, fmt.Errorf("--directory %s: %w", dir, unwrapPath(err))
	case !fi.IsDir():
		return release{}, fmt.Errorf("--directory %s: %s is not a directory", dir, real)
	}
	// Workers run as baton's user: what baton may do there, they may.
	if err := unix.Access(real, unix.R_OK|unix.X_OK); err != nil {
		return release{}, fmt.Errorf("--directory %s: %s cannot be read and entered: %w", dir, real, err)
	}
	return release{given: dir, real: real}, nil
}

// lookup is key's value in env, or "".
func lookup(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val // the last one, as getenv finds in a Go-built environ
		}
	}
	return v
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
// order keys first appeared, and from says where each key's value was
// set ("--env", or "--env-file FILE:LINE"). A relative file is the
// release's; an absolute one through the directory is rewritten onto it.
func pinEnv(src Sources, rel release) (env []string, from map[string]string, err error) {
	var keys []string
	vals := map[string]string{}
	from = map[string]string{}
	set := func(k, v, where string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k], from[k] = v, where
	}
	for _, kv := range src.Env {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, nil, fmt.Errorf("--env %q: want KEY=VALUE", k)
		case !envfile.ValidKey(k):
			return nil, nil, fmt.Errorf("--env %q: not a valid variable name", k)
		case reserved(k):
			return nil, nil, fmt.Errorf("--env %s: baton sets it for each worker", k)
		}
		set(k, v, "--env")
	}
	for _, name := range src.EnvFiles {
		path, optional := strings.CutPrefix(name, "-")
		if !filepath.IsAbs(path) && rel.real != "" {
			path = filepath.Join(rel.real, path)
		}
		path = rel.onto(path)
		vars, err := envfile.Read(path)
		if optional && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("--env-file: %w", err)
		}
		for _, v := range vars {
			if reserved(v.Key) {
				return nil, nil, fmt.Errorf("--env-file %s:%d: %s: baton sets it for each worker", path, v.Line, v.Key)
			}
			set(v.Key, v.Value, fmt.Sprintf("--env-file %s:%d", path, v.Line))
		}
	}
	env = make([]string, len(keys))
	for i, k := range keys {
		env[i] = k + "=" + vals[k]
	}
	return env, from, nil
}

// pinProgram resolves a worker's program: a name with a slash against the
// release's directory (an absolute one through it rewritten onto it), a
// bare name through PATH (whose entries the caller rewrote). The directories on its path are
// resolved through their symlinks (/srv/app/current/bin/server becomes
// /srv/app/releases/v2/bin/server); the file itself is not, so a program a
// package replaces or re-points (/usr/bin/python3) is found at its place.
func pinProgram(name string, rel release, path string) (string, error) {
	dir := rel.real
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return executable(rel.onto(name))
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

// execReserve is what the total that execve(2) takes leaves for what is
// added to a worker's environment and argv after the pin: the exec shim's
// script, LISTEN_FDS, LISTEN_FDNAMES, NOTIFY_SOCKET, BATON_*, WATCHDOG_*.
const execReserve = 16 << 10

// fitsExec checks that a worker's command and environment fit what Linux's
// execve(2) takes (fs/exec.c), which otherwise fails every start with E2BIG:
// each argument and each KEY=VALUE string, its NUL included, at most
// MAX_ARG_STRLEN (32 pages: 128 KiB); all the strings of argv and envp and a
// pointer for each within a quarter of the stack limit (ulimit -s), at most
// 6 MiB and at least 128 KiB. from says where each pinned key was set; base
// is baton's environment, which the pinned one goes over.
func fitsExec(command, env []string, from map[string]string, base []string) error {
	maxStr := 32 * os.Getpagesize()
	for i, a := range command {
		if len(a)+1 > maxStr {
			return fmt.Errorf("worker command: argument %d is %d bytes, more than exec(2) takes in one argument (%d bytes with its NUL, MAX_ARG_STRLEN)", i, len(a), maxStr)
		}
	}
	// Over the total, the error names the largest parts (a variable, with
	// where it was set, or the command) to say what to move into a file.
	type part struct {
		what string
		size int
	}
	var parts []part
	over := map[string]bool{}
	total, n := 0, 0
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if len(kv)+1 > maxStr {
			return fmt.Errorf("%s: %s is %d bytes with its value, more than exec(2) takes in one variable (%d bytes as KEY=VALUE with its NUL, MAX_ARG_STRLEN); put the value in a file the worker reads",
				from[k], envfile.Shown(k), len(kv), maxStr)
		}
		over[k] = true
		total, n = total+len(kv)+1, n+1
		parts = append(parts, part{fmt.Sprintf("%s (%d bytes, %s)", envfile.Shown(k), len(kv)+1, from[k]), len(kv) + 1})
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !over[k] {
			total, n = total+len(kv)+1, n+1
			parts = append(parts, part{fmt.Sprintf("%s (%d bytes, baton's own environment)", envfile.Shown(k), len(kv)+1), len(kv) + 1})
		}
	}
	cmdSize := 0
	for _, a := range command {
		total, n = total+len(a)+1, n+1
		cmdSize += len(a) + 1
	}
	parts = append(parts, part{fmt.Sprintf("the worker command (%d bytes)", cmdSize), cmdSize})
	limit := argMax()
	if need := total + 8*n + execReserve; need > limit {
		slices.SortStableFunc(parts, func(a, b part) int { return cmp.Compare(b.size, a.size) })
		var largest []string
		for _, p := range parts[:min(len(parts), 3)] {
			largest = append(largest, p.what)
		}
		return fmt.Errorf("the workers' command and environment come to %d bytes, more than exec(2) takes in all (%d bytes: a quarter of the stack limit, ulimit -s, less %d for what baton adds); the largest: %s; put large values in files the workers read",
			total+8*n, limit, execReserve, strings.Join(largest, ", "))
	}
	return nil
}

// argMax is the total of argv and envp that execve(2) takes, as Linux
// computes it from the stack limit (bprm_stack_limits in fs/exec.c).
func argMax() int {
	const floor, ceiling = 128 << 10, 6 << 20 // ARG_MAX, _STK_LIM/4*3
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_STACK, &rl); err != nil || rl.Cur/4 >= ceiling {
		return ceiling // unlimited or large (an error: Linux's own ceiling)
	}
	return max(int(rl.Cur/4), floor)
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

// shownKeys are the keys of a pinned environment, in order, as status
// shows them (envfile.Shown: a key that is not a conventional name may be
// part of a secret).
func shownKeys(env []string) []string {
	keys := envKeys(env)
	for i, k := range keys {
		keys[i] = envfile.Shown(k)
	}
	return keys
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
// the journal and the rollout's result: never an environment value, and
// keys as envfile.Shown shows them.
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
			added = append(added, envfile.Shown(k))
		case ov != v:
			changed = append(changed, envfile.Shown(k))
		}
	}
	for _, k := range envKeys(from.Env) {
		if !seen[k] {
			removed = append(removed, envfile.Shown(k))
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
