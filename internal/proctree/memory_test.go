package proctree

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rollup is /proc/self/smaps_rollup as cat read it on Linux 6.18.
const rollup = `55c0defea000-7ffd4ac4c000 ---p 00000000 00:00 0                          [rollup]
Rss:                1672 kB
Pss:                 272 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            160 kB
Pss_Shmem:             0 kB
Shared_Clean:       1520 kB
Shared_Dirty:          0 kB
Private_Clean:        40 kB
Private_Dirty:       112 kB
Referenced:         1672 kB
Anonymous:           112 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
`

// edit returns the sample rollup with old replaced by new, which must be in it.
func edit(old, new string) string {
	if !strings.Contains(rollup, old) {
		panic("no " + old + " in the sample")
	}
	return strings.Replace(rollup, old, new, 1)
}

func TestParseRollup(t *testing.T) {
	const k = 1024
	sample := Memory{RSS: 1672 * k, PSS: 272 * k, USS: (40 + 112) * k, Processes: 1}
	for _, c := range []struct {
		name, in string
		want     Memory // zero: an error is wanted
	}{
		{"real", rollup, sample},
		{"no header", rollup[strings.IndexByte(rollup, '\n')+1:], sample},
		{"no final newline", strings.TrimSuffix(rollup, "\n"), sample},
		{"Pss_* before Pss", "Pss_Anon: 7 kB\nPss_Dirty: 8 kB\nSwapPss: 9 kB\nRss: 3 kB\nPss: 2 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 1 kB\n",
			Memory{RSS: 3 * k, PSS: 2 * k, USS: 1 * k, Processes: 1}},
		{"tabs", "Rss:\t3\tkB\nPss:\t2 kB\nPrivate_Clean:\t0 kB\nPrivate_Dirty:\t1 kB", Memory{RSS: 3 * k, PSS: 2 * k, USS: 1 * k, Processes: 1}},
		{"a new field in another form", edit("Locked:", "THPeligible: 1\nLocked:"), sample},
		{"a header that looks like a field", "Rss: 1 kB [rollup]\n" + rollup[strings.IndexByte(rollup, '\n')+1:], sample},
		{"zeros", "x [rollup]\nRss: 0 kB\nPss: 0 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 0 kB\n", Memory{Processes: 1}},
		{"largest", fmt.Sprintf("Rss: %d kB\nPss: 0 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 0 kB\n", uint64(1<<54-1)),
			Memory{RSS: (1<<54 - 1) * k, Processes: 1}},

		{"empty", "", Memory{}},
		{"header only", "55c0defea000-7ffd4ac4c000 ---p 00000000 00:00 0   [rollup]\n", Memory{}},
		{"smaps of one mapping", "Size: 4 kB\nRss: 4 kB\n", Memory{}},
		{"no Pss", edit("Pss:                 272 kB\n", ""), Memory{}},
		{"no Private_Dirty", edit("Private_Dirty:       112 kB\n", ""), Memory{}},
		{"Rss twice", rollup + "Rss: 1 kB\n", Memory{}},
		{"MB", edit("272 kB", "272 MB"), Memory{}},
		{"no unit", edit("272 kB", "272"), Memory{}},
		{"two counts", edit("272 kB", "272 3 kB"), Memory{}},
		{"negative", edit("272 kB", "-272 kB"), Memory{}},
		{"plus", edit("272 kB", "+272 kB"), Memory{}},
		{"hex", edit("272 kB", "0x110 kB"), Memory{}},
		{"fraction", edit("272 kB", "272.5 kB"), Memory{}},
		{"count too large for uint64", edit("1672 kB", "18446744073709551616 kB"), Memory{}},
		{"bytes too large for uint64", edit("1672 kB", fmt.Sprintf("%d kB", uint64(1<<54))), Memory{}},
		{"USS too large for uint64", fmt.Sprintf("Rss: 0 kB\nPss: 0 kB\nPrivate_Clean: %[1]d kB\nPrivate_Dirty: %[1]d kB\n", uint64(1<<54-1)), Memory{}},
	} {
		got, err := parseRollup([]byte(c.in))
		switch {
		case c.want == (Memory{}) && err == nil:
			t.Errorf("%s: %+v, want an error", c.name, got)
		case c.want != (Memory{}) && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case got != c.want && err == nil:
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

// FuzzParseRollup: parseRollup never panics, and what it accepts it read
// from lines of the input as the kernel writes them.
func FuzzParseRollup(f *testing.F) {
	f.Add(rollup)
	f.Add("Rss: 3 kB\nPss: 2 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 1 kB")
	f.Add("Pss_Anon: 7 kB\nRss:\t3\tkB\nPss: 2 kB\nPss: 2 kB\nPrivate_Clean: 0 kB\nPrivate_Dirty: 1 kB\n")
	f.Add(edit("1672 kB", "18014398509481983 kB"))
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		m, err := parseRollup([]byte(in))
		if err != nil {
			if m != (Memory{}) {
				t.Errorf("%+v with an error (%v)", m, err)
			}
			return
		}
		if m.Processes != 1 || m.RSS%1024 != 0 || m.PSS%1024 != 0 || m.USS%1024 != 0 {
			t.Fatalf("%+v: want one process, whole kB", m)
		}
		field := func(name string) uint64 {
			// Spaces as bytes.Fields knows them (unicode.IsSpace), but for
			// '\n', which ends a line.
			const sp = `[\t\v\f\r\x85\pZ]`
			re := regexp.MustCompile(`(?m)^` + name + `:` + sp + `*([0-9]+)` + sp + `+kB` + sp + `*$`)
			all := re.FindAllStringSubmatch(in, -1)
			if len(all) != 1 {
				t.Fatalf("%+v from %q: %d lines of %s", m, in, len(all), name)
			}
			n, err := strconv.ParseUint(all[0][1], 10, 64)
			if err != nil {
				t.Fatalf("%+v from %q: %s %q", m, in, name, all[0][1])
			}
			return n * 1024
		}
		if rss, pss, uss := field("Rss"), field("Pss"), field("Private_Clean")+field("Private_Dirty"); m.RSS != rss || m.PSS != pss || m.USS != uss {
			t.Errorf("%+v from %q: want RSS %d, PSS %d, USS %d", m, in, rss, pss, uss)
		}
	})
}

func TestMemoryOf(t *testing.T) {
	cmd := start(t, "sh", "-c", "sleep 60 & sleep 60 & wait")
	pid := cmd.Process.Pid
	waitFor(t, "3 processes in the tree", func() bool { return len(Tree(pid)) == 3 })
	m, err := MemoryOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.Processes != 3 || m.USS == 0 || m.USS > m.PSS || m.PSS > m.RSS || m.RSS > 1<<30 {
		t.Errorf("MemoryOf(sh and 2 sleeps) = %+v: want 3 processes, 0 < USS <= PSS <= RSS < 1 GiB", m)
	}
	// The same pages as statm counts, by another route, once the tree
	// has settled (the sleeps may still be starting).
	waitFor(t, "MemoryOf's RSS and OfTree's to agree within 10%", func() bool {
		m, err := MemoryOf(pid)
		u, n := OfTree(pid)
		return err == nil && n == 3 && m.RSS >= u.RSS*9/10 && m.RSS <= u.RSS*11/10
	})
}

// TestMemoryShared: a pre-fork server's shape. A parent dirties 32 MiB,
// then forks 3 children that share it copy-on-write: RSS counts it 4
// times, PSS once, USS not at all.
func TestMemoryShared(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip(err)
	}
	const mib = 1 << 20
	cmd := exec.Command("python3", "-c", `
import os, sys, time
b = bytearray(32 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
for _ in range(3):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
print(os.getpid(), flush=True)
time.sleep(60)
`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range Tree(cmd.Process.Pid)[1:] {
			if pr, err := os.FindProcess(p); err == nil {
				pr.Kill()
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	// python3 may be a wrapper (pyenv's shim) that runs python: measure
	// the python process that forked, which says its pid once it has.
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "3 children of the python process", func() bool { return len(Tree(pid)) == 4 })
	m, err := MemoryOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", m)
	if m.Processes != 4 || m.RSS < 4*32*mib || m.PSS < 32*mib || m.PSS > m.RSS/2 || m.USS > m.PSS-32*mib {
		t.Errorf("MemoryOf(4 processes sharing 32 MiB) = %+v: want RSS >= 128 MiB, PSS >= 32 MiB and at most half RSS, USS without the 32 MiB", m)
	}
}

func TestMemoryGone(t *testing.T) {
	// Reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if m, err := MemoryOf(cmd.Process.Pid); !errors.Is(err, os.ErrNotExist) || m != (Memory{}) {
		t.Errorf("MemoryOf a reaped process: %+v, %v; want os.ErrNotExist", m, err)
	}

	// A zombie: exited, not yet reaped. Left out of a tree, and an
	// error as the root.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	z := zombie.Process.Pid
	waitFor(t, "true to exit", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", z))
		i := strings.LastIndexByte(string(b), ')')
		return i > 0 && strings.HasPrefix(string(b[i:]), ") Z")
	})
	if m, err := MemoryOf(z); !errors.Is(err, os.ErrNotExist) || m != (Memory{}) {
		t.Errorf("MemoryOf a zombie: %+v, %v; want os.ErrNotExist", m, err)
	}
	self := os.Getpid()
	tree := Tree(self)
	if !strings.Contains(fmt.Sprint(tree), fmt.Sprint(z)) {
		t.Fatalf("the zombie %d is not in this test's tree %v", z, tree)
	}
	m, err := MemoryOf(self)
	if err != nil {
		t.Fatal(err)
	}
	if m.Processes != len(tree)-1 || m.PSS == 0 {
		t.Errorf("MemoryOf(this test, tree %v with zombie %d) = %+v: want %d processes", tree, z, m, len(tree)-1)
	}
}

// benchTree is the tree that BenchmarkMemoryOf and BenchmarkOfTree read:
// PROCTREE_BENCH_PID's, or a shell and 4 sleeps.
func benchTree(b *testing.B) int {
	if s := os.Getenv("PROCTREE_BENCH_PID"); s != "" {
		pid, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		return pid
	}
	cmd := exec.Command("sh", "-c", "sleep 60 & sleep 60 & sleep 60 & sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		for _, p := range Tree(cmd.Process.Pid)[1:] {
			if pr, err := os.FindProcess(p); err == nil {
				pr.Kill()
			}
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Started: the shell and four children that have become sleep (their
	// comm after the exec), not copies of the shell still.
	started := func() bool {
		tree := Tree(cmd.Process.Pid)
		if len(tree) != 5 {
			return false
		}
		for _, p := range tree[1:] {
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); err != nil || string(comm) != "sleep\n" {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(10 * time.Second); !started(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the tree of %d: %v, want the shell and 4 sleeps", cmd.Process.Pid, Tree(cmd.Process.Pid))
		}
	}
	return cmd.Process.Pid
}

func BenchmarkMemoryOf(b *testing.B) {
	pid := benchTree(b)
	m, err := MemoryOf(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%+v", m)
	for b.Loop() {
		MemoryOf(pid)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(m.Processes), "µs/process")
}

// BenchmarkTree: what of the two above is the walk itself.
func BenchmarkTree(b *testing.B) {
	pid := benchTree(b)
	for b.Loop() {
		Tree(pid)
	}
}

func BenchmarkOfTree(b *testing.B) {
	pid := benchTree(b)
	u, n := OfTree(pid)
	b.Logf("%+v of %d processes", u, n)
	for b.Loop() {
		OfTree(pid)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(n), "µs/process")
}
