//go:build cgo

// Package sigrelay carries the signals sent to baton while it re-executes
// itself in place, from the old image to the new one, so that none is lost
// and none kills it.
//
// execve resets every handled signal to its default action, which for
// SIGHUP, SIGINT, SIGTERM and SIGUSR2 is to die; and the Go runtime, in its
// own start-up, unblocks SIGHUP, SIGINT and SIGTERM before it has a handler
// for them (runtime.blockableSig), so blocking them across execve is not
// enough: a `systemctl stop` a millisecond after `baton upgrade` killed the
// new image with every worker. The relay is a pipe both images hold, and a
// signal handler written in C (relay.c) that writes a signal's number into
// it:
//
//   - the old image installs the recorder just before execve and blocks the
//     held signals on every thread (Catch), after which no signal reaches the
//     Go runtime's handlers, whose queue it then empties into the pipe (Add);
//     what comes later stays pending across execve;
//   - the new image installs it again in a C constructor, before the Go
//     runtime starts, and keeps it while the runtime installs its own
//     handlers (relay.c's sigaction keeps those aside) until the supervisor
//     has asked for the signals (HandBack, after signal.Notify);
//   - the supervisor reads the pipe once it has adopted the workers
//     (Received) and acts on what is in it.
//
// What is left: a thread the Go runtime starts in the instant between
// Export and execve has the signals unblocked, and if the kernel gives one
// to it and execve ends it before its handler runs, that signal is lost. A
// binary built without cgo has only the pipe (relay_nocgo.go): there the
// exec and the runtime's start are a window in which SIGHUP, SIGINT and
// SIGTERM kill baton.
package sigrelay

/*
#include "relay.h"
*/
import "C"

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Env names the pipe's ends in the new image's environment ("R,W").
const Env = C.BATON_RELAY_ENV

// Held are the signals the relay carries, as relay.c lists them.
var Held = func() []syscall.Signal {
	var sigs []syscall.Signal
	for _, s := range C.batonHeld {
		sigs = append(sigs, syscall.Signal(s))
	}
	return sigs
}()

// catch installs the recorder over the held signals, writing to fd, and
// blocks them on every other thread (the caller blocked them on its own).
func catch(fd int) error {
	if errno := C.batonRelayCatch(C.int(fd)); errno != 0 {
		C.batonRelayRelease()
		return fmt.Errorf("install the signal recorder: %w", syscall.Errno(errno))
	}
	askBroadcast.Do(func() {
		// The runtime's signal thread blocks every signal no one asked for;
		// asked for, the broadcast reaches it too.
		signal.Notify(make(chan os.Signal, 1), syscall.Signal(C.batonBroadcastSignal()))
	})
	if errno := C.batonRelayAllThreads(1); errno != 0 {
		return fmt.Errorf("block the signals on every thread: %w", syscall.Errno(errno))
	}
	return nil
}

var askBroadcast sync.Once

// blockNewThreads blocks the held signals on threads started since catch
// (those that block them already are passed over).
func blockNewThreads() { C.batonRelayAllThreads(1) }

// release undoes catch: the signals unblocked on the other threads, the
// runtime's handlers back.
func release() {
	C.batonRelayAllThreads(0)
	C.batonRelayRelease()
}

// HandBack gives the held signals back to the Go runtime's handlers in a
// re-executed image: call it once signal.Notify asked for them. From then
// on the recorder writes nothing.
func HandBack() { C.batonRelayHandBack() }
