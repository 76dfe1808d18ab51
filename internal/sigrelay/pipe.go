package sigrelay

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Relay is the old image's side: the pipe, made when a re-exec begins.
type Relay struct{ r, w int }

// Open makes the pipe: non-blocking (a signal handler must never wait on
// it) and close-on-exec until Export.
func Open() (*Relay, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("signal relay: pipe: %w", err)
	}
	return &Relay{r: p[0], w: p[1]}, nil
}

// Catch installs the recorder: from now on the held signals go into the
// pipe, not to the Go runtime's handlers. Call it on the thread that will
// exec, with the held signals blocked there.
func (r *Relay) Catch() error { return catch(r.w) }

// Add writes signals the Go runtime's handlers caught before Catch.
func (r *Relay) Add(sigs []int) {
	for _, sig := range sigs {
		unix.Write(r.w, []byte{byte(sig)}) // a full pipe (64 KiB of signals) drops
	}
}

// Export lets both ends survive execve and returns the environment entry
// that names them and the held signals for the new image. Call it last
// before execve: it blocks the held signals on any thread the Go runtime
// started since Catch (the runtime starts none once syscall.Exec has
// begun).
func (r *Relay) Export() string {
	blockNewThreads()
	for _, fd := range []int{r.r, r.w} {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0) // cannot fail on an open fd
	}
	sigs := make([]string, len(Held))
	for i, sig := range Held {
		sigs[i] = strconv.Itoa(int(sig))
	}
	return fmt.Sprintf("%s=%d,%d:%s", Env, r.r, r.w, strings.Join(sigs, ","))
}

// Abort undoes Catch after a failed execve: the Go runtime's handlers are
// back, and the signals recorded meanwhile are returned, to be acted on.
func (r *Relay) Abort() []int {
	release()
	sigs := drain(r.r)
	unix.Close(r.r)
	unix.Close(r.w)
	return sigs
}

// drain reads what the pipe holds, without duplicates (as the kernel keeps
// one pending instance of a standard signal).
func drain(fd int) []int {
	var sigs []int
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(fd, buf)
		for _, b := range buf[:max(n, 0)] {
			if !slices.Contains(sigs, int(b)) {
				sigs = append(sigs, int(b))
			}
		}
		if err != nil || n <= 0 {
			return sigs
		}
	}
}

// inherited is the relay a previous image passed to this one, {-1, -1}
// when there is none; it is close-on-exec from this package's init on, so
// no worker inherits it.
var inherited = func() [2]int {
	fds := [2]int{-1, -1}
	v, ok := os.LookupEnv(Env)
	if !ok {
		return fds
	}
	ends, _, _ := strings.Cut(v, ":") // the held signals are relay.c's
	r, w, _ := strings.Cut(ends, ",")
	for i, s := range []string{r, w} {
		if fd, err := strconv.Atoi(s); err == nil && fd > 2 && isPipe(fd) { // as relay.c checks
			unix.CloseOnExec(fd)
			fds[i] = fd
		}
	}
	return fds
}()

// Inherited reports whether a previous image passed a relay to this one:
// then HandBack must follow signal.Notify, or the held signals stay with
// the recorder.
func Inherited() bool { return inherited[1] >= 0 }

// Received returns the signals the relay carried into this image, closes
// it and removes Env from the environment. Call it after HandBack, once
// this image can act on them. An Env that does not name a pipe is an error
// naming it; no fd it names is read then.
func Received() ([]int, error) {
	v, ok := os.LookupEnv(Env)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(Env)
	r, w := inherited[0], inherited[1]
	inherited = [2]int{-1, -1}
	if r < 0 || w < 0 {
		return nil, fmt.Errorf("%s=%q does not name the two ends of a pipe", Env, v)
	}
	sigs := drain(r)
	unix.Close(r)
	unix.Close(w)
	return sigs, nil
}

func isPipe(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
}
