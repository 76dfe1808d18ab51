// Command example-worker is an HTTP server written to run under baton (or
// directly under systemd socket activation). It shows what a worker does:
//
//   - takes its sockets from fds 3.. (activation.FromEnv);
//   - says READY=1 on its NOTIFY_SOCKET once it serves (notify.FromEnv);
//   - pings WATCHDOG=1 at half of WATCHDOG_USEC when baton asks for it
//     (GET /hang stops the pings, to see the watchdog replace a hung worker);
//   - drains on SIGTERM without losing a request: it stops accepting, answers
//     every request still to come on an open connection with
//     "Connection: close", closes only connections that are truly idle (no
//     request in flight or begun, no request bytes waiting in the socket,
//     quiet for 500 ms, whether or not one was ever sent on it), and exits
//     when none is left;
//   - with --leak SIZE, keeps SIZE bytes more, every page written so that it
//     is resident, for each request it serves (on every path, not the
//     --probe-port-base health checks): a deliberate leak, to see baton
//     replace a worker whose memory grows (--recycle-memory);
//   - with --warm-up SIZE, keeps SIZE bytes more, resident, --warm-up-after
//     it said READY=1: an app that fills caches, compiles and opens pools
//     after it is ready.
//
// A plain http.Server.Shutdown is not enough: it can close a connection that
// was just accepted but not yet tracked (golang/go#75591), and it closes
// idle kept-alive connections that a client may be reusing at that moment.
//
// It answers "hello from slot S pid P generation G" on every path, followed
// by --say's text if given.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
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

func main() {
	startDelay := flag.Duration("start-delay", 0, "pretend to warm up this long before serving")
	work := flag.Duration("work", 0, "time each request takes")
	probeBase := flag.Int("probe-port-base", 0, "if set, also serve /healthz on 127.0.0.1:BASE+slot for --ready http://127.0.0.1:...")
	bind := flag.String("bind", "", "bind ADDR itself with SO_REUSEPORT instead of taking sockets from LISTEN_FDS (for the benchmark's comparison)")
	say := flag.String("say", "", "append `TEXT` to every answer (a release's name and what it was started with, for tests that read what serves)")
	timings := flag.String("timings", "", "append \"START READY\" (Unix ns: main began, READY=1 sent) to this file (for the benchmark's overhead per swap)")
	var leakSize byteSize
	flag.Var(&leakSize, "leak", "keep `SIZE` bytes (a number, or with a suffix K, M or G: 512K, 1M; up to 1G) resident and never freed for each request served: a deliberate leak, for tests of memory recycling (0: none)")
	var warmSize byteSize
	flag.Var(&warmSize, "warm-up", "keep `SIZE` bytes more resident (as --leak's SIZE), --warm-up-after READY=1: an app that warms up after it is ready, for tests of memory recycling (0: none)")
	warmAfter := flag.Duration("warm-up-after", 0, "when --warm-up takes its memory, after READY=1")
	flag.Parse()
	log.SetFlags(0)
	// Output goes to pipes that baton reads. If baton dies (kill -9), under
	// systemd this worker gets its stop signal and drains, and its first log
	// line meets a pipe with no reader: Go kills a program whose write to
	// fd 1 or 2 fails with EPIPE, unless SIGPIPE is ignored, losing the
	// requests the drain was finishing. Ignored, the write just fails.
	signal.Ignore(syscall.SIGPIPE)

	lns, err := activation.FromEnv()
	if err != nil {
		log.Fatalf("sockets: %v", err)
	}
	if *bind != "" {
		l, err := bindReusePort(*bind)
		if err != nil {
			log.Fatalf("bind %s: %v", *bind, err)
		}
		lns = append(lns, l)
	}
	if len(lns) == 0 {
		log.Fatal("no sockets: run me under baton or systemd socket activation (LISTEN_FDS)")
	}
	sd, err := notify.FromEnv()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Fatal(err)
	}
	slot, gen := os.Getenv("BATON_WORKER"), os.Getenv("BATON_GENERATION")
	time.Sleep(*startDelay)

	d := newDrainer()
	srv := &http.Server{
		Handler: d.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			leak(int(leakSize))
			if r.URL.Path == "/hang" {
				hung.Store(true)
				log.Printf("GET /hang: no more watchdog pings")
				fmt.Fprintf(w, "slot %s pid %d stops pinging its watchdog\n", slot, os.Getpid())
				return
			}
			wait := *work
			if d, ok := strings.CutPrefix(r.URL.Path, "/sleep/"); ok {
				// A slow request on demand, for tests of draining.
				var bad error
				if wait, bad = time.ParseDuration(d); bad != nil || wait < 0 || wait > time.Minute {
					http.Error(w, "want /sleep/DURATION, up to 1m", http.StatusBadRequest)
					return
				}
				log.Printf("GET %s: answering in %s", r.URL.Path, wait)
			}
			time.Sleep(wait)
			if *say != "" {
				fmt.Fprintf(w, "hello from slot %s pid %d generation %s %s\n", slot, os.Getpid(), gen, *say)
				return
			}
			fmt.Fprintf(w, "hello from slot %s pid %d generation %s\n", slot, os.Getpid(), gen)
		})),
		ConnState:         d.connState,
		ReadHeaderTimeout: 10 * time.Second,
	}
	var serving sync.WaitGroup
	for _, l := range lns {
		// Net sets O_NONBLOCK on the socket's open file description,
		// which every worker shares: fine when all workers are this
		// program, since Go wants it anyway. baton itself never changes
		// the flag.
		nl, err := l.Net()
		if err != nil {
			log.Fatal(err)
		}
		tl := d.track(nl)
		serving.Go(func() { srv.Serve(tl) }) // returns when the drain closes tl
	}
	if *probeBase > 0 {
		n, _ := strconv.Atoi(slot) // a missing slot probes BASE+0
		addr := fmt.Sprintf("127.0.0.1:%d", *probeBase+n)
		go func() {
			err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintln(w, "ok")
			}))
			log.Printf("probe listener %s: %v", addr, err)
		}()
	}

	if *timings != "" {
		writeTimings(*timings)
	}
	if err := sd.Send("READY=1\nSTATUS=serving"); err != nil {
		log.Printf("notify: %v", err)
	}
	log.Printf("slot %s pid %d generation %s serving", slot, os.Getpid(), gen)
	if warmSize > 0 {
		time.AfterFunc(*warmAfter, func() { leak(int(warmSize)) })
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go watchdog(ctx, sd)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	sig := <-sigs
	log.Printf("%v: draining", sig)
	if err := sd.Send("STOPPING=1"); err != nil {
		log.Printf("notify: %v", err)
	}
	// Stop accepting, then wait for the accept loops to end: only then is
	// every accepted connection recorded. Draining before that could exit
	// with a connection the kernel had just handed to Accept, and reset it.
	d.stopAccepting()
	serving.Wait()
	d.drain()
	log.Printf("drained")
}

// started is as early as this program can tell the time.
var started = time.Now()

// writeTimings appends this worker's own start-to-ready span, so that what
// a rollout takes beyond it can be put down to the supervisor.
func writeTimings(path string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Printf("timings: %v", err)
		return
	}
	fmt.Fprintf(f, "%d %d\n", started.UnixNano(), time.Now().UnixNano())
	f.Close()
}

// byteSize is --leak's SIZE: bytes, or K, M or G of 1024, 1024² or 1024³,
// up to 1 GiB (an int on any platform).
type byteSize int

func (b *byteSize) String() string { return strconv.Itoa(int(*b)) }

func (b *byteSize) Set(s string) error {
	unit := uint64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K', 'k':
			unit = 1 << 10
		case 'M', 'm':
			unit = 1 << 20
		case 'G', 'g':
			unit = 1 << 30
		}
	}
	if unit > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil || n*unit > 1<<30 {
		return errors.New("want bytes, or a number with a suffix K, M or G, up to 1G")
	}
	*b = byteSize(n * unit)
	return nil
}

// leaked is what --leak keeps: never freed.
var leaked struct {
	sync.Mutex
	blocks [][]byte
}

// leak keeps n bytes more for good, each page written: memory fresh from the
// kernel is not resident until touched.
func leak(n int) {
	if n <= 0 {
		return
	}
	b := make([]byte, n)
	for i := 0; i < n; i += os.Getpagesize() {
		b[i] = 1
	}
	leaked.Lock()
	leaked.blocks = append(leaked.blocks, b)
	leaked.Unlock()
}

// hung is set by GET /hang: the watchdog pings stop, as in a wedged process.
var hung atomic.Bool

// watchdog pings at half of WATCHDOG_USEC, if it is set for this process.
func watchdog(ctx context.Context, sd *notify.Client) {
	usec, err := strconv.Atoi(os.Getenv("WATCHDOG_USEC"))
	if err != nil || usec <= 0 {
		return
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return
	}
	t := time.NewTicker(time.Duration(usec) * time.Microsecond / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if hung.Load() {
				continue
			}
			if err := sd.Send("WATCHDOG=1"); err != nil {
				log.Printf("watchdog: %v", err)
			}
		}
	}
}

// drainer tracks every connection from the moment it is accepted, so a
// drain knows all of them, and closes each only when it is truly idle.
type drainer struct {
	mu        sync.Mutex
	draining  bool
	listeners []net.Listener
	conns     map[net.Conn]connInfo
	idle      chan struct{} // signalled when a connection changes state
}

// connInfo is a connection's state and when it entered it.
type connInfo struct {
	state http.ConnState
	since time.Time
}

// quietFor is how long a connection must have been idle (or, new, without
// a first request) before a drain closes it. A busy kept-alive client sends
// its next request microseconds after an answer: closing the connection in
// between would fail that request for a client that does not retry (wrk
// does not; 334 of 676,000 requests in a test), while waiting lets the
// answer's "Connection: close" end it cleanly. A client that stayed quiet
// this long is idle, and a new connection that did is an HTTP client's
// spare (Go's Transport dials one while another request is under way and
// pools it unused): a client that means to send a request sends it right
// after connecting.
const quietFor = 500 * time.Millisecond

func newDrainer() *drainer {
	return &drainer{conns: map[net.Conn]connInfo{}, idle: make(chan struct{}, 1)}
}

type trackedListener struct {
	net.Listener
	d *drainer
}

func (d *drainer) track(l net.Listener) net.Listener {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.listeners = append(d.listeners, l)
	return trackedListener{l, d}
}

// Accept records the connection before http.Server sees it: between the two
// the server does not know it yet, and a drain must not miss it.
func (t trackedListener) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	t.d.mu.Lock()
	t.d.conns[c] = connInfo{http.StateNew, time.Now()}
	t.d.mu.Unlock()
	return c, nil
}

func (d *drainer) connState(c net.Conn, st http.ConnState) {
	d.mu.Lock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(d.conns, c)
	} else {
		d.conns[c] = connInfo{st, time.Now()}
	}
	d.mu.Unlock()
	select {
	case d.idle <- struct{}{}:
	default:
	}
}

// wrap answers with "Connection: close" once draining: the server then
// closes the connection after this response, and the client knows not to
// reuse it.
func (d *drainer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		draining := d.draining
		d.mu.Unlock()
		if draining {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// stopAccepting closes this worker's copies of the listeners: the shared
// socket keeps its queue for the other workers. From now on responses carry
// "Connection: close".
func (d *drainer) stopAccepting() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for _, l := range d.listeners {
		l.Close()
	}
}

// drain waits until every connection has closed, closing those that are
// idle with nothing waiting to be read. Call it once the accept loops have
// ended.
func (d *drainer) drain() {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		d.mu.Lock()
		for c, ci := range d.conns {
			quiet := (ci.state == http.StateIdle || ci.state == http.StateNew) && time.Since(ci.since) >= quietFor
			if quiet && pending(c) == 0 {
				c.Close()
				delete(d.conns, c)
			}
		}
		left := len(d.conns)
		d.mu.Unlock()
		if left == 0 {
			return
		}
		select {
		case <-d.idle:
		case <-tick.C:
		}
	}
}

// pending returns the bytes waiting in c's receive queue (SIOCINQ), or -1.
// A kept-alive connection with bytes waiting carries a request that the
// server is about to read: closing it would reset that request.
func pending(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	raw.Control(func(fd uintptr) {
		v, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err == nil {
			n = v
		}
	})
	return n
}

// bindReusePort opens addr with SO_REUSEPORT, so that several processes can
// bind it: how servers without a supervisor's socket share a port. Each
// process then has its own accept queue, lost when it closes.
func bindReusePort(addr string) (*activation.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return nil, err
	}
	defer f.Close() // the Listener gets a duplicate: f's finalizer would close its own fd
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, err
	}
	return activation.NewListener(fd, "bind")
}
