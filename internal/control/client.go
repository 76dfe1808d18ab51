package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// ErrRefused is returned when the server answered with an error.
var ErrRefused = errors.New("refused by baton")

// Call sends req to the control socket at path and waits for the response.
// ctx bounds the whole exchange, including work the request waits for.
//
// A connection that baton closes before answering was accepted by an image
// that then re-executed (baton upgrade): the request was never acted on,
// since the loop that would act on it was busy with the exec, so it is sent
// again, to the new image, a few times. The upgrade request itself is
// handed over to the new image, and never sent twice.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	return callOn(ctx, path, req, nil)
}

// callOn is Call, with opened called on each connection before the request
// is sent.
func callOn(ctx context.Context, path string, req Request, opened func(*net.UnixConn) error) (Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := call(ctx, path, req, opened)
		if !errors.Is(err, errUnanswered) || req.Command == CmdUpgrade || attempt == 5 {
			return resp, err
		}
		select {
		case <-time.After(20 * time.Millisecond * time.Duration(attempt)):
		case <-ctx.Done():
			return Response{}, ctx.Err()
		}
	}
}

// errUnanswered: the connection closed with no byte of an answer.
var errUnanswered = errors.New("closed without an answer (baton re-executing, or gone)")

func call(ctx context.Context, path string, req Request, opened func(*net.UnixConn) error) (Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w (is baton running with this --control?)", path, err)
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	if opened != nil {
		if err := opened(c); err != nil {
			return Response{}, fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			err = errUnanswered // closed before it could even read the request
		}
		return Response{}, fmt.Errorf("control socket %s: send: %w", path, err)
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, ctx.Err()
		}
		if len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)) {
			err = errUnanswered
		}
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: bad response: %w", path, err)
	}
	if resp.Error != "" {
		if resp.Busy {
			return resp, fmt.Errorf("%w: %s (%w)", ErrRefused, resp.Error, ErrBusy)
		}
		return resp, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	return resp, nil
}

// ErrNotRunning: nothing serves the control socket, so no baton runs with
// it: it has stopped already, or never ran with this --control.
var ErrNotRunning = errors.New("no baton serves this control socket")

// Stop asks the baton serving path to stop (CmdStop) and returns once its
// process has exited, passing its answer, what the stop does, to told as
// soon as it comes. That is what ExecStop= must do: systemd signals what is
// left in the unit's cgroup as soon as ExecStop= returns, and under
// KillMode=control-group that is every worker, lame duck or not. A socket
// nobody serves is ErrNotRunning.
func Stop(ctx context.Context, path string, told func(Stopping)) error {
	pid, pidfd := 0, -1
	defer func() {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	opened := func(c *net.UnixConn) error {
		// Taken before the request goes: until then baton has no reason to
		// exit, so the pid names it and no process that came after it.
		cred, err := peerCred(c)
		if err != nil {
			return err
		}
		if pidfd >= 0 {
			unix.Close(pidfd) // an earlier attempt's; the pid is the same across a re-exec
		}
		pid, pidfd = int(cred.Pid), -1
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			if errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("%w: baton (pid %d) exited as it was asked", ErrNotRunning, pid)
			}
			return fmt.Errorf("pidfd_open of baton (pid %d): %w", pid, err)
		}
		pidfd = fd
		return nil
	}
	resp, err := callOn(ctx, path, Request{Command: CmdStop}, opened)
	switch {
	case err != nil && pidfd >= 0 && (errors.Is(err, errUnanswered) || gone(err)):
		// It was there and went without answering: it is exiting (the
		// control socket closes first). Its exit is what was asked for.
		told(Stopping{PID: pid, Doing: "exiting"})
		return waitExit(ctx, pidfd)
	case gone(err):
		return fmt.Errorf("%w: %s", ErrNotRunning, path)
	case err != nil:
		return err
	case resp.Stopping == nil:
		return fmt.Errorf("control socket %s: no answer to stop", path)
	case resp.Stopping.PID != pid:
		// The pidfd would name another process than the one stopping.
		return fmt.Errorf("control socket %s: served by pid %d, answered by pid %d", path, pid, resp.Stopping.PID)
	}
	told(*resp.Stopping)
	return waitExit(ctx, pidfd)
}

// gone reports whether err says nothing serves the control socket.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, ErrNotRunning)
}

// waitExit waits until the process of pidfd has exited: the pidfd polls
// readable then, for a process that is not our child too.
func waitExit(ctx context.Context, pidfd int) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 100) // ms: how soon a cancel is seen
		switch {
		case err != nil && !errors.Is(err, unix.EINTR):
			return fmt.Errorf("poll pidfd: %w", err)
		case n > 0:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
}
