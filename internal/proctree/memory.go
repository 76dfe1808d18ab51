package proctree

// Which figure a memory ceiling should compare, measured on this machine
// (Linux 6.18, 2 vCPUs; Debian's gunicorn 20.1 and uwsgi 2.0.21, each a
// master and 4 workers; contrib/gunicorn/app.py), kB summed over the tree:
//
//	                                            RSS     PSS     USS
//	gunicorn, started                        129768   40130   18712
//	  after 1000 requests                    130564   42454   21072
//	  one worker keeps 64 MiB more (a)        +65668  +66161  +66072
//	uwsgi, started                            58580   25527   18496
//	  after 1000 requests                     61180   26800   19264
//	  one worker keeps 64 MiB more (a)        +65972  +65571  +65224
//	example-worker (1 process), started        6840    5520    5388
//	  after 20 requests with --leak 1M        29304   27968   27852
//	4 children write a 64 MiB shared map (b) +262704  +65679     +32
//
// (a) the app plus a /grow route that keeps 64 MiB; (b) MAP_SHARED
// anonymous memory made by the parent, as uwsgi's caches and shared areas
// are. RSS counts the master's pages again in every worker: gunicorn's
// tree holds 40 MB, not 130, and RSS grows 4 times what 4 workers write to
// memory they share, while it misses pages that copy-on-write unshares (PSS
// and USS grew 2.3 MB in 1000 requests, RSS 0.8). USS misses all growth in
// shared memory. Each counts private growth the same. So PSS: it counts
// what the tree holds once, and only pages shared with processes outside
// the tree (libraries, files) in part.
//
// PSS costs a walk of the page tables: MemoryOf took 0.4 ms on a shell and
// 4 sleeps, 2.6 ms on gunicorn's tree and 15 ms on a Go process with 1 GB
// resident, against 0.2, 0.2 and 0.1 ms for OfTree (BenchmarkMemoryOf,
// BenchmarkOfTree; about 0.1 ms of each is Tree). As a process's PSS never
// exceeds its RSS, a caller can read MemoryOf only once OfTree's RSS is past
// the ceiling (less a margin: the two are not read at the same moment).
//
// Linux 4.14 added /proc/PID/smaps_rollup: on an older kernel MemoryOf
// fails for every process (with an error that says so, not one that reads
// as "exited").

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"syscall"
)

// Memory is what a process tree holds in memory, by three measures, in bytes.
// None counts pages swapped out, nor huge pages from hugetlbfs.
type Memory struct {
	// RSS is the resident set size, summed: a page mapped by n processes
	// of the tree counts n times. A pre-fork server's children share
	// much of their master's memory copy-on-write, so its RSS is several
	// times what it holds.
	RSS uint64
	// PSS is the proportional set size, summed: a page mapped by n
	// processes counts 1/n in each, so one shared by the tree alone
	// counts once, as it should (one shared with processes outside the
	// tree, such as a library's code, counts for the tree's share).
	PSS uint64
	// USS is the unique set size, summed: the pages that are each
	// process's alone (Private_Clean and Private_Dirty). It leaves out
	// what the tree's processes share, even among themselves.
	USS uint64
	// Processes is how many processes were read.
	Processes int
}

// MemoryOf reads the memory of pid and of its descendants (Tree), summed,
// from each one's /proc/PID/smaps_rollup (PSS, USS and RSS all from that
// one file, read once). Processes that exit during the walk, or that have
// exited and wait to be reaped (zombies, which hold no memory), are left
// out; if pid itself has, the error wraps os.ErrNotExist. Any other error,
// such as a descendant that is not ours to read (a setuid program), fails
// the whole measure rather than understating it.
//
// smaps_rollup exists since Linux 4.14. Reading it walks the process's page
// tables under its mmap lock: unlike OfTree's statm, its cost grows with
// resident memory, 15 to 20 µs a MB of RSS here (see the measurements
// above).
func MemoryOf(pid int) (Memory, error) {
	var sum Memory
	for i, p := range Tree(pid) {
		m, err := rollupOf(p)
		if err != nil {
			if !gone(err) {
				return Memory{}, err
			}
			if i == 0 {
				if _, serr := os.Stat(fmt.Sprintf("/proc/%d", p)); serr == nil && errors.Is(err, os.ErrNotExist) {
					// The process is there, its smaps_rollup is not.
					return Memory{}, fmt.Errorf("%w (smaps_rollup needs Linux 4.14 or later)", err)
				}
				return Memory{}, fmt.Errorf("proctree: process %d has exited: %w (%w)", pid, os.ErrNotExist, err)
			}
			continue
		}
		sum.RSS += m.RSS
		sum.PSS += m.PSS
		sum.USS += m.USS
		sum.Processes++
	}
	return sum, nil
}

// gone reports whether err, from reading a file in /proc/PID, says that the
// process has exited: ENOENT once it is reaped, ESRCH while it is a zombie
// (its memory is already freed, so smaps_rollup opens but cannot be read).
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// rollupOf reads one process's /proc/PID/smaps_rollup.
func rollupOf(pid int) (Memory, error) {
	path := fmt.Sprintf("/proc/%d/smaps_rollup", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return Memory{}, err
	}
	m, err := parseRollup(b)
	if err != nil {
		return Memory{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// parseRollup reads the text of a /proc/PID/smaps_rollup: a header line (the
// address range the rollup covers, then "[rollup]"), then one field a line,
// "Name:", spaces, a decimal count and " kB". It takes Rss, Pss,
// Private_Clean and Private_Dirty, which must each appear once with that
// form, and returns them in bytes as one process's Memory. Other fields are
// ignored whatever their form, among them those whose names merely begin
// alike (Pss_Anon, Pss_Dirty, Pss_File, Pss_Shmem, SwapPss) and any a newer
// kernel adds.
func parseRollup(b []byte) (Memory, error) {
	var m Memory
	var clean, dirty uint64
	fields := map[string]*uint64{
		"Rss":           &m.RSS,
		"Pss":           &m.PSS,
		"Private_Clean": &clean,
		"Private_Dirty": &dirty,
	}
	seen := map[string]bool{}
	for n, line := range bytes.Split(b, []byte("\n")) {
		if n == 0 && bytes.HasSuffix(line, []byte("[rollup]")) {
			continue // the header: "55c0defea000-7ffd4ac4c000 ---p 00000000 00:00 0   [rollup]"
		}
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		p, known := fields[string(name)]
		if !known {
			continue
		}
		if seen[string(name)] {
			return Memory{}, fmt.Errorf("%s twice", name)
		}
		seen[string(name)] = true
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return Memory{}, fmt.Errorf("%s: %q, want a count of kB", name, rest)
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil || kb > math.MaxUint64/1024 {
			return Memory{}, fmt.Errorf("%s: %q, want a count of kB", name, rest)
		}
		*p = kb * 1024
	}
	for _, name := range []string{"Rss", "Pss", "Private_Clean", "Private_Dirty"} {
		if !seen[name] {
			return Memory{}, fmt.Errorf("no %s", name)
		}
	}
	if clean > math.MaxUint64-dirty {
		return Memory{}, fmt.Errorf("Private_Clean %d + Private_Dirty %d bytes: too large", clean, dirty)
	}
	m.USS = clean + dirty
	m.Processes = 1
	return m, nil
}
