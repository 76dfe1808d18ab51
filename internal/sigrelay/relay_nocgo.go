//go:build !cgo

package sigrelay

// Without cgo there is no code before the Go runtime and no signal handler
// outside it: the relay carries only what the old image's handlers caught.
const built = none

func catch(int) error { return nil }

func release() {}

func blockNewThreads() {}

// HandBack does nothing without cgo.
func HandBack() {}
