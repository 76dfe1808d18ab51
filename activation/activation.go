// Package activation implements systemd's socket-activation protocol
// (sd_listen_fds(3)) from both sides.
//
// Receiving: a process started with sockets finds them on fds 3.. and three
// variables: LISTEN_FDS (how many), LISTEN_PID (the pid they are meant for) and
// LISTEN_FDNAMES (a colon-separated name per fd). Parse reads them as a pure
// function; FromEnv is the wrapper that also checks each fd is a socket and
// marks it close-on-exec.
//
// Opening: Listen opens a socket from a "[NAME=]ADDR" spec (tcp, tcp6, unix
// paths) for names that systemd did not pass.
//
// Passing on: ChildEnv and Exec give a child its sockets the same way systemd
// does, including a LISTEN_PID equal to the child's own pid, which only the
// child can know (see Exec, the exec shim).
//
// Sockets are held as raw fds: this package never changes O_NONBLOCK on a
// socket, because that flag belongs to the open file description, which every
// process holding the socket shares.
//
// It uses only the standard library and golang.org/x/sys.
package activation

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FirstFD is the first passed fd (SD_LISTEN_FDS_START).
const FirstFD = 3

// maxFDs bounds LISTEN_FDS so that garbage cannot make a caller walk billions
// of fds. systemd itself refuses more than a few thousand per unit.
const maxFDs = 1 << 16

// DefaultName is the name of a passed fd when LISTEN_FDNAMES is unset, as in
// sd_listen_fds_with_names(3).
const DefaultName = "unknown"

// ErrWrongPID reports LISTEN_PID naming another process: the sockets were
// meant for a parent and leaked into this environment.
var ErrWrongPID = errors.New("LISTEN_PID is not this process")

// Passed is one fd found through LISTEN_FDS.
type Passed struct {
	FD   int
	Name string
}

// Parse reads LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES through getenv for
// the process pid. Without LISTEN_FDS there are no sockets and no error.
// Every malformed value is an error that names the variable.
func Parse(getenv func(string) string, pid int) ([]Passed, error) {
	fdsVal := getenv("LISTEN_FDS")
	if fdsVal == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(fdsVal)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: not a count of fds", fdsVal)
	}
	if n > maxFDs {
		return nil, fmt.Errorf("LISTEN_FDS=%d: more than %d fds", n, maxFDs)
	}
	pidVal := getenv("LISTEN_PID")
	if pidVal == "" {
		return nil, errors.New("LISTEN_FDS is set but LISTEN_PID is not")
	}
	lp, err := strconv.Atoi(pidVal)
	if err != nil || lp <= 0 {
		return nil, fmt.Errorf("LISTEN_PID=%q: not a pid", pidVal)
	}
	if lp != pid {
		return nil, fmt.Errorf("%w: LISTEN_PID=%d, this process is %d", ErrWrongPID, lp, pid)
	}
	if n == 0 {
		return nil, nil
	}
	names := make([]string, n)
	// A getenv function cannot tell unset from empty; either means no names.
	if namesVal := getenv("LISTEN_FDNAMES"); namesVal != "" {
		parts := strings.Split(namesVal, ":")
		if len(parts) != n {
			return nil, fmt.Errorf("LISTEN_FDNAMES=%q: %d names for LISTEN_FDS=%d", namesVal, len(parts), n)
		}
		for i, name := range parts {
			if err := CheckName(name); err != nil {
				return nil, fmt.Errorf("LISTEN_FDNAMES: fd %d: %w", FirstFD+i, err)
			}
		}
		copy(names, parts)
	} else {
		for i := range names {
			names[i] = DefaultName
		}
	}
	passed := make([]Passed, n)
	for i := range passed {
		passed[i] = Passed{FD: FirstFD + i, Name: names[i]}
	}
	return passed, nil
}

// CheckName reports whether name is a valid fd name for LISTEN_FDNAMES and
// FDNAME=: at most 255 printable ASCII characters, no colon (systemd's
// fdname_is_valid).
func CheckName(name string) error {
	if name == "" {
		return errors.New("empty fd name")
	}
	if len(name) > 255 {
		return fmt.Errorf("fd name %.20q...: longer than 255 bytes", name)
	}
	for _, c := range []byte(name) {
		if c < ' ' || c > '~' || c == ':' {
			return fmt.Errorf("fd name %q: only printable ASCII without ':' is allowed", name)
		}
	}
	return nil
}
