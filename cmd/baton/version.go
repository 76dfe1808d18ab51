package main

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/batonsd/baton/internal/sigrelay"
	"github.com/batonsd/baton/internal/supervisor"
	"github.com/urfave/cli/v2"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// handoffProtocol, when set, is what `baton version` says it speaks. Only
// the e2e tests set it (-X main.handoffProtocol=99), to make a package whose
// binary a running baton must refuse to re-execute in place. (-X sets only
// a string variable initialised to a constant, hence empty here.)
var handoffProtocol = ""

func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit, state-handoff protocol version and how signals are carried across an in-place upgrade",
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 0); err != nil {
				return err
			}
			proto, reads := strconv.Itoa(supervisor.HandoffProtocol), supervisor.HandoffReads.String()
			if handoffProtocol != "" {
				proto, reads = handoffProtocol, handoffProtocol+"-"+handoffProtocol
			}
			// A running baton reads these two lines before it re-executes
			// this binary in place (handoff.go); older ones read only the
			// first and require it equal to their own.
			fmt.Fprintf(c.App.Writer, "baton %s\ncommit %s\nhandoff-protocol %s\nhandoff-reads %s\nsignal-relay %s\n", version, commit(), proto, reads, sigrelay.Mode())
			return nil
		},
	}
}
