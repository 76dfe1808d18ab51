package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// manCommand prints baton(1), generated from the CLI itself; the .deb
// build uses it.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Hidden: true,
		Usage:  "print the man page",
		Action: func(c *cli.Context) error {
			if err := noMoreArgs(c, 0); err != nil {
				return err
			}
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return err
			}
			fmt.Fprint(c.App.Writer, page)
			return nil
		},
	}
}
