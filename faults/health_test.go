package faults

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/batonsd/baton/internal/testsd"
)

// TestHealthzWhileClientsHoldConnections: clients of the metrics endpoint
// that never finish their requests (headers announcing a body never sent,
// or headers never ended) must not silence /healthz, which a load balancer
// takes a host out by. With the endpoint's earlier bound (connections
// beyond 8 waited for a free one, and an unsent body held one without
// end), 8 such clients made /healthz answer nothing for over five minutes.
func TestHealthzWhileClientsHoldConnections(t *testing.T) {
	testsd.Process(t)
	ctx := timeout(t, 60*time.Second)
	addr := freeAddr(t)
	serving(ctx, t, listener(t), "--workers", "1", "--metrics", addr, "--", bins.Worker)
	for _, tt := range []struct {
		name    string
		clients int
		send    string
	}{
		{"8 unsent bodies", 8, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"},
		{"100 unsent bodies", 100, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"},
		{"100 unended headers", 100, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for range tt.clients {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
				if _, err := io.WriteString(c, tt.send); err != nil {
					t.Fatal(err)
				}
			}
			// Probes, each answered within a second, while the clients hold
			// on (more of them than the endpoint keeps, and for longer than
			// its header timeout).
			probe := &http.Client{Timeout: time.Second}
			for i := range 10 {
				start := time.Now()
				resp, err := probe.Get("http://" + addr + "/healthz")
				if err != nil {
					t.Fatalf("probe %d, %d clients holding connections: %v", i, tt.clients, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("probe %d: %d %q", i, resp.StatusCode, body)
				}
				if i == 9 {
					t.Logf("probe %d answered in %s: %s", i, time.Since(start).Round(time.Microsecond), body)
				}
				select {
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				case <-time.After(300 * time.Millisecond): // the probes' pace, as HAProxy's inter
				}
			}
		})
	}
}
