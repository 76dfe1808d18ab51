package hygiene

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxTracked bounds a tracked file: the largest source file is some 40 KB
// (e2e/e2e_test.go); a build output is megabytes.
const maxTracked = 512 << 10

// TestNoBuildOutputTracked: no tracked file is a build output (an
// executable, an archive such as a .deb) or larger than maxTracked. A 14 MB
// baton binary was once committed at the root, where `go build
// ./cmd/baton` leaves it; .gitignore now keeps such files out.
func TestNoBuildOutputTracked(t *testing.T) {
	root := filepath.Join("..", "..")
	if err := exec.Command("git", "-C", root, "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		t.Skip("not a git work tree (a source tarball): nothing is tracked")
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(files) < 50 {
		t.Fatalf("git ls-files listed %d files: not this repository?", len(files))
	}
	for _, name := range files {
		path := filepath.Join(root, name)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or a symlink
		}
		if fi.Size() > maxTracked {
			t.Errorf("%s: %d bytes tracked, more than %d: a build output or data that belongs elsewhere", name, fi.Size(), maxTracked)
		}
		head := make([]byte, 8)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := f.Read(head)
		f.Close()
		switch head = head[:n]; {
		case bytes.HasPrefix(head, []byte("\x7fELF")):
			t.Errorf("%s is an executable (ELF): a build output", name)
		case bytes.HasPrefix(head, []byte("!<arch>\n")):
			t.Errorf("%s is an ar archive (a .deb?): a build output", name)
		}
	}
}
