package hygiene

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// TestMarkdownLinks: every relative link in a tracked Markdown file leads to
// a file that exists and, when it names a #fragment, to a heading of that
// file as GitHub makes its anchors. The README was the whole manual once; its
// sections became pages under docs/ that link to each other by heading, and a
// heading renamed or a page moved would break those links silently. The
// README must also link to every page under docs/, so that each is reachable
// from the front door. External links are not fetched.
func TestMarkdownLinks(t *testing.T) {
	root := filepath.Join("..", "..")
	files := markdownFiles(t, root)
	if !slices.Contains(files, "README.md") {
		t.Fatalf("no README.md among %d Markdown files: not this repository?", len(files))
	}
	c := newLinkChecker(root)
	for _, name := range files {
		c.check(name)
	}
	for _, p := range c.problems {
		t.Error(p)
	}
	t.Logf("%d relative links checked in %d Markdown files", c.relative, len(files))
	// A checker that finds no links would pass whatever the pages say.
	if c.relative < 30 {
		t.Errorf("only %d relative links checked in %d files: is the parser still finding them?", c.relative, len(files))
	}

	fromReadme := map[string]bool{}
	for _, l := range c.links["README.md"] {
		fromReadme[l.target] = true
	}
	for _, name := range files {
		if strings.HasPrefix(name, "docs/") && !fromReadme[name] {
			t.Errorf("README.md does not link to %s: every page under docs/ is listed there", name)
		}
	}
}

// TestMarkdownLinkChecker: the checker finds each kind of broken link in a
// made-up tree, and nothing else: links in code are not links, external ones
// are not fetched, a code file's #L10 is GitHub's line anchor.
func TestMarkdownLinkChecker(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// ' stands for a backtick, which a raw string cannot hold.
	write("README.md", strings.ReplaceAll(`# Front door

See [the guide](docs/guide.md), [its setup](docs/guide.md#setting-it-up),
[a step](docs/guide.md#step-1), [setext](docs/guide.md#a-setext-heading), [the code](src/main.go#L10-L12), [the
source dir](src/), [here](#front-door) and <https://example.com/x.md>, and
[elsewhere](https://example.com/gone.md#nowhere) or [mail](mailto:a@b.c).

Broken: [a page](docs/missing.md), [a heading](docs/guide.md#no-such-heading),
[a page that moved](
docs/old.md) and [here too](#nothing-here), [a line](src/main.go#main),
[up and out](../outside.md), ![a picture](img/gone.png).

'[in code](docs/missing-in-code.md)' and ''[in a span
across lines](docs/missing-in-code.md)''

'''md
[in a fence](docs/missing-in-fence.md)
# Not a heading
'''

[ref]: docs/guide.md#step
[bad ref]: docs/nowhere.md
`, "'", "`"))
	write("docs/guide.md", "# Guide\n\n## Setting it up\n\n## Step\n\n## Step\n\nA setext heading\n----------------\n\nBack to [the README](../README.md#front-door).\n")
	write("src/main.go", "package main\n")

	c := newLinkChecker(root)
	c.check("README.md")
	c.check("docs/guide.md")
	want := []string{
		"README.md:8: docs/missing.md: no such file",
		"README.md:8: docs/guide.md#no-such-heading: no heading with that anchor in docs/guide.md",
		"README.md:10: docs/old.md: no such file",
		"README.md:10: #nothing-here: no heading with that anchor in README.md",
		"README.md:10: src/main.go#main: not a line anchor (#L10) in a file that is not Markdown",
		"README.md:11: ../outside.md: outside the repository",
		"README.md:11: img/gone.png: no such file",
		"README.md:22: docs/nowhere.md: no such file",
	}
	if !slices.Equal(c.problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(c.problems, "\n"), strings.Join(want, "\n"))
	}
	if c.relative != 17 {
		t.Errorf("%d relative links checked, want 17", c.relative)
	}
}

// TestGitHubAnchor: headings as GitHub turns them into anchors.
func TestGitHubAnchor(t *testing.T) {
	for _, tc := range []struct{ heading, anchor string }{
		{"The engine, in reading order", "the-engine-in-reading-order"},
		{"baton's own footprint", "batons-own-footprint"},
		{"Ansible's `deploy_helper`", "ansibles-deploy_helper"},
		{"Readiness without sd_notify: `--ready listening`", "readiness-without-sd_notify---ready-listening"},
		{"In place: `git pull`", "in-place-git-pull"},
		{"Release directories: Capistrano, Deployer, mina", "release-directories-capistrano-deployer-mina"},
		{"Long-lived connections (WebSockets, streams)", "long-lived-connections-websockets-streams"},
		{"See [the guide](docs/guide.md) **now**", "see-the-guide-now"},
		{"C++ & Go → 2 <em>x</em>", "c--go--2-x"},
		{"Ünïcode Überall", "ünïcode-überall"},
	} {
		t.Run(tc.heading, func(t *testing.T) {
			if got := githubAnchor(tc.heading); got != tc.anchor {
				t.Errorf("githubAnchor(%q) = %q, want %q", tc.heading, got, tc.anchor)
			}
		})
	}
}

// markdownFiles lists the tracked Markdown files under root, slash-separated
// and relative to it; outside a git work tree (a source tarball), every
// Markdown file under root but in hidden directories.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	if exec.Command("git", "-C", root, "rev-parse", "--is-inside-work-tree").Run() == nil {
		out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--", "*.md").Output()
		if err != nil {
			t.Fatalf("git ls-files: %v", err)
		}
		var files []string
		for _, name := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
			if _, err := os.Stat(filepath.Join(root, name)); err == nil {
				files = append(files, name) // not deleted in the work tree
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return files
}

// mdLink is a link as written (dest) at a line, and the file it leads to,
// relative to the root ("" when it leads out of the tree or nowhere local).
type mdLink struct {
	line   int
	dest   string
	target string
}

// linkChecker checks the links of Markdown files under root, reading each
// file it needs once.
type linkChecker struct {
	root     string
	anchors  map[string]map[string]bool // file: its headings' anchors
	links    map[string][]mdLink        // file: its relative links
	problems []string                   // "file:line: dest: what is wrong"
	relative int                        // relative links checked
}

func newLinkChecker(root string) *linkChecker {
	return &linkChecker{root: root, anchors: map[string]map[string]bool{}, links: map[string][]mdLink{}}
}

func (c *linkChecker) problem(file string, l mdLink, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("%s:%d: %s: %s", file, l.line, l.dest, fmt.Sprintf(format, args...)))
}

// anchorsOf parses name (relative to the root) for its anchors.
func (c *linkChecker) anchorsOf(name string) map[string]bool {
	if a, ok := c.anchors[name]; ok {
		return a
	}
	b, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(name)))
	if err != nil {
		c.problems = append(c.problems, fmt.Sprintf("%s: %v", name, err))
	}
	_, a := parseMarkdown(string(b))
	c.anchors[name] = a
	return a
}

// check checks the links of name, a Markdown file relative to the root.
func (c *linkChecker) check(name string) {
	b, err := os.ReadFile(filepath.Join(c.root, filepath.FromSlash(name)))
	if err != nil {
		c.problems = append(c.problems, fmt.Sprintf("%s: %v", name, err))
		return
	}
	links, anchors := parseMarkdown(string(b))
	c.anchors[name] = anchors
	for _, l := range links {
		if hasScheme.MatchString(l.dest) {
			continue // external: not fetched
		}
		c.relative++
		p, frag, _ := strings.Cut(l.dest, "#")
		p, _, _ = strings.Cut(p, "?")
		if u, err := url.PathUnescape(p); err == nil {
			p = u
		}
		if u, err := url.PathUnescape(frag); err == nil {
			frag = u
		}
		switch {
		case p == "":
			l.target = name
		case strings.HasPrefix(p, "/"):
			l.target = path.Clean(strings.TrimPrefix(p, "/"))
		default:
			l.target = path.Clean(path.Join(path.Dir(name), p))
		}
		if l.target == ".." || strings.HasPrefix(l.target, "../") {
			c.problem(name, l, "outside the repository")
			continue
		}
		fi, err := os.Stat(filepath.Join(c.root, filepath.FromSlash(l.target)))
		if err != nil {
			c.problem(name, l, "no such file")
			continue
		}
		c.links[name] = append(c.links[name], l)
		switch {
		case frag == "":
		case fi.IsDir():
			c.problem(name, l, "a #fragment on a directory")
		case strings.HasSuffix(l.target, ".md"):
			if !c.anchorsOf(l.target)[frag] {
				c.problem(name, l, "no heading with that anchor in %s", l.target)
			}
		case !lineAnchor.MatchString(frag):
			c.problem(name, l, "not a line anchor (#L10) in a file that is not Markdown")
		}
	}
}

var (
	hasScheme  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
	lineAnchor = regexp.MustCompile(`^L[0-9]+(-L[0-9]+)?$`)
	atxHeading = regexp.MustCompile(`^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	setextLine = regexp.MustCompile(`^ {0,3}(?:=+|-+)[ \t]*$`)
	fenceOpen  = regexp.MustCompile("^[ \t]*(`{3,}|~{3,})")
	refDef     = regexp.MustCompile(`(?m)^ {0,3}\[[^\]^][^\]]*\]:[ \t]*<?([^\s>]+)`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTag    = regexp.MustCompile(`<[^>]*>`)
	notSetext  = regexp.MustCompile(`^\s*(?:[-*+>|#]|[0-9]+[.)])`)
)

// parseMarkdown returns text's links, with the line each is on, and the
// anchors of its headings. Fenced code blocks hold neither, and code spans
// hold no links. Indented code blocks are taken as text: these pages have
// none.
func parseMarkdown(text string) ([]mdLink, map[string]bool) {
	lines := strings.Split(text, "\n")
	anchors := map[string]bool{}
	seen := map[string]int{}
	addHeading := func(h string) {
		// As github-slugger: a repeated anchor gets -1, -2, ...
		orig := githubAnchor(h)
		a := orig
		for {
			if _, dup := seen[a]; !dup {
				break
			}
			seen[orig]++
			a = fmt.Sprintf("%s-%d", orig, seen[orig])
		}
		seen[a] = 0
		anchors[a] = true
	}
	var links []mdLink
	var block []string // the lines of the current run outside fences
	blockStart := 0
	flush := func() {
		links = append(links, blockLinks(strings.Join(block, "\n"), blockStart)...)
		block = nil
	}
	fence := ""
	for i, line := range lines {
		if fence != "" {
			if t := strings.TrimSpace(line); strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if m := fenceOpen.FindStringSubmatch(line); m != nil {
			flush()
			fence = m[1]
			continue
		}
		if len(block) == 0 {
			blockStart = i
		}
		block = append(block, line)
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if m := atxHeading.FindStringSubmatch(line); m != nil {
			addHeading(m[1])
		} else if i > 0 && setextLine.MatchString(line) && len(block) > 1 {
			prev := lines[i-1]
			if strings.TrimSpace(prev) != "" && !notSetext.MatchString(prev) {
				addHeading(strings.TrimSpace(prev))
			}
		}
	}
	flush()
	return links, anchors
}

// blockLinks finds the inline links and images, and the link reference
// definitions, in text, a run of lines outside fenced code whose first line
// is line first (0-based).
func blockLinks(text string, first int) []mdLink {
	b := []byte(blankCodeSpans(text))
	lineAt := func(off int) int { return first + 1 + strings.Count(string(b[:off]), "\n") }
	var links []mdLink
	for _, m := range refDef.FindAllSubmatchIndex(b, -1) {
		links = append(links, mdLink{line: lineAt(m[2]), dest: string(b[m[2]:m[3]])})
	}
	for i := 0; i+1 < len(b); i++ {
		if b[i] != ']' || b[i+1] != '(' || !opensBracket(b[:i]) {
			continue
		}
		j := i + 2
		for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\n') {
			j++
		}
		start := j
		var dest string
		if j < len(b) && b[j] == '<' {
			end := strings.IndexByte(string(b[j:]), '>')
			if end < 0 {
				continue
			}
			start, dest = j+1, string(b[j+1:j+end])
		} else {
			depth := 0
		scan:
			for ; j < len(b); j++ {
				switch b[j] {
				case '(':
					depth++
				case ')':
					if depth == 0 {
						break scan
					}
					depth--
				case ' ', '\t', '\n':
					break scan
				}
			}
			dest = string(b[start:j])
		}
		if dest != "" {
			links = append(links, mdLink{line: lineAt(start), dest: dest})
		}
	}
	return links
}

// opensBracket reports whether the text before a "]" holds the "[" that
// opens it, counting nested brackets.
func opensBracket(before []byte) bool {
	depth := 0
	for i := len(before) - 1; i >= 0; i-- {
		switch before[i] {
		case ']':
			depth++
		case '[':
			if depth == 0 {
				return true
			}
			depth--
		}
	}
	return false
}

// blankCodeSpans replaces each code span's content (between backtick runs of
// equal length, across lines too) with spaces, keeping newlines, so that
// offsets still map to lines. A backtick run with no closing run is text.
func blankCodeSpans(text string) string {
	b := []byte(text)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		n := 0
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		end := closingRun(b, i+n, n)
		if end < 0 {
			i += n
			continue
		}
		for k := i + n; k < end; k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
		i = end + n
	}
	return string(b)
}

// closingRun finds, from off, a run of exactly n backticks, and returns its
// offset, or -1.
func closingRun(b []byte, off, n int) int {
	for i := off; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		m := 0
		for i+m < len(b) && b[i+m] == '`' {
			m++
		}
		if m == n {
			return i
		}
		i += m
	}
	return -1
}

// githubAnchor is the anchor GitHub gives a heading: its text as rendered
// (code spans without their backticks, links as their text, no HTML tags),
// lower case, every character but letters, marks, digits, connector
// punctuation ('_'), '-' and ' ' dropped, each space then a '-'.
func githubAnchor(heading string) string {
	text := inlineLink.ReplaceAllString(heading, "$1")
	text = htmlTag.ReplaceAllString(text, "")
	var sb strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			sb.WriteByte('-')
		case r == '-' || unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r) || unicode.Is(unicode.Pc, r):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}
