// Package envfile parses files in the syntax of systemd's EnvironmentFile=
// (man systemd.exec), for baton's --env-file flag: baton reads the file
// again at each rollout and pins the result to the worker generation it
// starts.
//
// The parser is the state machine of parse_env_file_internal in systemd's
// src/basic/env-file.c (as of v254 and later), fed to load_env_file and then
// filtered as exec_context_load_environment in src/core/execute.c does for
// EnvironmentFile=. For every file it accepts, Parse yields the assignments
// systemd would set, byte for byte. Where systemd would silently drop
// something, or where systemd versions disagree, Parse refuses the file
// instead (see "Deliberate differences" below).
//
// # The rules (systemd's, as implemented here)
//
// Characters: whitespace is space, tab, CR and LF (WHITESPACE); a newline is
// CR or LF (NEWLINE), so CRLF, LF and a lone CR all end a line; a comment
// starts with '#' or ';' (COMMENTS).
//
//   - Leading whitespace before a key is skipped; blank lines are ignored.
//   - A line whose first non-whitespace character is '#' or ';' is a comment.
//     There are no comments after a value: KEY=a # b sets "a # b".
//     A backslash in a comment escapes the next character, but since v254 a
//     backslash-newline still ends the comment (systemd issue #27975, PR
//     #28079); before v254 it joined the next line to the comment.
//   - The key runs to the first '='; whitespace between the key and '=' is
//     dropped. There is no "export" prefix: "export FOO=1" has the key
//     "export FOO", which is not a valid name.
//   - After '=', whitespace is skipped; then the value is a sequence of
//     quoted and unquoted parts:
//   - Single quotes: everything up to the next ' is literal, newlines
//     included; no escapes.
//   - Double quotes: everything up to the next unescaped " is literal,
//     newlines included; a backslash followed by one of " \ ` $ yields that
//     character, backslash-LF is a continuation (both dropped), a backslash
//     before anything else is kept with the character (so "\n" is a
//     backslash and an n, and backslash-CR-LF keeps all three bytes).
//   - After a closing quote, whitespace is skipped again and another quoted
//     or unquoted part may follow, concatenated: A='x'  "y" z gives "xyz".
//   - Unquoted: from the first non-whitespace character to the end of the
//     line; a backslash escapes the next character (kept literally,
//     whitespace included), backslash-newline is a continuation (both
//     dropped; the next line's leading whitespace is kept; with CRLF only the
//     CR is eaten and the LF ends the value). Quotes and '#' are literal once
//     the unquoted part started. Trailing unescaped whitespace is trimmed.
//   - KEY= and KEY="" set the empty string.
//   - No variable expansion of any kind: $FOO and ${FOO} are literal.
//   - A backslash at the very end of the file is dropped (KEY=v\ gives "v").
//   - Keys must be valid names: env_name_is_valid, [A-Za-z_][A-Za-z0-9_]*
//     (see ValidKey).
//   - Keys and values must be valid UTF-8 without Unicode noncharacters
//     (utf8_is_valid); systemd fails the whole file otherwise, and so does
//     Parse. Comments are not checked. Control characters other than NUL are
//     allowed in values.
//   - A NUL byte anywhere makes systemd refuse the file (read_full_stream:
//     EBADMSG); so does Parse.
//   - The same key may be assigned several times: Parse returns every
//     assignment in file order, and the last one wins when they are applied
//     (strv_env_replace_consume keeps the position of the first and the value
//     of the last).
//
// # Deliberate differences: Parse refuses where systemd drops silently
//
// A deploy should fail loudly rather than start with half an environment, so
// each of these, which systemd logs (if at all) and skips, is an error here,
// naming the file and the line:
//
//   - an invalid key ("1FOO", "FOO-BAR", "export FOO", "FOO BAR"): systemd's
//     exec_context_load_environment drops the assignment with a log line;
//   - a line with no '=': systemd ignores it without a word;
//   - a line starting with '=' (no key);
//   - a single or double quote still open at the end of the file: systemd
//     keeps whatever followed the quote as the value;
//   - a UTF-8 byte order mark at the start of the file: systemd makes it part
//     of the first key, which is then invalid and dropped;
//   - a comment line ending in a backslash (LF or lone CR after it) followed
//     by more of the file: systemd before v254 (Debian 12 has 252) also
//     swallows the next line, v254 and later do not, so the file means
//     different things on different hosts (with CRLF, or at the end of the
//     file, both agree, and Parse accepts it);
//   - a file larger than MaxSize bytes, or with more than MaxVars
//     assignments, or a key longer than MaxKeyLen bytes (systemd's bounds are
//     those of ARG_MAX).
//
// Errors show the file and the line, never a line's text: neither a value
// nor a key (a broken multi-line value's line can look like a key, and may
// be part of a secret). Where baton shows the keys it read, it shows them
// through Shown.
//
// # Why no library
//
// No Go library found parses this syntax as systemd does:
//
//   - github.com/joho/godotenv expands $VAR and ${VAR} in unquoted and
//     double-quoted values (systemd never expands), strips " # comment" from
//     unquoted values, accepts "export " and "KEY: value", and its
//     unterminated-quote error quotes the value.
//   - github.com/hashicorp/go-envparse is line-based: no multi-line quoted
//     values or backslash continuations; it ends an unquoted value at '#',
//     turns \n into a newline in double quotes, rejects control characters,
//     and does not treat ';' lines as comments.
//   - github.com/subosito/gotenv expands $VAR, ends values at '#', does not
//     treat ';' lines as comments, and puts the whole offending line,
//     value included, in its errors.
//   - github.com/coreos/go-systemd (already a dependency) has no
//     EnvironmentFile= parser, only unit-file deserialization.
//   - github.com/michurin/systemd-env-file (sdenv) ports the same state
//     machine and is the closest, but differs: it treats backslash-CR inside
//     double quotes as a continuation (systemd keeps both bytes), fails on a
//     trailing backslash at end of file (systemd drops it; systemd's own
//     test-env-file.c expects "i=i" from "i=i\"), returns no line numbers,
//     and validates neither keys nor UTF-8.
package envfile
