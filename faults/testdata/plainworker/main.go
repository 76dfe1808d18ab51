// Command plainworker is a Go worker as users write them, not as baton's
// example worker is written: an http.Server on the socket from LISTEN_FDS,
// READY=1 on NOTIFY_SOCKET, and on SIGTERM a log line and
// http.Server.Shutdown, then a last log line. It does nothing about
// SIGPIPE: a Go program writing to fd 1 or 2 after the pipe's reader is
// gone dies of it.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	// How long each request takes: the first argument, else $WORK.
	w := os.Getenv("WORK")
	if len(os.Args) > 1 {
		w = os.Args[1]
	}
	work, _ := time.ParseDuration(w)
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		log.Fatal(err)
	}
	slot, gen := os.Getenv("BATON_WORKER"), os.Getenv("BATON_GENERATION")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(work)
		fmt.Fprintf(w, "plain worker slot %s generation %s\n", slot, gen)
	})}
	go srv.Serve(ln)
	if c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
		c.Write([]byte("READY=1"))
		c.Close()
	}
	log.Printf("serving")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	log.Printf("draining")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(ctx)
	log.Printf("drained: %v", err)
}
