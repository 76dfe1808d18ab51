// Package rig holds what process-level tests and the benchmark share and
// what needs no testing package: building baton and the example worker,
// finding the module, watching processes, fetching and a load generator.
// The benchmark's binary links it; testsd, the stand-in systemd for tests,
// builds on it.
package rig

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Bins holds the binaries a test runs.
type Bins struct {
	Dir     string
	Baton   string
	BatonV2 string // the same baton, built as version v2: an upgrade's new binary
	Worker  string // contrib/example-worker
}

// Build builds baton and the example worker into dir with the go tool, once
// per test binary. Call it from TestMain.
func Build(dir string) (Bins, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Bins{}, err
	}
	// go test puts its own go tool first in PATH; scripts/ add /usr/local/go/bin.
	build := func(args ...string) error {
		cmd := exec.Command("go", append([]string{"build"}, args...)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
		return nil
	}
	v2 := filepath.Join(dir, "baton-v2")
	if err := build("-o", dir+"/", "./cmd/baton", "./contrib/example-worker"); err != nil {
		return Bins{}, err
	}
	if err := build("-ldflags", "-X main.version=v2", "-o", v2, "./cmd/baton"); err != nil {
		return Bins{}, err
	}
	return Bins{Dir: dir, Baton: filepath.Join(dir, "baton"), BatonV2: v2, Worker: filepath.Join(dir, "example-worker")}, nil
}

// Child is a child process as /proc lists it.
type Child struct {
	PID    int
	Zombie bool
}

// Children lists ppid's children, from /proc/PID/stat.
func Children(ppid int) []Child {
	var out []Child
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited since the glob
		}
		// "pid (comm) S ppid ...": comm may hold spaces, so cut at the last ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			pid, _ := strconv.Atoi(strings.Fields(s)[0])
			out = append(out, Child{PID: pid, Zombie: f[0] == "Z"})
		}
	}
	return out
}

// ChildrenOf counts ppid's children and how many of them are zombies.
func ChildrenOf(ppid int) (children, zombies int) {
	for _, c := range Children(ppid) {
		children++
		if c.Zombie {
			zombies++
		}
	}
	return children, zombies
}

// ModuleRoot finds the module's root from the working directory up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Get fetches url on a fresh connection and returns the body.
func Get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return b.String(), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b.String(), nil
}

// ProcessGone blocks until pid has exited (pidfd readable) or ctx ends, and
// reports whether it has.
func ProcessGone(ctx context.Context, pid int) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // ESRCH: no such process (any more)
	}
	defer unix.Close(fd)
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 50)
		if err == nil && n > 0 {
			return true
		}
	}
	return false
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
