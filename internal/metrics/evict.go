package metrics

import (
	"container/list"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The endpoint's connections. A probe must be answered within a second
// whatever other clients do with the port, every connection is an fd that
// new workers need, and baton's CPU is the service's. The listener Serve
// serves on keeps these rules:
//
//   - At most MaxConns connections are open. A new one beyond that closes
//     the oldest that is not owed an answer and has had its grace (the
//     time from its accept to send its request header): one whose header
//     has not all reached baton (a half-sent request, a header line never
//     ended), or one already answered. A connection whose whole request
//     header has come (read, or waiting in its socket) is owed an answer
//     and is never closed to make room, so a probe, once its request is
//     in, is answered; the grace lets its request come. When none can be
//     closed, the new one waits until one can (answers are bounded by
//     writeTimeout, graces by grace) and the listen queue holds the rest.
//   - At most AcceptRate connections a second are taken (AcceptBurst at
//     once). Without it, clients that reconnect the moment they are
//     dropped keep baton accepting and dropping as fast as a core allows.
//   - Each connection carries one request (keep-alives off): a client
//     cannot pipeline requests whose answers it does not read, and every
//     request costs an accept, which the rate bounds.
//
// So a flood costs baton a bounded share of a core (AcceptRate
// connections a second at most, fewer when they wait for a grace or a
// snapshot: about 650 a second when MaxConns are held 100 ms each), and a
// probe waits in the listen queue behind the connections queued before
// it, at most one per flooding client that reconnects when dropped (about
// 200 ms for 200 such clients), then for its snapshot (up to
// snapshotEvery). Nothing depends on the clients' addresses: from one host
// or many, the bounds are the same. Beyond them: more clients than the
// listen queue holds (net.core.somaxconn) have the kernel drop the probe's
// SYN; and answers larger than the socket buffers (/metrics of hundreds of
// workers) to MaxConns clients that do not read them hold every
// connection for writeTimeout at a time.
const (
	AcceptRate  = 1000
	AcceptBurst = MaxConns
	acceptBatch = 16
	grace       = 100 * time.Millisecond
)

// bound returns ln with the rules above, for max connections. Its Accept
// is called by one goroutine at a time (http.Server.Serve's).
func bound(ln net.Listener, max int) *boundedListener {
	return &boundedListener{
		Listener: ln,
		max:      max,
		every:    time.Second / AcceptRate,
		open:     list.New(),
		changed:  make(chan struct{}, 1),
		closed:   make(chan struct{}),
		peek:     make([]byte, maxHeaderBytes+4096),
	}
}

type boundedListener struct {
	net.Listener
	max   int
	every time.Duration // between connections taken, past the burst

	// Accept's alone.
	tat  time.Time // the pace's theoretical arrival time (GCRA)
	peek []byte

	mu      sync.Mutex
	open    *list.List    // of *trackedConn, oldest first
	changed chan struct{} // a connection closed or was answered
	closed  chan struct{}
	once    sync.Once
}

func (l *boundedListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *boundedListener) Accept() (net.Conn, error) {
	if err := l.pace(); err != nil {
		return nil, err
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l, accepted: time.Now()}
	l.mu.Lock()
	tc.elem = l.open.PushBack(tc)
	l.mu.Unlock()
	for {
		l.mu.Lock()
		over := l.open.Len() > l.max
		var victim *trackedConn
		var next time.Time
		if over {
			victim, next = l.victim(tc, time.Now())
		}
		l.mu.Unlock()
		if !over {
			return tc, nil
		}
		if victim != nil {
			victim.Close() // its server goroutine sees the read or write fail and ends
			continue
		}
		if err := l.await(next); err != nil {
			tc.Close()
			return nil, err
		}
	}
}

// await waits for a connection to close or be answered, or until next
// (unless zero), or for the listener to close.
func (l *boundedListener) await(next time.Time) error {
	var aged <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(time.Until(next))
		defer t.Stop()
		aged = t.C
	}
	select {
	case <-l.changed:
	case <-aged:
	case <-l.closed:
		return net.ErrClosed
	}
	return nil
}

// pace waits until the accept rate lets one more connection in. Past the
// burst it waits for room for acceptBatch at once: a wake-up per
// connection would cost more than the connection.
func (l *boundedListener) pace() error {
	now := time.Now()
	if ready := l.tat.Add(-AcceptBurst * l.every); now.Before(ready) {
		t := time.NewTimer(ready.Sub(now) + (acceptBatch-1)*l.every)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.closed:
			return net.ErrClosed
		}
		now = time.Now()
	}
	l.tat = later(l.tat, now).Add(l.every)
	return nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// victim is the oldest connection but fresh that is not owed an answer
// and has had its grace; if there is none, next is when the first without
// its grace yet will have had it (zero if none). l.mu is held.
func (l *boundedListener) victim(fresh *trackedConn, now time.Time) (victim *trackedConn, next time.Time) {
	for e := l.open.Front(); e != nil; e = e.Next() {
		c := e.Value.(*trackedConn)
		switch {
		case c == fresh:
		case c.answered:
			return c, time.Time{}
		case c.requested.Load():
		case now.Sub(c.accepted) < grace:
			if next.IsZero() {
				next = c.accepted.Add(grace)
			}
		case c.pendingEndsHeader(l.peek):
			c.requested.Store(true)
		default:
			return c, time.Time{}
		}
	}
	return nil, next
}

// signal tells a waiting Accept that a connection may have become one to
// evict, or gone.
func (l *boundedListener) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

type trackedConn struct {
	net.Conn
	l        *boundedListener
	accepted time.Time

	requested atomic.Bool // its request header has all come
	scan      headerScan  // the bytes read so far; its reader's, and l.mu's to read
	answered  bool        // under l.mu
	elem      *list.Element
	once      sync.Once
}

// Read notes when the request header has all been read.
func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.requested.Load() {
		c.l.mu.Lock()
		if c.scan.feed(p[:n]) {
			c.requested.Store(true)
		}
		c.l.mu.Unlock()
	}
	return n, err
}

// pendingEndsHeader tells whether the bytes waiting in c's socket, after
// those read, end its request header. l.mu is held; buf is scratch.
func (c *trackedConn) pendingEndsHeader(buf []byte) bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	raw.Control(func(fd uintptr) {
		n, _, _ = unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	s := c.scan
	return n > 0 && s.feed(buf[:n])
}

// answer marks c answered: from now on it may be evicted.
func (c *trackedConn) answer() {
	c.l.mu.Lock()
	c.answered = true
	c.l.mu.Unlock()
	c.l.signal()
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
		c.l.signal()
	})
	return c.Conn.Close()
}

// headerScan finds the empty line that ends a request header, as net/http
// reads it (lines end in LF, with or without CR). Once it is read,
// net/http answers without waiting for anything more: the request, or 400
// for a malformed one.
type headerScan uint8

const (
	inLine    headerScan = iota
	afterLF              // a line just ended
	afterLFCR            // a line ended, then CR
)

// feed scans p, the bytes after those scanned, and tells whether they end
// the header.
func (s *headerScan) feed(p []byte) bool {
	for _, b := range p {
		switch {
		case b == '\n' && *s != inLine:
			return true
		case b == '\n':
			*s = afterLF
		case b == '\r' && *s == afterLF:
			*s = afterLFCR
		default:
			*s = inLine
		}
	}
	return false
}
