package envfile

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Rules cite systemd's src/basic/env-file.c, parse_env_file_internal (PEFI)
// unless said otherwise. "252 confirms" marks a case also run through
// systemd 252's environment-d generator, which uses the same tokenizer.
var parseTests = []struct {
	name string
	in   string
	want []Var
}{
	{"empty file", "", nil},
	{"blank lines and whitespace only", "\n  \n\t\n\r\n", nil}, // PRE_KEY skips WHITESPACE
	{"simple", "A=1\n", []Var{{"A", "1", 1}}},
	{"no final newline", "A=1", []Var{{"A", "1", 1}}}, // EOF in VALUE pushes
	{"lowercase and underscore keys", "a=1\n_=2\n_a1B=3\n", []Var{{"a", "1", 1}, {"_", "2", 2}, {"_a1B", "3", 3}}},

	// Comments: a line whose first non-whitespace character is # or ; (COMMENTS).
	{"hash comment", "# c\nA=1\n", []Var{{"A", "1", 2}}},
	{"semicolon comment", "; c\nA=1\n", []Var{{"A", "1", 2}}},
	{"indented comment", "  \t# A=1\nB=2", []Var{{"B", "2", 2}}},
	{"comment holding an assignment", "#A=1\n", nil},
	{"comment ending in an escaped backslash", "# c \\\\\nA=1\n", []Var{{"A", "1", 2}}}, // COMMENT_ESCAPE eats the 2nd backslash
	{"comment ending in a backslash at end of file", "A=1\n# c \\", []Var{{"A", "1", 1}}},
	{"comment ending in a backslash and a final newline", "A=1\n# c \\\n", []Var{{"A", "1", 1}}},
	// Backslash-CRLF: both v252 and v254+ end the comment at the LF.
	{"comment ending in a backslash with CRLF", "# c \\\r\nA=1\r\n", []Var{{"A", "1", 2}}},
	{"hash after a value is literal", "A=a # b\n", []Var{{"A", "a # b", 1}}},            // VALUE keeps '#'; 252 confirms
	{"hash after a closing quote is literal", "A=\"a\" # b\n", []Var{{"A", "a# b", 1}}}, // PRE_VALUE skips ' ', then VALUE; 252 confirms
	{"semicolon in a value", "A=a;b\n", []Var{{"A", "a;b", 1}}},                         // only PRE_KEY looks at COMMENTS
	{"whitespace before the key", "  \tA=1\n", []Var{{"A", "1", 1}}},                    // PRE_KEY skips WHITESPACE
	{"whitespace around =", "A \t= \t b\n", []Var{{"A", "b", 1}}},                       // last_key_whitespace; PRE_VALUE skips
	{"trailing whitespace trimmed", "A=b c \t \n", []Var{{"A", "b c", 1}}},              // last_value_whitespace
	{"interior whitespace kept", "A=b   c\n", []Var{{"A", "b   c", 1}}},                 // VALUE appends whitespace
	{"vertical tab is not whitespace", "A=\vx\v\n", []Var{{"A", "\vx\v", 1}}},           // WHITESPACE is " \t\n\r"
	{"control characters kept", "A=a\x01b\x7f\n", []Var{{"A", "a\x01b\x7f", 1}}},        // env_value_is_valid allows them
	{"UTF-8 value", "A=héllo ✓\n", []Var{{"A", "héllo ✓", 1}}},                          // utf8_is_valid
	{"equals sign in a value", "A=b=c\n", []Var{{"A", "b=c", 1}}},                       // only the first '=' ends the key
	{"no expansion", "A=$HOME ${HOME} $(id)\n", []Var{{"A", "$HOME ${HOME} $(id)", 1}}}, // load_env_file never expands
	{"tab before =", "A\t=1\n", []Var{{"A", "1", 1}}},                                   // 252 confirms

	// Empty values: a NULL value is pushed as "KEY=" (strjoin stops at NULL).
	{"empty value", "A=\nB=2\n", []Var{{"A", "", 1}, {"B", "2", 2}}},
	{"empty value at end of file", "A=", []Var{{"A", "", 1}}}, // test-env-file.c env_file_5
	{"whitespace-only value", "A=   \n", []Var{{"A", "", 1}}},
	{"empty double quotes", "A=\"\"\n", []Var{{"A", "", 1}}},
	{"empty single quotes", "A=''\n", []Var{{"A", "", 1}}},

	// Single quotes: literal up to the next ', newlines included, no escapes.
	{"single quotes are literal", `A='a " \ \\ $B ${C} \n # ;'`, []Var{{"A", `a " \ \\ $B ${C} \n # ;`, 1}}},
	{"single quotes keep whitespace", "A='  x  '\n", []Var{{"A", "  x  ", 1}}},
	{"single quotes span lines", "A='x\ny'\nB=1\n", []Var{{"A", "x\ny", 1}, {"B", "1", 3}}}, // 252 confirms
	{"single quote backslash-newline kept", "A='x\\\ny'", []Var{{"A", "x\\\ny", 1}}},

	// Double quotes: \" \\ \` \$ unescape (SHELL_NEED_ESCAPE), backslash-LF is
	// a continuation, any other backslash is kept with its character.
	{"double quote escapes", "A=\"a\\\"b\\\\c\\`d\\$e\"\n", []Var{{"A", "a\"b\\c`d$e", 1}}}, // 252 confirms
	{"double quote other backslashes kept", `A="a\nb\tc\x\'"`, []Var{{"A", `a\nb\tc\x\'`, 1}}},
	{"double quote continuation", "A=\"ab\\\ncd\"\n", []Var{{"A", "abcd", 1}}},            // 252 confirms
	{"double quote backslash-CRLF kept", "A=\"x\\\r\ny\"\n", []Var{{"A", "x\\\r\ny", 1}}}, // only '\n' is eaten; 252 confirms
	{"double quotes span lines", "A=\"x\ny\"\nB=1\n", []Var{{"A", "x\ny", 1}, {"B", "1", 3}}},
	{"double quotes keep CRLF", "A=\"x\r\ny\"\r\nB=1\r\n", []Var{{"A", "x\r\ny", 1}, {"B", "1", 3}}},
	{"double quotes keep whitespace and hash", "A=\" a # b \"\n", []Var{{"A", " a # b ", 1}}},
	{"double quote with escaped newline at start", "A=\"\\\nx\"", []Var{{"A", "x", 1}}},

	// After a closing quote PRE_VALUE skips whitespace and takes more parts.
	{"quoted parts concatenate", "A='x'  \"y\" z \n", []Var{{"A", "xyz", 1}}}, // 252 confirms
	{"quote then unquoted", "A=\"x\"y\n", []Var{{"A", "xy", 1}}},
	{"quote after unquoted text is literal", "A=x\"y\"\n", []Var{{"A", "x\"y\"", 1}}},    // VALUE does not look at quotes; 252 confirms
	{"quote after a continuation is literal", "A=\\\n\"abc\n", []Var{{"A", "\"abc", 1}}}, // VALUE_ESCAPE goes to VALUE
	{"whitespace after closing quote dropped", "A=\"x \"  \n", []Var{{"A", "x ", 1}}},    // PRE_VALUE push does not trim
	{"quote then continuation", "A=\"x\"\\\ny\n", []Var{{"A", "xy", 1}}},

	// Unquoted values: backslash keeps the next character, backslash-newline
	// is a continuation.
	{"unquoted escapes", `A=a\"b\\c\$d\ne\#`, []Var{{"A", `a"b\c$dne#`, 1}}},
	{"escaped trailing space kept", "A=a\\ \n", []Var{{"A", "a ", 1}}},                      // test-env-file.c g=g\ ; VALUE resets last_value_whitespace
	{"escaped leading space kept", "A=\\ x\n", []Var{{"A", " x", 1}}},                       // PRE_VALUE '\\' goes to VALUE_ESCAPE; 252 confirms
	{"space before a continuation kept", "A=a \\\n", []Var{{"A", "a ", 1}}},                 // the backslash reset last_value_whitespace
	{"continuation", "a=a\nb=b\\\nc\n", []Var{{"a", "a", 1}, {"b", "bc", 2}}},               // test-env-file.c env_file_1
	{"continuations", "d=d\\\ne\\\nf\nh=h\n", []Var{{"d", "def", 1}, {"h", "h", 4}}},        // test-env-file.c env_file_1
	{"continuation keeps leading whitespace", "A=a\\\n   b\n", []Var{{"A", "a   b", 1}}},    // 252 confirms
	{"continuation then end of file", "a=a\\\n", []Var{{"a", "a", 1}}},                      // test-env-file.c env_file_2
	{"backslash at end of file dropped", "h=h\ni=i\\", []Var{{"h", "h", 1}, {"i", "i", 2}}}, // test-env-file.c env_file_1
	{"continuation right after =", "A=\\\n  b\n", []Var{{"A", "  b", 1}}},
	{"continuation with CRLF ends the value", "A=foo\\\r\nB=2\r\n", []Var{{"A", "foo", 1}, {"B", "2", 2}}}, // only the CR is eaten; 252 confirms
	{"continuation before a blank line", "A=x\\\n\nB=1\n", []Var{{"A", "x", 1}, {"B", "1", 3}}},

	// Line endings: NEWLINE is "\n\r".
	{"CRLF", "A=1\r\nB=2\r\n", []Var{{"A", "1", 1}, {"B", "2", 2}}},       // 252 confirms
	{"lone CR", "A=1\rB=2\r", []Var{{"A", "1", 1}, {"B", "2", 2}}},        // 252 confirms
	{"CRLF with trailing whitespace", "A=1 \t\r\n", []Var{{"A", "1", 1}}}, // last_value_whitespace

	// Duplicates: all returned in order; the last wins when applied
	// (strv_env_replace_consume in load_env_file_push).
	{"duplicates in order", "A=1\nB=2\nA=3\n", []Var{{"A", "1", 1}, {"B", "2", 2}, {"A", "3", 3}}},

	// Line numbers: the line on which the key starts.
	{"line numbers after blank lines and comments", "\n\n# c\n\nA=1\n", []Var{{"A", "1", 5}}},
	{"line numbers after a continued value", "A=a\\\nb\nB=1\n", []Var{{"A", "ab", 1}, {"B", "1", 3}}},
	{"realistic", "# app\nDATABASE_URL=postgres://u:p@db/app?sslmode=require\nGREETING=\"hello, world\"\nPEM=\"-----BEGIN X-----\nAAAA\n-----END X-----\"\nEMPTY=\n",
		[]Var{
			{"DATABASE_URL", "postgres://u:p@db/app?sslmode=require", 2},
			{"GREETING", "hello, world", 3},
			{"PEM", "-----BEGIN X-----\nAAAA\n-----END X-----", 4},
			{"EMPTY", "", 7},
		}},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("test.env", strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

var errorTests = []struct {
	name string
	in   string
	line int    // 0: no line
	msg  string // the message after "envfile: test.env:LINE: "
}{
	// Invalid keys: systemd drops them (exec_context_load_environment,
	// strv_env_clean_with_callback); baton refuses.
	{"key starting with a digit", "A=1\n1FOO=bar\n", 2, `invalid key: it starts with a digit`},
	{"key with a dash", "FOO-BAR=1", 1, `invalid key: it contains a character other than a letter, a digit or '_'`},
	{"key with a dot", "foo.bar=1", 1, `invalid key: it contains a character other than a letter, a digit or '_'`},
	{"key with a space", "FOO BAR=1", 1, `invalid key: it contains whitespace`}, // KEY keeps interior whitespace
	{"export prefix", "export FOO=bar", 1, `invalid key: systemd has no "export" prefix`},
	{"export prefix with a tab", "export\tFOO=bar", 1, `invalid key: systemd has no "export" prefix`},
	{"non-ASCII key", "FÖO=1", 1, `invalid key: it contains a non-ASCII character`},
	{"quoted key", `"FOO"=1`, 1, `invalid key: it contains a character other than a letter, a digit or '_'`},     // quotes are literal in KEY
	{"hash inside a key", "A#=1", 1, `invalid key: it contains a character other than a letter, a digit or '_'`}, // only PRE_KEY looks at COMMENTS
	{"key too long", strings.Repeat("A", MaxKeyLen+1) + "=1", 1, "invalid key: it is longer than 1024 bytes"},
	{"long invalid key not shown", strings.Repeat("AB+/", 12) + "=", 1, "invalid key: it contains a character other than a letter, a digit or '_'"},
	{"no key before =", "A=1\n=foo\n", 2, "an assignment has no key before '='"},
	{"no key before = after whitespace", "  = x", 1, "an assignment has no key before '='"},

	// Lines without '=': systemd ignores them silently.
	{"line without =", "A=1\nFOO\nB=2\n", 2, "the line has no '='"},
	{"line without = at end of file", "A=1\nFOO", 2, "the line has no '='"},
	{"line without = after CRLF", "A=1\r\nFOO\r\n", 2, "the line has no '='"},
	{"form feed alone", "\f\n", 1, "the line has no '='"}, // \f is not WHITESPACE

	// Unterminated quotes: systemd keeps what follows the quote.
	{"unterminated double quote", "A=1\nB=\"abc\ndef\n", 2, `the double quote opened here is never closed`},
	{"unterminated single quote", "B='abc", 1, `the single quote opened here is never closed`},
	{"unterminated double quote after an escape", "B=\"abc\\", 1, `the double quote opened here is never closed`},
	{"quote opened on a later line", "A='x\ny'\"abc", 2, `the double quote opened here (in the value assigned on line 1) is never closed`},

	// Whole-file problems.
	{"byte order mark", "\xEF\xBB\xBFA=1\n", 1, "the file starts with a UTF-8 byte order mark"},       // 252 drops "\xEF\xBB\xBFA"
	{"NUL byte", "A=1\nB=\x00\n", 2, "the file contains a NUL byte"},                                  // read_full_stream: EBADMSG
	{"invalid UTF-8 value", "A=1\nB=\xff\n", 2, `the value assigned on this line is not valid UTF-8`}, // check_utf8ness_and_warn
	{"invalid UTF-8 in a multi-line value", "B=\"x\n\xc3\"\n", 1, `the value assigned on this line is not valid UTF-8`},
	{"noncharacter U+FDD0", "B=\uFDD0\n", 1, `the value assigned on this line is not valid UTF-8 (or holds a Unicode noncharacter)`}, // unichar_is_valid
	{"noncharacter U+FFFE", "B=\xEF\xBF\xBE\n", 1, `the value assigned on this line is not valid UTF-8`},
	{"surrogate", "B=\xED\xA0\x80\n", 1, `the value assigned on this line is not valid UTF-8`},

	// Comment ending in a backslash: v252 swallows the next line, v254+ not.
	{"comment ending in a backslash", "A=1\n# c \\\nB=2\n", 2, "a comment ends with a backslash"},
	{"comment ending in a backslash before a lone CR", "# c \\\rB=2", 1, "a comment ends with a backslash"},
	{"comment ending in a backslash before a blank line", "# c \\\n\n", 1, "a comment ends with a backslash"},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			vars, err := Parse("test.env", strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want an error", tt.in, vars)
			}
			if vars != nil {
				t.Errorf("Parse(%q) returned %v with its error", tt.in, vars)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is a %T, not an *Error", err, err)
			}
			if pe.Name != "test.env" || pe.Line != tt.line {
				t.Errorf("error at %s:%d, want test.env:%d (%v)", pe.Name, pe.Line, tt.line, err)
			}
			prefix := "envfile: test.env:" + strconv.Itoa(tt.line) + ": "
			if !strings.HasPrefix(err.Error(), prefix+tt.msg) {
				t.Errorf("error\n  %q\ndoes not start with\n  %q", err, prefix+tt.msg)
			}
		})
	}
}

func TestExportIsAValidKey(t *testing.T) {
	got, err := Parse("test.env", strings.NewReader("export=1\n"))
	if err != nil || len(got) != 1 || got[0].Key != "export" {
		t.Errorf("Parse(export=1) = %v, %v", got, err)
	}
}

func TestErrorMessageFormat(t *testing.T) {
	in := strings.Repeat("# comment\n", 6) + "1FOO=bar\n"
	_, err := Parse("/srv/app/shared/.env", strings.NewReader(in))
	want := `envfile: /srv/app/shared/.env:7: invalid key: it starts with a digit; keys are [A-Za-z_][A-Za-z0-9_]* (systemd would drop this assignment)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v\nwant %s", err, want)
	}
}

func TestLimits(t *testing.T) {
	t.Run("too many assignments", func(t *testing.T) {
		in := strings.Repeat("A=1\n", MaxVars+1)
		_, err := Parse("test.env", strings.NewReader(in))
		want := "envfile: test.env:4097: more than 4096 assignments"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %s", err, want)
		}
	})
	t.Run("MaxVars assignments", func(t *testing.T) {
		vars, err := Parse("test.env", strings.NewReader(strings.Repeat("A=1\n", MaxVars)))
		if err != nil || len(vars) != MaxVars {
			t.Errorf("got %d vars, %v", len(vars), err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		in := "A=" + strings.Repeat("x", MaxSize-1) // MaxSize+1 bytes
		_, err := Parse("big.env", strings.NewReader(in))
		want := "envfile: big.env: file is larger than 1048576 bytes"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %s", err, want)
		}
	})
	t.Run("MaxSize bytes", func(t *testing.T) {
		in := "A=" + strings.Repeat("x", MaxSize-2)
		vars, err := Parse("big.env", strings.NewReader(in))
		if err != nil || len(vars) != 1 || len(vars[0].Value) != MaxSize-2 {
			t.Errorf("got %d vars, %v", len(vars), err)
		}
	})
	t.Run("read error", func(t *testing.T) {
		_, err := Parse("broken.env", errReader{})
		if err == nil || !strings.HasPrefix(err.Error(), "envfile: broken.env: read: ") {
			t.Errorf("error = %v", err)
		}
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{
		"A": true, "_": true, "a": true, "FOO_BAR2": true, "_1": true,
		strings.Repeat("A", MaxKeyLen): true,
		"":                             false, "1": false, "1A": false, "A-B": false, "A B": false, "A=B": false,
		"A.B": false, "É": false, "A\x00": false, "export FOO": false,
		strings.Repeat("A", MaxKeyLen+1): false,
	} {
		if got := ValidKey(k); got != want {
			t.Errorf("ValidKey(%q) = %v, want %v", k, got, want)
		}
	}
}

// TestErrorsHideValues: no error shows a value, whatever the error.
func TestErrorsHideValues(t *testing.T) {
	const secret = "S3CRET"
	for _, in := range []string{
		"A=" + secret + "\n1B=x\n",                       // invalid key after a value
		"A=\"" + secret,                                  // unterminated double quote
		"A='" + secret + "\nmore",                        // unterminated single quote
		"A=" + secret + "\xff\n",                         // invalid UTF-8 value
		"A=\"" + secret + "\n\xc3\"",                     // invalid UTF-8 in a multi-line value
		"A=" + secret + "\n" + secret + "\n",             // a value pasted on its own line
		"A=" + secret + "\x00\n",                         // NUL in a value
		"# " + secret + " \\\nA=1\n",                     // comment ending in a backslash
		"A=" + secret + "\n=" + secret + "\n",            // no key
		strings.Repeat("A="+secret+"\n", MaxVars+1),      // too many
		"\xEF\xBB\xBFA=" + secret,                        // byte order mark
		"A=" + secret + strings.Repeat("x", MaxSize),     // too large
		"export A=" + secret,                             // export prefix
		"A=\"" + secret + "\" " + secret + "\n" + secret, // a broken multi-line value
		// A broken multi-line value whose stray line looks like an
		// assignment: a long "key" is not shown.
		"PEM=\"-----BEGIN-----\"\nMIIEv" + secret + "QIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAg+/EAAoIBAQC7=\n",
	} {
		_, err := Parse("test.env", strings.NewReader(in))
		if err == nil {
			t.Errorf("Parse(%.40q) did not fail", in)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows a value: %v", err)
		}
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.env")
	if err := os.WriteFile(good, []byte("A=1\nB='two words'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Read(good)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Var{{"A", "1", 1}, {"B", "two words", 2}}, got); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}

	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("A=1\n\nB C=2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Read(bad)
	if err == nil || !strings.HasPrefix(err.Error(), "envfile: "+bad+":3: ") {
		t.Errorf("Read(bad) error = %v", err)
	}

	missing := filepath.Join(dir, "missing.env")
	_, err = Read(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) error = %v", err)
	}
}

// quote writes v as a double-quoted EnvironmentFile= value, escaping what
// systemd's write_env_var escapes (SHELL_NEED_ESCAPE).
func quote(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if shellNeedEscape(v[i]) {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add([]byte(tt.in))
	}
	for _, tt := range errorTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, err := Parse("fuzz.env", strings.NewReader(string(data)))
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Name != "fuzz.env" {
				t.Fatalf("error %v (%T) does not name the file", err, err)
			}
			if !strings.HasPrefix(err.Error(), "envfile: fuzz.env") {
				t.Fatalf("error %q does not start with the file name", err)
			}
			if vars != nil {
				t.Fatalf("vars %v returned with error %v", vars, err)
			}
			return
		}
		if len(vars) > MaxVars {
			t.Fatalf("%d vars", len(vars))
		}
		last := 1
		var sb strings.Builder
		for _, v := range vars {
			if !ValidKey(v.Key) {
				t.Fatalf("invalid key %q returned", v.Key)
			}
			if v.Line < last {
				t.Fatalf("line %d after line %d", v.Line, last)
			}
			last = v.Line
			if strings.IndexByte(v.Value, 0) >= 0 {
				t.Fatalf("value of %s holds a NUL", v.Key)
			}
			sb.WriteString(v.Key + "=" + quote(v.Value) + "\n")
		}
		// Written back as systemd writes env files, the result parses the same.
		again, err := Parse("again.env", strings.NewReader(sb.String()))
		if err != nil {
			t.Fatalf("reparse of %q: %v", sb.String(), err)
		}
		if len(again) != len(vars) {
			t.Fatalf("reparse: %d vars, want %d", len(again), len(vars))
		}
		for i := range vars {
			if again[i].Key != vars[i].Key || again[i].Value != vars[i].Value {
				t.Fatalf("reparse: %q=%q, want %q=%q", again[i].Key, again[i].Value, vars[i].Key, vars[i].Value)
			}
		}
	})
}

// TestErrorsShowNoLineText: an error names the file and the line, never
// any of the line's text, a key included: a stray line of a broken
// multi-line value may be part of a secret, and so may what precedes its
// '='.
func TestErrorsShowNoLineText(t *testing.T) {
	const secret = "Zm9vYmFyc2VjcmV0"
	for _, in := range []string{
		"TOKEN=\n" + secret + "+/x==\n",     // a value's line, with a character no key has
		"TOKEN=\n" + secret + " x=\n",       // with whitespace
		"TOKEN=\n9" + secret + "=\n",        // starting with a digit
		"TOKEN=\nexport " + secret + "=1\n", // after "export"
		"TOKEN=\n" + secret + "\u00e9=\n",   // non-ASCII
		"TOKEN=\n\"" + secret + "\"=\n",     // quoted
		"TOKEN=\n" + secret + "#=\n",        // '#'
		secret + "='x\n",                    // an open quote after a valid key
		secret + "=\xff\n",                  // invalid UTF-8 after a valid key
		"TOKEN=\n" + secret + "\n",          // no '='
		"TOKEN=\n" + secret + "-" + secret + "=\n",
	} {
		_, err := Parse("test.env", strings.NewReader(in))
		if err == nil {
			t.Errorf("Parse(%q) did not fail", in)
			continue
		}
		if strings.Contains(err.Error(), secret[:8]) {
			t.Errorf("Parse(%q): the error shows the line's text: %v", in, err)
		}
	}
}

func TestShown(t *testing.T) {
	for k, want := range map[string]string{
		"DATABASE_URL": "DATABASE_URL",
		"_X1":          "_X1",
		"http_proxy":   "http_proxy",
		"no_proxy":     "no_proxy",
		// A base64 line of a value that lost its quotes: a valid key.
		"dGhpcy1pcy1zZWNyZXQ":   "(a 19-byte key, not shown)",
		"rails_env":             "(a 9-byte key, not shown)",
		strings.Repeat("A", 65): "(a 65-byte key, not shown)",
		strings.Repeat("A", 64): strings.Repeat("A", 64),
		"":                      "(a 0-byte key, not shown)",
		"1A":                    "(a 2-byte key, not shown)",
	} {
		if got := Shown(k); got != want {
			t.Errorf("Shown(%q) = %q, want %q", k, got, want)
		}
	}
}
