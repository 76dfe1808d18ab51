package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/batonsd/baton/internal/fds"

	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

// Handoff is what a re-executed supervisor needs to adopt a worker: its
// identity and duplicates of the fds baton reads from it.
type Handoff struct {
	PID        int       `json:"pid"`
	Slot       int       `json:"slot"`
	Generation int       `json:"generation"`
	Started    time.Time `json:"started"`
	NotifyAddr string    `json:"notify_addr"`
	NotifyFD   int       `json:"notify_fd"`
	OutputFDs  []int     `json:"output_fds"` // stdout, stderr read ends; none when inherited
	Tail       []string  `json:"tail,omitempty"`
}

// Handoff duplicates the worker's fds, not close-on-exec, for a re-exec.
// The caller closes them (CloseHandoff) if the exec fails.
func (p *Process) Handoff() (Handoff, error) {
	h := Handoff{PID: p.PID, Slot: p.Slot, Generation: p.Generation, Started: p.Started, NotifyAddr: p.notify.Addr(), NotifyFD: -1, Tail: p.Tail()}
	fd, err := p.notify.Dup()
	if err != nil {
		return h, fmt.Errorf("hand off worker %d: %w", p.PID, err)
	}
	h.NotifyFD = fd
	for i, r := range p.outputs {
		fd, err := fds.DupConn(r)
		if err != nil && p.ended[i].Load() {
			// Read to its end (the worker exited, its exit not reaped yet):
			// an empty pipe keeps the streams' places.
			fd, err = endedPipe()
		}
		if err != nil {
			CloseHandoff(h)
			return h, fmt.Errorf("hand off worker %d: %w", p.PID, err)
		}
		h.OutputFDs = append(h.OutputFDs, fd)
	}
	return h, nil
}

// CloseHandoff closes the fds of a handoff that was not used.
func CloseHandoff(h Handoff) {
	for _, fd := range append([]int{h.NotifyFD}, h.OutputFDs...) {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// endedPipe returns the read end of a pipe whose write end is closed.
func endedPipe() (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, err
	}
	unix.Close(p[1])
	return p[0], nil
}

// Adopt takes over a worker that a previous image of this supervisor
// started, from its handed-off fds: the process must be a child of this
// one, which an exec in place keeps it.
func Adopt(h Handoff, spec Spec) (*Process, error) {
	log := spec.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	unix.CloseOnExec(h.NotifyFD)
	ns, err := notify.FileSocket(os.NewFile(uintptr(h.NotifyFD), "notify"), h.NotifyAddr)
	if err != nil {
		return nil, fmt.Errorf("adopt worker %d: %w", h.PID, err)
	}
	p := &Process{PID: h.PID, Slot: h.Slot, Generation: h.Generation, Started: h.Started, notify: ns, done: make(chan struct{}), log: log}
	for _, line := range h.Tail {
		p.tail.add([]byte(line))
	}
	if len(h.OutputFDs) > 0 && spec.Output == nil {
		return nil, errors.Join(fmt.Errorf("adopt worker %d: its output is piped but no output sink is set", h.PID), ns.Close())
	}
	for i, fd := range h.OutputFDs {
		unix.CloseOnExec(fd)
		r := os.NewFile(uintptr(fd), "output")
		p.outputs = append(p.outputs, r)
		stream := []Stream{Stdout, Stderr}[i%2]
		p.wg.Go(func() { p.readLines(r, stream, spec.Output, &p.ended[i]) })
	}
	p.wg.Go(func() { p.readNotify(spec.OnNotify) })
	go func() { p.wg.Wait(); close(p.done) }()
	return p, nil
}
