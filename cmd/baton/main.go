// Command baton is a systemd-native supervisor for zero-downtime services.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if completingAfterDashes(os.Args) {
		return
	}
	app := newApp()
	if err := app.RunContext(ctx, reorderArgs(app, os.Args)); err != nil {
		// Errors can quote a worker's output (a failed rollout's reason).
		// A stderr nobody reads must not keep baton from exiting.
		written := make(chan struct{})
		go func() {
			fmt.Fprintln(os.Stderr, "baton:", control.Printable(err.Error()))
			close(written)
		}()
		select {
		case <-written:
		case <-time.After(time.Second):
		}
		stop()
		os.Exit(exitCode(err))
	}
}
