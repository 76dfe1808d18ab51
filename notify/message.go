// Package notify implements systemd's service notification protocol
// (sd_notify(3)) from both sides.
//
// A message is one datagram on a unix socket named by NOTIFY_SOCKET (a path,
// or an abstract name written "@name"), holding newline-separated KEY=VALUE
// assignments such as "READY=1\nSTATUS=4/4 ready". FDSTORE=1 messages carry
// file descriptors as SCM_RIGHTS.
//
// Parse reads a datagram as a pure function. Client sends messages to systemd
// (or to any NOTIFY_SOCKET), with fds when asked. Socket is the receiving end
// that a supervisor gives each of its children: it reads each datagram
// together with the sender's credentials (SCM_CREDENTIALS), so a message can
// be accepted only from the process it is meant to come from.
//
// It uses only the standard library and golang.org/x/sys.
package notify

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxDatagram is the largest message accepted, as systemd's own limit
// (NOTIFY_BUFFER_MAX = PIPE_BUF).
const MaxDatagram = 4096

// Message is one parsed notification: each assignment's key and value. When a
// key repeats, the last value wins, as systemd reads them.
type Message map[string]string

// Is reports whether key is assigned exactly value ("READY", "1").
func (m Message) Is(key, value string) bool {
	v, ok := m[key]
	return ok && v == value
}

// Parse reads a notification datagram. Well-formed assignments are returned
// even when others are malformed; the error then names each bad line, so a
// receiver can log it and still act on the rest. Empty lines are ignored.
func Parse(b []byte) (Message, error) {
	if len(b) > MaxDatagram {
		return nil, fmt.Errorf("notify message of %d bytes: more than %d", len(b), MaxDatagram)
	}
	m := Message{}
	var bad []string
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		key, value, ok := bytes.Cut(line, []byte{'='})
		if !ok || !validKey(key) || !utf8.Valid(value) || bytes.IndexByte(value, 0) >= 0 {
			bad = append(bad, fmt.Sprintf("%.40q", line))
			continue
		}
		m[string(key)] = string(value)
	}
	if bad != nil {
		return m, fmt.Errorf("malformed notify assignment %s: want KEY=VALUE", strings.Join(bad, ", "))
	}
	return m, nil
}

// validKey accepts environment-style names: upper-case letters, digits and
// underscores, not starting with a digit.
func validKey(k []byte) bool {
	if len(k) == 0 || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for _, c := range k {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
