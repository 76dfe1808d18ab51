package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
)

// ErrRefused is returned when the server answered with an error.
var ErrRefused = errors.New("refused by baton")

// Call sends req to the control socket at path and waits for the response.
// ctx bounds the whole exchange, including work the request waits for.
func Call(ctx context.Context, path string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w (is baton running with this --control?)", path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control socket %s: send: %w", path, err)
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, ctx.Err()
		}
		return Response{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: bad response: %w", path, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	return resp, nil
}
