package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/batonsd/baton/internal/fds"

	"golang.org/x/sys/unix"
)

// Handler answers requests. It is called from the connection's goroutine.
type Handler interface {
	Status(ctx context.Context) (Status, error)
	// Reload runs a rollout and returns when it has ended; the error says
	// why it was aborted.
	Reload(ctx context.Context) (Rollout, error)
	// AwaitReload waits for the result of the rollout a reload signal
	// started.
	AwaitReload(ctx context.Context) (Rollout, error)
	// Scale changes the number of workers to n by a rollout and returns
	// when it has ended.
	Scale(ctx context.Context, n int) (Rollout, error)
	// Rollback rolls out the previous generation's settings again and
	// returns when it has ended.
	Rollback(ctx context.Context) (Rollout, error)
	// Recycle replaces the worker of slot (every worker, one at a time,
	// with all) in the serving generation and returns when it has ended.
	Recycle(ctx context.Context, slot int, all bool) (Rollout, error)
	// Upgrade re-executes the supervisor in place and hands conn to the new
	// image, which answers on it. It returns only if the upgrade was
	// refused or failed, with the reason.
	Upgrade(ctx context.Context, conn *net.UnixConn) error
	// Stop begins a stop as SIGTERM does and returns at once, saying what
	// the stop does.
	Stop(ctx context.Context) (Stopping, error)
	// Ping returns once the supervisor's loop has handled a no-op, nil; an
	// error once ctx is done first or the loop has ended. While a request
	// runs, a heartbeat is sent only after a Ping within the interval
	// succeeded: a client waiting on a stuck loop hears nothing, and gives
	// up after its silence limit.
	Ping(ctx context.Context) error
}

// Server serves the control socket.
type Server struct {
	path    string
	ln      *net.UnixListener
	handler Handler
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	reading map[*net.UnixConn]bool // connections whose request is not in yet
}

// Listen creates the control socket at path with mode 0600 and serves it
// until Close. A socket that another live process serves is an error; a
// stale one is replaced.
func Listen(path string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Only a stale socket may be replaced: the rename below would put the
	// socket over a regular file (and Close would delete it), or over a
	// directory's entry, or a symlink's.
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("--control %s exists and is not a socket (%s): refusing to replace it", path, fileKind(fi.Mode()))
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is served by another process (another baton?): give this one --control", path)
	}
	// Bind under a temporary name, restrict it, then rename it into place,
	// so the socket is never reachable with looser permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	os.Remove(tmp) // a leftover from a crashed start, if any; absence is fine
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return serve(path, ln, h, log), nil
}

func serve(path string, ln *net.UnixListener, h Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{path: path, ln: ln, handler: h, log: log, ctx: ctx, cancel: cancel, reading: map[*net.UnixConn]bool{}}
	// The accept loop is counted in wg, so the connections it adds to wg
	// never race with Close's Wait.
	s.wg.Go(s.accept)
	return s
}

// Dup duplicates the listening socket, not close-on-exec, for a re-exec in
// place: connections made while the new image starts wait in its backlog
// instead of being refused.
func (s *Server) Dup() (int, error) { return fds.DupConn(s.ln) }

// Adopt serves the listening socket fd that a previous image of this
// process handed over (see Dup), bound at path.
func Adopt(fd int, path string, h Handler, log *slog.Logger) (*Server, error) {
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "control")
	defer f.Close() // FileListener holds its own duplicate
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("control socket handed over: %w", err)
	}
	ln, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("control socket handed over: fd %d is not a unix listener", fd)
	}
	ln.SetUnlinkOnClose(false)
	return serve(path, ln, h, log), nil
}

func fileKind(m os.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case os.ModeDir:
		return "a directory"
	case os.ModeSymlink:
		return "a symbolic link"
	case os.ModeNamedPipe:
		return "a named pipe"
	}
	return "mode " + m.Type().String()
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Accept errors other than a closed listener are retried after a backoff
// that doubles from acceptBackoffMin to acceptBackoffMax, as net/http's
// Server does: one EMFILE used to end the loop, and the control socket then
// never answered again although the fds were soon free.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func (s *Server) accept() {
	var backoff time.Duration
	for {
		c, err := s.ln.AcceptUnix()
		if err == nil {
			if backoff > 0 {
				s.log.Info("control socket accepts again")
				backoff = 0
			}
			s.wg.Go(func() { s.serveConn(c) })
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if backoff == 0 {
			backoff = acceptBackoffMin
			s.log.Error("control socket accept: retrying with backoff", "err", err)
		} else {
			backoff = min(2*backoff, acceptBackoffMax)
		}
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return
		}
	}
}

// Close stops accepting, cancels requests in flight, waits for their
// goroutines and removes the socket file.
//
// A client still sending its request is cut off (it used to hold Close for
// up to requestTimeout, and baton's stop with it); requests in flight see
// their context cancelled and answer with that.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.cancel()
	s.mu.Lock()
	for c := range s.reading {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(s.path) // best effort: a missing file is what we want anyway
	return err
}

// startReading registers c as waiting for its request, unless the server
// is closing.
func (s *Server) startReading(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return false
	}
	s.reading[c] = true
	return true
}

// requestTimeout bounds how long a client may take to send its request,
// and writeTimeout how long it may take to read each line of the answer.
const (
	requestTimeout = 5 * time.Second
	writeTimeout   = 10 * time.Second
)

// heartbeatEvery is HeartbeatInterval; tests shorten it.
var heartbeatEvery = HeartbeatInterval

func (s *Server) serveConn(c *net.UnixConn) {
	defer c.Close()
	w := &lineWriter{c: c, enc: json.NewEncoder(c), pid: os.Getpid()}
	// The request is read before the peer check answers, so that a refused
	// client gets the reason and not a reset of its unread request.
	if !s.startReading(c) {
		return // closing
	}
	c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := readLine(bufio.NewReaderSize(c, 4096))
	c.SetReadDeadline(time.Time{})
	s.mu.Lock()
	delete(s.reading, c)
	s.mu.Unlock()
	if err := checkPeer(c); err != nil {
		s.log.Warn("control connection refused", "err", err)
		w.send(Response{Error: err.Error()})
		return
	}
	if err != nil {
		w.send(Response{Error: err.Error()})
		return
	}
	req, err := ParseRequest(line)
	if err != nil {
		w.send(Response{Error: err.Error()})
		return
	}
	v2 := req.Protocol >= 2
	if v2 {
		w.send(Response{Hello: &Hello{Protocol: Protocol}})
	}
	if req.Command == CmdUpgrade {
		// No heartbeat: the connection goes to the new image, which answers.
		if err := s.handler.Upgrade(s.ctx, c); err != nil {
			w.send(Response{Error: err.Error(), Busy: errors.Is(err, ErrBusy)})
		}
		return
	}
	stop := func() {}
	if v2 {
		stop = s.heartbeat(w)
	}
	resp := s.handle(req)
	stop()
	w.send(resp)
}

// lineWriter writes the lines of one connection's answer, each with the
// server's pid, one at a time.
type lineWriter struct {
	mu  sync.Mutex
	c   *net.UnixConn
	enc *json.Encoder
	pid int
}

// send writes r, unless the client takes longer than writeTimeout to read
// it; the client may be gone, and there is nothing to do then.
func (w *lineWriter) send(r Response) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.PID = w.pid
	w.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	w.enc.Encode(r) // see above
}

// heartbeat sends w a working line every heartbeatEvery, each only once a
// Ping of the handler has come back within that interval, until the
// returned func is called, which returns once it has stopped.
func (s *Server) heartbeat(w *lineWriter) (stop func()) {
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			pingCtx, pingCancel := context.WithTimeout(ctx, heartbeatEvery)
			err := s.handler.Ping(pingCtx)
			pingCancel()
			if err == nil {
				w.send(Response{Working: true})
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

func (s *Server) handle(req Request) Response {
	switch req.Command {
	case CmdStatus:
		st, err := s.handler.Status(s.ctx)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{Status: &st}
	case CmdReload, CmdAwaitReload:
		reload := s.handler.Reload
		if req.Command == CmdAwaitReload {
			reload = s.handler.AwaitReload
		}
		return rolloutResponse(reload(s.ctx))
	case CmdScale:
		return rolloutResponse(s.handler.Scale(s.ctx, req.Workers))
	case CmdRollback:
		return rolloutResponse(s.handler.Rollback(s.ctx))
	case CmdRecycle:
		return rolloutResponse(s.handler.Recycle(s.ctx, req.Slot, req.All))
	case CmdStop:
		st, err := s.handler.Stop(s.ctx)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{Stopping: &st}
	}
	return Response{Error: fmt.Sprintf("unknown command %q", req.Command)}
}

func rolloutResponse(r Rollout, err error) Response {
	if err != nil {
		return Response{Error: err.Error(), Rollout: &r}
	}
	return Response{Rollout: &r}
}

// checkPeer admits root and the server's own uid.
func checkPeer(c *net.UnixConn) error {
	cred, err := peerCred(c)
	if err != nil {
		return err
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("permission denied for uid %d (pid %d): only root and uid %d may use this control socket", cred.Uid, cred.Pid, os.Geteuid())
	}
	return nil
}

// peerCred is the other end's credentials: the client's on the server's
// side; on the client's, the server's as they were at its listen().
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred, nil
}

// readLine reads one line; on an error it returns what it read before.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxLine {
			return nil, fmt.Errorf("control line longer than %d bytes", MaxLine)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, fmt.Errorf("read control line: %w", err)
		}
	}
}
