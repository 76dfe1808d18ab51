package compat

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonsd/baton/internal/testsd"
)

// TestContribUnits: the unit files next to each example are what `baton
// units` renders for it (systemd 252, Debian 12), so they never go stale.
// BATON_UPDATE_UNITS=1 rewrites them.
func TestContribUnits(t *testing.T) {
	testsd.Process(t)
	f, err := os.Open("../contrib/examples.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, "|")
		name, flags, command := parts[0], strings.Fields(parts[1]), strings.Fields(parts[2])
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"units", "--name", name, "--systemd-version", "252", "--output", out}, flags...)
			if b, err := exec.Command(bins.Baton, append(append(args, "--"), command...)...).CombinedOutput(); err != nil {
				t.Fatalf("baton units: %v\n%s", err, b)
			}
			for _, unit := range []string{name + ".socket", name + ".service"} {
				want, _ := os.ReadFile(filepath.Join(out, unit))
				path := filepath.Join("../contrib", name, unit)
				if os.Getenv("BATON_UPDATE_UNITS") == "1" {
					os.WriteFile(path, want, 0o644)
				}
				got, err := os.ReadFile(path)
				if err != nil || string(got) != string(want) {
					t.Errorf("%s differs from what baton units renders (BATON_UPDATE_UNITS=1 rewrites it):\n%s", path, want)
				}
			}
		})
	}
}
