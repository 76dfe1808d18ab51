package envfile

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Bounds on what Parse accepts.
const (
	// MaxSize is the largest file Parse reads, in bytes.
	MaxSize = 1 << 20
	// MaxVars is the most assignments a file may hold.
	MaxVars = 4096
	// MaxKeyLen is the longest key ValidKey accepts, in bytes.
	MaxKeyLen = 1024
)

// Var is one assignment, in file order.
type Var struct {
	Key, Value string
	// Line is the 1-based line on which the key starts.
	Line int
}

// Error is a parse error: the file (the name given to Parse), the 1-based
// line (0 when the error is about the whole file) and what is wrong. Its
// message never contains a value.
type Error struct {
	Name string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("envfile: %s:%d: %s", e.Name, e.Line, e.Msg)
	}
	return fmt.Sprintf("envfile: %s: %s", e.Name, e.Msg)
}

// Read opens and parses path; errors name path.
func Read(path string) ([]Var, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("envfile: %w", err) // *PathError: names the file
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads an EnvironmentFile= text; name is used in errors. It returns
// every assignment in file order, duplicates included (the last one wins
// when applied), or an *Error (or a read error) naming the file.
func Parse(name string, r io.Reader) ([]Var, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, &Error{Name: name, Msg: "read: " + err.Error()}
	}
	if len(data) > MaxSize {
		return nil, &Error{Name: name, Msg: fmt.Sprintf("file is larger than %d bytes", MaxSize)}
	}
	return parse(name, data)
}

// ValidKey reports whether k is a valid environment variable name as
// systemd's env_name_is_valid has it: [A-Za-z_][A-Za-z0-9_]*, not empty, and
// at most MaxKeyLen bytes (systemd's bound is ARG_MAX-2).
func ValidKey(k string) bool {
	return keyProblem(k) == ""
}

// keyProblem says what makes k an invalid name, or "" if it is valid.
func keyProblem(k string) string {
	switch {
	case k == "":
		return "it is empty"
	case len(k) > MaxKeyLen:
		return fmt.Sprintf("it is longer than %d bytes", MaxKeyLen)
	case k[0] >= '0' && k[0] <= '9':
		return "it starts with a digit"
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			continue
		}
		if c == ' ' || c == '\t' {
			return "it contains whitespace"
		}
		if c < utf8.RuneSelf {
			return "it contains a character other than a letter, a digit or '_'"
		}
		return "it contains a non-ASCII character"
	}
	return ""
}

// Shown is how baton shows a key it read from a file (in status, in what a
// rollout changed, in the journal): in full when it is a conventional
// environment name, upper-case letters, digits and underscores (POSIX's
// convention for the environment, the form of every name systemd and
// baton set) or one of the lower-case proxy variables; any other key is
// described by its length only. A broken multi-line value's line can parse
// as a valid key ("dGhpcy1pcy1zZWNyZXQ=" is the key "dGhpcy1pcy1zZWNyZXQ"):
// a key that is not conventional may be part of a secret.
func Shown(k string) string {
	switch k {
	case "http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy":
		return k
	}
	conventional := k != "" && len(k) <= maxShownKey && (k[0] < '0' || k[0] > '9')
	for i := 0; i < len(k) && conventional; i++ {
		c := k[i]
		conventional = c == '_' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	if conventional {
		return k
	}
	return fmt.Sprintf("(a %d-byte key, not shown)", len(k))
}

// maxShownKey is the longest key Shown shows.
const maxShownKey = 64

// The states of systemd's parse_env_file_internal.
type state int

const (
	preKey state = iota
	inKey
	preValue
	inValue
	valueEscape
	singleQuote
	doubleQuote
	doubleQuoteEscape
	comment
	commentEscape
)

func isNewline(c byte) bool    { return c == '\n' || c == '\r' }                // NEWLINE
func isWhitespace(c byte) bool { return c == ' ' || c == '\t' || isNewline(c) } // WHITESPACE

// shellNeedEscape is systemd's SHELL_NEED_ESCAPE: the characters a
// backslash unescapes inside double quotes.
func shellNeedEscape(c byte) bool { return c == '"' || c == '\\' || c == '`' || c == '$' }

var bom = []byte{0xEF, 0xBB, 0xBF}

// parse runs systemd's state machine over data. Comments name the systemd
// behaviour each branch mirrors. It is long on purpose: it follows
// parse_env_file_internal in systemd's src/basic/env-file.c one state per
// case, so that the two can be read side by side; split into functions,
// the state shared by every case would have to travel with each call.
func parse(name string, data []byte) ([]Var, error) {
	fail := func(line int, format string, args ...any) ([]Var, error) {
		return nil, &Error{Name: name, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		// read_full_stream refuses embedded NULs (EBADMSG): systemd fails the file too.
		return fail(1+lineBreaks(data[:i]), "the file contains a NUL byte")
	}
	if bytes.HasPrefix(data, bom) {
		return fail(1, "the file starts with a UTF-8 byte order mark (systemd would read it as part of the first key and drop that assignment)")
	}

	var (
		vars    []Var
		st      = preKey
		key     []byte
		value   []byte
		keyWS   = -1 // last_key_whitespace: where trailing key whitespace starts
		valueWS = -1 // last_value_whitespace: where trailing value whitespace starts
		keyLine int  // line on which the current key started
		quoteAt int  // line on which the current quote opened
		line    = 1  // line of data[i]
	)

	// push ends an assignment, as systemd's push callback does.
	push := func(trimValue bool) error {
		if trimValue && valueWS >= 0 {
			value = value[:valueWS] // chomp trailing unescaped whitespace
		}
		if !utf8.Valid(value) || hasNoncharacter(value) {
			// check_utf8ness_and_warn fails the whole file in systemd too.
			return &Error{Name: name, Line: keyLine, Msg: "the value assigned on this line is not valid UTF-8 (or holds a Unicode noncharacter)"}
		}
		if len(vars) == MaxVars {
			return &Error{Name: name, Line: keyLine, Msg: fmt.Sprintf("more than %d assignments", MaxVars)}
		}
		vars = append(vars, Var{Key: string(key), Value: string(value), Line: keyLine})
		key, value = key[:0], value[:0]
		return nil
	}

	for i := 0; i < len(data); i++ {
		c := data[i]
		switch st {
		case preKey:
			switch {
			case c == '#' || c == ';':
				st = comment
			case c == '=':
				// systemd makes '=' the key's first character: the line is then
				// either without '=' (ignored) or an invalid key (dropped).
				return fail(line, "an assignment has no key before '='")
			case !isWhitespace(c):
				st = inKey
				keyWS = -1
				keyLine = line
				key = append(key[:0], c)
			}

		case inKey:
			switch {
			case isNewline(c):
				// systemd ignores a line without '=' silently.
				return fail(keyLine, "the line has no '=' (systemd would silently ignore it)")
			case c == '=':
				st = preValue
				valueWS = -1
				if keyWS >= 0 {
					key = key[:keyWS] // strip trailing whitespace from key
				}
				if err := checkKey(name, keyLine, string(key)); err != nil {
					return nil, err
				}
			default:
				if !isWhitespace(c) {
					keyWS = -1
				} else if keyWS < 0 {
					keyWS = len(key)
				}
				key = append(key, c)
			}

		case preValue:
			switch {
			case isNewline(c):
				st = preKey
				if err := push(false); err != nil {
					return nil, err
				}
			case c == '\'':
				st = singleQuote
				quoteAt = line
			case c == '"':
				st = doubleQuote
				quoteAt = line
			case c == '\\':
				st = valueEscape
			case !isWhitespace(c):
				st = inValue
				value = append(value, c)
			}

		case inValue:
			switch {
			case isNewline(c):
				st = preKey
				if err := push(true); err != nil {
					return nil, err
				}
			case c == '\\':
				st = valueEscape
				valueWS = -1
			default:
				if !isWhitespace(c) {
					valueWS = -1
				} else if valueWS < 0 {
					valueWS = len(value)
				}
				value = append(value, c)
			}

		case valueEscape:
			st = inValue
			if !isNewline(c) {
				value = append(value, c) // escaped newlines are eaten entirely
			}

		case singleQuote:
			if c == '\'' {
				st = preValue
			} else {
				value = append(value, c)
			}

		case doubleQuote:
			switch c {
			case '"':
				st = preValue
			case '\\':
				st = doubleQuoteEscape
			default:
				value = append(value, c)
			}

		case doubleQuoteEscape:
			st = doubleQuote
			switch {
			case shellNeedEscape(c):
				value = append(value, c)
			case c != '\n':
				// Not an escapable character: keep the backslash, as the shell
				// does. Only LF is a continuation: backslash-CR keeps both.
				value = append(value, '\\', c)
			}

		case comment:
			switch {
			case c == '\\':
				st = commentEscape
			case isNewline(c):
				st = preKey
			}

		case commentEscape:
			if isNewline(c) {
				// v254+: the newline still ends the comment; before v254 it was
				// escaped and the next line joined the comment. Both agree when
				// nothing follows, and on CRLF (only the CR was escaped).
				crlf := c == '\r' && i+1 < len(data) && data[i+1] == '\n'
				if !crlf && i+1 < len(data) {
					return fail(line, "a comment ends with a backslash: systemd before v254 would read the next line as part of the comment, v254 and later would not; remove the backslash")
				}
				st = preKey
			} else {
				st = comment
			}
		}

		if c == '\r' || c == '\n' && (i == 0 || data[i-1] != '\r') {
			line++
		}
	}

	switch st {
	case inKey:
		return fail(keyLine, "the line has no '=' (systemd would silently ignore it)")
	case singleQuote:
		return fail(quoteAt, "the single quote opened here%s is never closed", assignedOn(keyLine, quoteAt))
	case doubleQuote, doubleQuoteEscape:
		return fail(quoteAt, "the double quote opened here%s is never closed", assignedOn(keyLine, quoteAt))
	case preValue, valueEscape:
		// A backslash at the very end is dropped (systemd's test-env-file.c).
		if err := push(false); err != nil {
			return nil, err
		}
	case inValue:
		if err := push(true); err != nil {
			return nil, err
		}
	}
	return vars, nil
}

// assignedOn says on which line a quote's assignment began, when not on
// the quote's own.
func assignedOn(keyLine, quoteAt int) string {
	if keyLine == quoteAt {
		return ""
	}
	return fmt.Sprintf(" (in the value assigned on line %d)", keyLine)
}

// checkKey refuses a key systemd would drop (exec_context_load_environment
// keeps only assignments that pass env_assignment_is_valid).
func checkKey(name string, line int, k string) error {
	problem := keyProblem(k)
	if problem == "" {
		return nil
	}
	msg := fmt.Sprintf("invalid key: %s; keys are [A-Za-z_][A-Za-z0-9_]* (systemd would drop this assignment)", problem)
	if rest, ok := cutExport(k); ok && ValidKey(rest) {
		msg = "invalid key: systemd has no \"export\" prefix (it would drop this assignment); remove it"
	}
	return &Error{Name: name, Line: line, Msg: msg}
}

// cutExport removes an "export" prefix and the whitespace after it.
func cutExport(k string) (string, bool) {
	rest, ok := strings.CutPrefix(k, "export")
	if !ok || rest == "" || rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	return strings.TrimLeft(rest, " \t"), true
}

// hasNoncharacter reports whether valid UTF-8 b holds a code point that
// systemd's unichar_is_valid rejects beyond Go's utf8.Valid: U+FDD0..U+FDEF
// and U+xFFFE, U+xFFFF.
func hasNoncharacter(b []byte) bool {
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r >= 0xFDD0 && r <= 0xFDEF || r&0xFFFE == 0xFFFE {
			return true
		}
		b = b[n:]
	}
	return false
}

// lineBreaks counts line breaks as parse does: CR, LF and CRLF each count once.
func lineBreaks(b []byte) int {
	n := 0
	for i, c := range b {
		if c == '\r' || c == '\n' && (i == 0 || b[i-1] != '\r') {
			n++
		}
	}
	return n
}
