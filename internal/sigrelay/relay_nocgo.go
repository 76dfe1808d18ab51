//go:build !cgo

package sigrelay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Without cgo there is no code before the Go runtime and no signal handler
// outside it: the relay carries only what the old image's handlers caught.

// Env names the pipe's ends in the new image's environment ("R,W").
const Env = "BATON_HANDOFF_SIGNAL_FDS"

// Held are the signals the relay carries.
var Held = []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2}

func catch(int) error { return nil }

func release() {}

func blockNewThreads() {}

// HandBack does nothing without cgo.
func HandBack() {}
