package hygiene

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// layerOf names the layer a test file belongs to by its path (see
// internal/testsd's layers.go), and the call each of its tests starts
// with: "" for the unit and fake-world layers, which go test -short runs.
func layerOf(rel string) (layer, call string) {
	rel = filepath.ToSlash(rel)
	switch {
	case strings.HasPrefix(rel, "e2e/"):
		return "container", "Container"
	case strings.HasSuffix(rel, "_process_test.go"), strings.HasPrefix(rel, "faults/"), strings.HasPrefix(rel, "compat/"):
		return "process", "Process"
	}
	return "", ""
}

// TestSlowLayersSkipWithShort: every test of the process and container
// layers starts with testsd.Process(t) or testsd.Container(t), so that go
// test -short skips it; and a test file outside them that imports
// internal/testsd (which runs baton under a stand-in systemd) is named as
// a process test, so that the first rule reaches it.
func TestSlowLayersSkipWithShort(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	checked := map[string]int{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		layer, call := layerOf(rel)
		if layer == "" {
			for _, imp := range f.Imports {
				if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/batonsd/baton/internal/testsd" {
					t.Errorf("%s imports internal/testsd, which runs real processes: name it *_process_test.go", rel)
				}
			}
			return nil
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv != nil || !strings.HasPrefix(fn.Name.Name, "Test") || fn.Name.Name == "TestMain" {
				continue
			}
			checked[layer]++
			if !startsWith(fn, "testsd", call) {
				t.Errorf("%s: %s, a test of the %s layer, does not start with testsd.%s(t): go test -short would run it",
					rel, fn.Name.Name, layer, call)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Not vacuous: the walk found the layers where they are.
	if checked["process"] < 50 || checked["container"] < 3 {
		t.Fatalf("checked %d process and %d container tests: did the walk miss the repository?", checked["process"], checked["container"])
	}
}

// startsWith reports whether fn's first statement is pkg.name(p), p being
// fn's first parameter.
func startsWith(fn *ast.FuncDecl, pkg, name string) bool {
	params := fn.Type.Params.List
	if len(params) == 0 || len(params[0].Names) == 0 || fn.Body == nil || len(fn.Body.List) == 0 {
		return false
	}
	stmt, ok := fn.Body.List[0].(*ast.ExprStmt)
	if !ok {
		return false
	}
	c, ok := stmt.X.(*ast.CallExpr)
	if !ok || len(c.Args) != 1 {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	arg, ok2 := c.Args[0].(*ast.Ident)
	return ok && ok2 && x.Name == pkg && arg.Name == params[0].Names[0].Name
}
