// Package worker starts and signals one worker process: a child that gets the
// service's listening sockets on fds 3.. (LISTEN_FDS, with LISTEN_PID set to
// its own pid by the exec shim), a notification socket of its own
// (NOTIFY_SOCKET), BATON_WORKER and BATON_GENERATION.
//
// The package does not reap: the supervisor is the one process-wide reaper
// (wait4(-1) on SIGCHLD, so that orphans re-parented to it are reaped too) and
// tells a Process when it has exited with Exited.
package worker

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/notify"
	"golang.org/x/sys/unix"
)

// Spec is what a worker is started from.
type Spec struct {
	// ShimPath is the exec shim, run with ShimArgv followed by Command; it
	// must set LISTEN_PID and exec Command (see activation.Exec).
	ShimPath string
	ShimArgv []string
	Command  []string
	// Env is the base environment, without the variables this package sets.
	Env []string
	// Dir is the worker's working directory; empty inherits the
	// supervisor's.
	Dir        string
	Listeners  []*activation.Listener
	Slot       int
	Generation int
	// Output receives each line the worker writes to stdout or stderr,
	// valid only during the call. When nil, the worker inherits the
	// supervisor's stdout and stderr. It is called from the worker's own
	// reader goroutines.
	Output OutputFunc
	// NotifyDir holds the worker's notification socket; empty makes it an
	// abstract socket.
	NotifyDir string
	// OnNotify receives each notification the worker itself sent. Messages
	// from any other pid are dropped and logged.
	OnNotify func(w *Process, msg notify.Message)
	// DeathSignal is what the worker gets if the supervisor dies (its
	// parent-death signal); 0 is SIGKILL.
	DeathSignal syscall.Signal
	Logger      *slog.Logger
}

// OutputFunc receives one line a worker wrote to stream, valid only during
// the call.
type OutputFunc func(w *Process, stream Stream, line []byte)

// Stream names a worker's output stream.
type Stream string

// The two output streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Process is a started worker.
type Process struct {
	PID        int
	Slot       int
	Generation int
	Started    time.Time

	notify  *notify.Socket
	outputs []*os.File
	ended   [2]atomic.Bool // outputs[i] was read to its end (and is closed, or about to be)
	wg      sync.WaitGroup
	done    chan struct{}
	log     *slog.Logger
	tail    tail
	warns   warnLimiter
	execd   chan struct{} // closed once the shim has exec'd the command
}

// ExecFDEnv names, in the shim's environment, the fd of the exec pipe that
// the shim must make close-on-exec (see Start and cmd/baton's shim).
const ExecFDEnv = "BATON_EXEC_FD"

// Execd is closed once the worker runs its own program (or has exited).
// Signals sent before may be lost in the shim's execve.
func (p *Process) Execd() <-chan struct{} {
	if p.execd == nil { // an adopted worker has long exec'd
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.execd
}

// seq makes notify socket names unique within this supervisor.
var seq atomic.Uint64

// Start starts a worker. It must be called from a goroutine locked to its
// OS thread (runtime.LockOSThread) that stays alive as long as the worker:
// Linux sends the parent-death signal (SIGKILL here, so that no worker
// outlives a killed supervisor) when the thread that forked exits, not the
// process.
func Start(spec Spec) (_ *Process, err error) {
	log := spec.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := notify.Listen(notifyAddr(spec))
	if err != nil {
		return nil, fmt.Errorf("start worker %d: %w", spec.Slot, err)
	}
	p := &Process{Slot: spec.Slot, Generation: spec.Generation, notify: ns, done: make(chan struct{}), log: log}
	// The child's ends of the pipes are closed in any case once it is
	// forked (it has its copies: EOF comes when it exits); ours, and the
	// notify socket, only if the start fails.
	var childEnds []*os.File
	var execR *os.File
	defer func() {
		closeAll(childEnds)
		if err != nil {
			closeAll(p.outputs)
			closeAll([]*os.File{execR})
			ns.Close()
			err = fmt.Errorf("start worker %d: %w", spec.Slot, err)
		}
	}()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	childEnds = append(childEnds, devnull)
	files := []uintptr{devnull.Fd(), os.Stdout.Fd(), os.Stderr.Fd()}
	if spec.Output != nil {
		for i := range 2 {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			files[1+i] = w.Fd()
			childEnds = append(childEnds, w)
			p.outputs = append(p.outputs, r)
		}
	}
	names := make([]string, len(spec.Listeners))
	for i, l := range spec.Listeners {
		files = append(files, uintptr(l.FD()))
		names[i] = l.Name
	}
	// The exec pipe: the shim makes its end close-on-exec, so EOF here means
	// the worker's own program runs (or the shim died). Until then a signal
	// could reach the shim in the middle of its execve and be lost.
	execR, execW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	childEnds = append(childEnds, execW)
	env := append(activation.ChildEnv(spec.Env, names),
		fmt.Sprintf("%s=%d", ExecFDEnv, len(files)),
		"NOTIFY_SOCKET="+ns.Addr(),
		"BATON_WORKER="+strconv.Itoa(spec.Slot),
		"BATON_GENERATION="+strconv.Itoa(spec.Generation))
	files = append(files, execW.Fd())

	argv := append(append([]string{}, spec.ShimArgv...), spec.Command...)
	p.PID, err = syscall.ForkExec(spec.ShimPath, argv, &syscall.ProcAttr{
		Env:   env,
		Dir:   spec.Dir,
		Files: files,
		Sys: &syscall.SysProcAttr{
			// Its own process group: a terminal's Ctrl-C reaches only
			// baton, which drains the workers in order; and SIGKILL at the
			// drain deadline reaches the worker's own children too.
			Setpgid:   true,
			Pdeathsig: cmp.Or(spec.DeathSignal, syscall.SIGKILL),
		},
	})
	if err != nil {
		return nil, newExecError(spec, err)
	}
	p.Started = time.Now()
	p.watch(execR, spec)
	return p, nil
}

// ExecError is a start that failed in the fork and exec of the exec shim
// itself (the child's chdir into Dir, or its execve): Err is the errno. Go's
// fork reports a chdir that failed with the errno alone; BadDir says that
// a look at Dir then failed too, which is why, and Err is what that look
// met: ENOENT (Dir is gone), ENOTDIR (Dir, or a directory on its path, is
// not a directory), EACCES (baton may not enter Dir or one on its path),
// or another errno of chdir(2) (ELOOP, ENAMETOOLONG, EIO).
type ExecError struct {
	Path, Dir string
	BadDir    bool
	Err       error
}

func (e *ExecError) Error() string {
	if e.BadDir {
		return fmt.Sprintf("working directory %s: %v", e.Dir, e.Err)
	}
	return fmt.Sprintf("exec %s: %v", e.Path, e.Err)
}

func (e *ExecError) Unwrap() error { return e.Err }

// Resources reports whether the start failed for want of something the
// system may have again later (memory, processes, file descriptors), not
// because of what it was asked to start: only then can the same start
// succeed without a change of its directory, command or environment.
func (e *ExecError) Resources() bool {
	for _, errno := range []error{syscall.EAGAIN, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE, syscall.EINTR} {
		if errors.Is(e.Err, errno) {
			return true
		}
	}
	return false
}

func newExecError(spec Spec, err error) *ExecError {
	e := &ExecError{Path: spec.ShimPath, Dir: spec.Dir, Err: err}
	if spec.Dir != "" {
		if errno := enterable(spec.Dir); errno != nil {
			e.BadDir, e.Err = true, errno
		}
	}
	return e
}

// enterable is nil if this process can chdir into dir, else the errno
// the chdir meets. A stat is not enough: it succeeds on a directory
// without search (x) permission, which chdir refuses with EACCES.
func enterable(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return pe.Err // ENOENT, EACCES (on the path), ENOTDIR, ELOOP
		}
		return err
	case !fi.IsDir():
		return syscall.ENOTDIR
	}
	if err := unix.Access(dir, unix.X_OK); err != nil {
		return err
	}
	return nil
}

// notifyAddr is where a new worker's notify socket listens: a path in
// NotifyDir, else an abstract name, unique within this supervisor.
func notifyAddr(spec Spec) string {
	n := seq.Add(1)
	if spec.NotifyDir != "" {
		return filepath.Join(spec.NotifyDir, fmt.Sprintf("w%d-g%d-%d.sock", spec.Slot, spec.Generation, n))
	}
	return fmt.Sprintf("@baton/%d/%d/%d/%d", os.Getpid(), spec.Slot, spec.Generation, n)
}

// watch reads what a started worker says: the exec pipe (Execd), its
// output and its notifications, until Done.
func (p *Process) watch(execR *os.File, spec Spec) {
	p.execd = make(chan struct{})
	go func() {
		io.Copy(io.Discard, execR) // returns at EOF: exec'd, or gone
		execR.Close()
		close(p.execd)
	}()
	for i, r := range p.outputs {
		stream := []Stream{Stdout, Stderr}[i]
		p.wg.Go(func() { p.readLines(r, stream, spec.Output, &p.ended[i]) })
	}
	p.wg.Go(func() { p.readNotify(spec.OnNotify) })
	go func() { p.wg.Wait(); close(p.done) }()
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}

func (p *Process) readNotify(onNotify func(*Process, notify.Message)) {
	for {
		d, err := p.notify.Read()
		if err != nil {
			return // closed by Exited
		}
		for _, f := range d.Files {
			// Workers have no FD store of their own; the fds are dropped.
			f.Close()
		}
		if d.PID != p.PID {
			p.Warn("notify message dropped: not from the worker's pid", "sender", d.PID)
			continue
		}
		if d.Err != nil {
			p.Warn("notify message", "err", d.Err)
		}
		if len(d.Msg) > 0 && onNotify != nil {
			onNotify(p, d.Msg)
		}
	}
}

// NotifyAddr is the address of the worker's own notification socket, which
// its children inherit in NOTIFY_SOCKET.
func (p *Process) NotifyAddr() string { return p.notify.Addr() }

// Info is who a worker process is.
type Info struct {
	PID, Slot, Generation int
	Started               time.Time
}

// Info returns who p is.
func (p *Process) Info() Info {
	return Info{PID: p.PID, Slot: p.Slot, Generation: p.Generation, Started: p.Started}
}

// Signal sends sig to the worker process itself.
func (p *Process) Signal(sig syscall.Signal) error {
	return unix.Kill(p.PID, sig)
}

// Kill sends SIGKILL to the worker and everything in its process group.
func (p *Process) Kill() error {
	err := unix.Kill(-p.PID, unix.SIGKILL)
	if err != nil {
		// The group may be gone while the leader is a zombie not yet reaped.
		err = unix.Kill(p.PID, unix.SIGKILL)
	}
	return err
}

// Exited releases what the process held once the supervisor has reaped it:
// its notification socket. Output is read until every holder of the pipes
// (the worker's own children included) has closed them; see Done.
func (p *Process) Exited() {
	p.notify.Close()
	p.flushWarnings()
}

// Done is closed when all of the worker's output has been read.
func (p *Process) Done() <-chan struct{} { return p.done }

// CloseOutput stops reading output that a leftover grandchild keeps open.
func (p *Process) CloseOutput() { closeAll(p.outputs) }

// Env returns environ without the variables that belong to one process and
// must never reach a worker: systemd's NOTIFY_SOCKET and watchdog, the
// supervisor's own LISTEN_* sockets, BATON_* of an enclosing baton, and
// JOURNAL_STREAM when the worker's output goes through a pipe (piped is
// true), since its stderr is then no longer the journal stream.
func Env(environ []string, piped bool) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		switch {
		case key == "NOTIFY_SOCKET", key == "WATCHDOG_USEC", key == "WATCHDOG_PID",
			strings.HasPrefix(key, "LISTEN_"), strings.HasPrefix(key, "BATON_"),
			piped && key == "JOURNAL_STREAM":
			continue
		}
		out = append(out, kv)
	}
	return out
}
