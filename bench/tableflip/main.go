// Command tableflip-worker is the benchmark's HTTP worker upgraded the way
// cloudflare/tableflip does it: one process; SIGHUP starts a new copy that
// inherits the listener, and the old one stops accepting and drains once the
// new one says Ready. It has the Go example worker's start-up time and work
// per request. Its own module, so baton's go.mod does not carry tableflip.
//
//	tableflip-worker -addr 127.0.0.1:18080 -pidfile /tmp/tf.pid -work 5ms -start-delay 200ms
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	pidFile := flag.String("pidfile", "", "tableflip's PID file: the serving process's pid")
	work := flag.Duration("work", 0, "time each request takes")
	startDelay := flag.Duration("start-delay", 0, "start-up before serving")
	flag.Parse()
	log.SetFlags(0)

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
		for sig := range sigs {
			if sig == syscall.SIGTERM {
				upg.Stop()
				return
			}
			if err := upg.Upgrade(); err != nil {
				log.Printf("upgrade: %v", err)
			}
		}
	}()
	ln, err := upg.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	time.Sleep(*startDelay)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(*work)
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})}
	go srv.Serve(ln)
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()
	// As tableflip's documentation shows: Shutdown with a deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
