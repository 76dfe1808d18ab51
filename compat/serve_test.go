package compat

import (
	"context"
	"testing"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/testsd"
)

// served starts `baton run --control CTL ARGS...` under a stand-in systemd
// that passes it one TCP listener (args gets its address, for servers that
// must name it) and waits for READY=1. It returns the service, the
// listener and the control socket's path.
func served(ctx context.Context, t *testing.T, args func(addr string) []string) (*testsd.Service, *activation.Listener, string) {
	t.Helper()
	sd := testsd.New(t)
	spec, _ := activation.ParseSpec("http=127.0.0.1:0")
	web, err := activation.Listen(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { web.Close() })
	ctl := testsd.ShortDir(t) + "/c.sock"
	svc := sd.Start(bins, []*activation.Listener{web}, nil, append([]string{"run", "--control", ctl}, args(web.Addr())...)...)
	sd.WaitFor(ctx, "READY=1", func(d testsd.Datagram) bool { return d.Msg.Is("READY", "1") && d.PID == svc.PID() })
	return svc, web, ctl
}
