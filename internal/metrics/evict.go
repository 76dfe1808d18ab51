package metrics

import (
	"container/list"
	"net"
	"sync"
)

// evictOldest bounds the connections ln hands out to max by closing the
// oldest one still open when a new one would exceed it. A bound that makes
// new connections wait (golang.org/x/net/netutil.LimitListener, once here)
// lets eight clients that never finish their request hold every slot:
// /healthz went unanswered for minutes while baton served at full
// strength, and a load balancer took the host out. The oldest connection
// is the one most likely held open by a slow or hostile client (a probe or
// a scrape takes milliseconds), so a new one always gets in, and whoever
// holds connections can only delay a probe by opening more than max
// connections within the probe's few milliseconds.
func evictOldest(ln net.Listener, max int) net.Listener {
	return &evictingListener{Listener: ln, max: max, open: list.New()}
}

type evictingListener struct {
	net.Listener
	max  int
	mu   sync.Mutex
	open *list.List // of *trackedConn, oldest first
}

func (l *evictingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	var oldest *trackedConn
	l.mu.Lock()
	tc.elem = l.open.PushBack(tc)
	if l.open.Len() > l.max {
		oldest = l.open.Front().Value.(*trackedConn)
	}
	l.mu.Unlock()
	if oldest != nil {
		oldest.Close() // its server goroutine sees the read or write fail and ends
	}
	return tc, nil
}

type trackedConn struct {
	net.Conn
	l    *evictingListener
	elem *list.Element
	once sync.Once
}

// CloseWrite passes through to a TCP connection: net/http half-closes
// before it closes, so that a client whose request body it did not read
// still gets the response.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open.Remove(c.elem)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
