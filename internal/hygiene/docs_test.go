package hygiene

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestFleetRecipesInDocs: the playbook and the HAProxy configuration that
// docs/fleet.md shows are the files e2e's TestFleet runs.
func TestFleetRecipesInDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	doc, err := os.ReadFile(filepath.Join(root, "docs", "fleet.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"contrib/fleet/deploy.yml", "contrib/fleet/haproxy.cfg"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, b) {
			t.Errorf("docs/fleet.md does not show %s as it is", f)
		}
	}
}
