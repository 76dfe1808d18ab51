package compat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonsd/baton/internal/testsd"
)

// TestDropInsVerify merges each drop-in's [Service] lines into an example
// service and runs systemd-analyze verify on it: a misspelled key or bad
// value fails.
func TestDropInsVerify(t *testing.T) {
	testsd.Process(t)
	drops, _ := filepath.Glob("../contrib/drop-ins/*.conf")
	if len(drops) == 0 {
		t.Fatal("no drop-ins")
	}
	base, err := os.ReadFile("../contrib/example-worker/example-worker.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drops {
		t.Run(filepath.Base(d), func(t *testing.T) {
			b, _ := os.ReadFile(d)
			_, service, ok := strings.Cut(string(b), "[Service]\n")
			if !ok {
				t.Fatalf("%s has no [Service] section", d)
			}
			dir := t.TempDir()
			unit := strings.Replace(string(base), "[Service]\n", "[Service]\n"+service, 1)
			unit = strings.ReplaceAll(unit, "/usr/bin/baton", "/bin/true") // verify wants executables that exist
			unit = strings.ReplaceAll(unit, "/usr/lib/baton/example-worker", "/bin/true")
			unit = strings.ReplaceAll(unit, "User=myapp", "User=daemon")
			unit = strings.ReplaceAll(unit, "Group=myapp", "Group=daemon")
			sock, _ := os.ReadFile("../contrib/example-worker/example-worker.socket")
			os.WriteFile(filepath.Join(dir, "example-worker.service"), []byte(unit), 0o644)
			os.WriteFile(filepath.Join(dir, "example-worker.socket"), sock, 0o644)
			out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "example-worker.service"), filepath.Join(dir, "example-worker.socket")).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("systemd-analyze verify with %s: %v\n%s", filepath.Base(d), err, out)
			}
		})
	}
}
