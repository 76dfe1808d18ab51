// Command loadgen drives steady HTTP load (rig.Load: fresh and
// kept-alive clients) until SIGTERM or SIGINT, then prints the outcome as
// JSON; with -report it says how many requests were answered as it goes.
// The end-to-end tests run it inside a container's network namespace.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/rig"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/", "what to GET")
	fresh := flag.Int("fresh", 4, "clients opening a connection per request")
	keepAlive := flag.Int("keepalive", 4, "clients reusing connections")
	pause := flag.Duration("pause", 5*time.Millisecond, "pause between a client's requests")
	report := flag.Duration("report", 0, "print \"ok N\", the requests answered so far, on stderr this often (0: never)")
	flag.Parse()
	load := rig.StartLoad(*url, *fresh, *keepAlive, *pause)
	if *report > 0 {
		go func() {
			for range time.Tick(*report) {
				fmt.Fprintf(os.Stderr, "ok %d\n", load.OK())
			}
		}()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	ok, _ := load.Stop()
	out := struct {
		OK       int64    `json:"ok"`
		Refused  int      `json:"refused"`
		Failures []string `json:"failures"`
	}{OK: ok, Failures: []string{}}
	for _, f := range load.Failures() {
		if strings.Contains(f.Err, "connection refused") {
			out.Refused++
		}
		out.Failures = append(out.Failures, f.Start.Format(time.RFC3339Nano)+" "+f.Err)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
