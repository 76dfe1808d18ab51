package main

import "runtime"

// The main goroutine stays on the process's main thread, for two reasons
// that both come from Linux keeping the parent-death signal per thread:
//
//   - `baton shim` is forked with PR_SET_PDEATHSIG on its only thread; the
//     Go runtime's later threads start with none. An execve from one of
//     them would leave the worker without it (measured: a worker started
//     that way reported PR_GET_PDEATHSIG 0 and outlived a SIGKILLed baton).
//   - `baton run` forks workers from the loop on this thread, and the
//     signal fires when the forking thread exits: the main thread lives as
//     long as the process.
func init() { runtime.LockOSThread() }
