// Package sigrelay carries the signals sent to baton while it re-executes
// itself in place, from the old image to the new one, so that none is lost
// and none kills it.
//
// execve resets every handled signal to its default action, which for
// SIGHUP, SIGINT, SIGTERM and SIGUSR2 is to die. Blocking them across
// execve is not enough: the Go runtime, in its own start-up, unblocks
// SIGHUP, SIGINT and SIGTERM before it has a handler for them (minit, with
// runtime.blockableSig, runs before initsig), and a `systemctl stop` a
// millisecond after `baton upgrade` killed the new image with every worker.
// Ignoring them across execve is not enough either: a pending signal that
// is ignored is discarded, not delivered later, and the runtime installs its
// handler over an ignored SIGTERM. The relay is a pipe both images hold,
// and a signal handler written in C (relay.c) that writes a signal's number
// into it:
//
//   - the old image installs the recorder just before execve and blocks the
//     held signals on every thread (Catch), after which no signal reaches the
//     Go runtime's handlers, whose queue it then empties into the pipe (Add);
//     what comes later stays pending across execve;
//   - Export names the pipe and the held signals in the new image's
//     environment (Env);
//   - the new image installs the recorder over those signals again in a C
//     constructor, before the Go runtime starts, and keeps it while the
//     runtime installs its own handlers (relay.c's sigaction keeps those
//     aside) until the supervisor has asked for the signals (HandBack, after
//     signal.Notify);
//   - the supervisor reads the pipe once it has adopted the workers
//     (Received) and acts on what is in it.
//
// How much of that a binary has depends on how it was built, and Mode says
// it (`baton version` prints it, `baton status` and the journal at start
// show it when a signal can kill baton):
//
//   - with cgo, on linux/386, amd64, arm64, loong64 and ppc64le: all of it;
//   - with cgo elsewhere the runtime installs its handlers with a system
//     call relay.c cannot see: the recorder holds the signals from execve
//     until then, and from then until signal.Notify a SIGHUP, SIGINT or
//     SIGTERM kills baton;
//   - without cgo (CGO_ENABLED=0, or a cross-compile without a C compiler)
//     only the pipe: it carries what the old image's Go handlers caught, and
//     a SIGHUP, SIGINT or SIGTERM sent during the exec kills baton, and a
//     signal another thread's Go handler takes after Add is lost. Measured
//     with SIGUSR2 and then SIGHUP 0 to 34 ms later: 19 to 37 of 180
//     upgrades (three runs) died of it, up to 2 more lost it; a SIGTERM
//     killed 10 to 14 of 90. With cgo none of 360 and 180 died or lost it.
//
// What is left with all of it: a thread the Go runtime starts in the
// instant between Export and execve has the signals unblocked, and if the
// kernel gives one to it and execve ends it before its handler runs, that
// signal is lost.
package sigrelay

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Env names the pipe's ends and the held signals in the new image's
// environment: "R,W:SIG,SIG,...". relay.h has the same name for the
// constructor.
const Env = "BATON_HANDOFF_SIGNALS"

// Held are the signals the relay carries; the only list of them, which
// the old image passes to relay.c and, in Env, to the new image's.
var Held = []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2}

// coverage is how much of a re-exec the relay covers in this binary.
type coverage int

const (
	// full: from the old image's Catch to the new image's HandBack.
	full coverage = iota
	// untilRuntime: the Go runtime sets its handlers without libc, so the
	// new image's recorder holds the signals only until the runtime starts.
	untilRuntime
	// none: built without cgo, only the pipe.
	none
)

// Mode says how far the relay protects baton in this binary, for `baton
// version` and the journal.
func Mode() string {
	switch built {
	case full:
		return "cgo: a recorder from before the Go runtime starts until signal.Notify"
	case untilRuntime:
		return "partial: built with cgo, but the Go runtime on " + runtime.GOOS + "/" + runtime.GOARCH + " sets its signal handlers without libc: " +
			"a SIGHUP, SIGINT or SIGTERM reaching a re-executed baton between its runtime's start and signal.Notify kills it and its workers"
	}
	return "none: built without cgo: a SIGHUP, SIGINT or SIGTERM sent during an in-place upgrade can kill baton and its workers, and any signal sent then can be lost"
}

// Protected reports whether no signal sent during an in-place upgrade
// kills baton (Mode says what is left when not).
func Protected() bool { return built == full }
