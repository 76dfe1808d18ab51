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
	for attempt := 1; ; attempt++ {
		resp, err := call(ctx, path, req)
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

func call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w (is baton running with this --control?)", path, err)
	}
	defer c.Close()
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
