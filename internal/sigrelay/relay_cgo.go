//go:build cgo

package sigrelay

/*
#include "relay.h"
*/
import "C"

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
)

// envInC is relay.h's name for Env (a test compares them).
const envInC = C.BATON_RELAY_ENV

// built: all of it where the runtime sets its handlers through libc's
// sigaction, which is where runtime/cgo links x_cgo_sigaction (the build
// constraint of runtime/cgo/sigaction.go, for Linux).
var built = func() coverage {
	switch runtime.GOOS + "/" + runtime.GOARCH {
	case "linux/386", "linux/amd64", "linux/arm64", "linux/loong64", "linux/ppc64le":
		return full
	}
	return untilRuntime
}()

// catch installs the recorder over the held signals, writing to fd, and
// blocks them on every other thread (the caller blocked them on its own).
func catch(fd int) error {
	sigs := make([]C.int, len(Held))
	for i, sig := range Held {
		sigs[i] = C.int(sig)
	}
	if errno := C.batonRelayCatch(C.int(fd), &sigs[0], C.int(len(sigs))); errno != 0 {
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
