package hygiene

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Name       string
	Imports    []string
	Deps       []string
	Standard   bool
}

// list runs go list -json on the module's packages.
func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

const module = "github.com/batonsd/baton"

// TestImportRules: the architecture as rules on imports.
//   - activation, notify and units are libraries a Go worker can import:
//     the standard library and golang.org/x/sys only;
//   - only internal/systemd talks D-Bus;
//   - only cmd/baton imports the CLI framework and the TOML parser;
//   - no binary links the testing package, nor Prometheus's libraries
//     (only tests parse the metrics with them: docs/operating.md, Metrics).
func TestImportRules(t *testing.T) {
	std := map[string]bool{}
	for _, p := range list(t, "std") {
		std[p.ImportPath] = true
	}
	pkgs := list(t, "./...")
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	only := map[string][]string{ // import path prefix: the packages allowed to import it
		"github.com/godbus/dbus":                {module + "/internal/systemd"},
		"github.com/coreos/go-systemd/v22/dbus": {module + "/internal/systemd"},
		"github.com/urfave/cli":                 {module + "/cmd/baton"},
		"github.com/BurntSushi/toml":            {module + "/cmd/baton"},
	}
	for _, p := range pkgs {
		for _, imp := range p.Imports {
			for prefix, allowed := range only {
				if strings.HasPrefix(imp, prefix) && !slices.Contains(allowed, p.ImportPath) {
					t.Errorf("%s imports %s: only %v may", p.ImportPath, imp, allowed)
				}
			}
		}
		switch strings.TrimPrefix(p.ImportPath, module+"/") {
		case "activation", "notify", "units":
			for _, imp := range p.Imports {
				if !std[imp] && !strings.HasPrefix(imp, "golang.org/x/sys/") {
					t.Errorf("%s imports %s: a public library imports only the standard library and golang.org/x/sys", p.ImportPath, imp)
				}
			}
		}
		if p.Name == "main" && slices.Contains(p.Deps, "testing") {
			t.Errorf("the binary %s links the testing package", p.ImportPath)
		}
		for _, d := range p.Deps {
			if p.Name == "main" && strings.HasPrefix(d, "github.com/prometheus/") {
				t.Errorf("the binary %s links %s", p.ImportPath, d)
			}
		}
	}
}
