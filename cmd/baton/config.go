package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

// settings reads each `baton run` setting from the command line when it was
// given there, else from the --config file, else the flag's default. The
// file is read anew for every rollout.
type settings struct {
	c    *cli.Context
	path string
	file map[string]any
}

// fileKeys are the settings a config file may hold: "command" for the
// worker command, and the names of the run flags but --config itself,
// --control and --metrics (the sockets a running baton serves cannot move
// at a reload).
// Derived from the flags, so a new flag is a key too.
var fileKeys = func() []string {
	keys := []string{"command"}
	for _, f := range runFlags() {
		if name := f.Names()[0]; name != "config" && name != "control" && name != "metrics" {
			keys = append(keys, name)
		}
	}
	return keys
}()

func loadSettings(c *cli.Context) (settings, error) {
	s := settings{c: c, path: c.String("config")}
	if s.path == "" {
		return s, nil
	}
	if _, err := toml.DecodeFile(s.path, &s.file); err != nil {
		return s, fmt.Errorf("config %s: %w", s.path, err)
	}
	var unknown []string
	for k := range s.file {
		if !slices.Contains(fileKeys, k) {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return s, fmt.Errorf("config %s: unknown key %s (known: %s)", s.path, strings.Join(unknown, ", "), strings.Join(fileKeys, ", "))
	}
	return s, nil
}

// shadowed lists the file's keys the command line sets too.
func (s settings) shadowed() []string {
	var keys []string
	for k := range s.file {
		if k != "command" && s.c.IsSet(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// fromFile returns the file's value for name unless the command line set it.
// The file is looked at first: IsSet walks every flag, and each rollout
// reads some twenty settings, most of them in no file.
func (s settings) fromFile(name string) (any, bool) {
	v, ok := s.file[name]
	if !ok || s.c.IsSet(name) {
		return nil, false
	}
	return v, true
}

func (s settings) typeErr(name, want string, v any) error {
	return fmt.Errorf("config %s: key %q: want %s, got %v", s.path, name, want, v)
}

func (s settings) String(name string) (string, error) {
	v, ok := s.fromFile(name)
	if !ok {
		return s.c.String(name), nil
	}
	str, ok := v.(string)
	if !ok {
		return "", s.typeErr(name, "a string", v)
	}
	return str, nil
}

func (s settings) Int(name string) (int, error) {
	v, ok := s.fromFile(name)
	if !ok {
		return s.c.Int(name), nil
	}
	n, ok := v.(int64)
	if !ok {
		return 0, s.typeErr(name, "an integer", v)
	}
	return int(n), nil
}

func (s settings) Duration(name string) (time.Duration, error) {
	v, ok := s.fromFile(name)
	if !ok {
		return s.c.Duration(name), nil
	}
	str, ok := v.(string)
	if !ok {
		return 0, s.typeErr(name, `a duration string such as "30s"`, v)
	}
	d, err := time.ParseDuration(str)
	if err != nil {
		return 0, fmt.Errorf("config %s: key %q: %w", s.path, name, err)
	}
	return d, nil
}

func (s settings) Strings(name string) ([]string, error) {
	v, ok := s.fromFile(name)
	if !ok {
		if l, isList := listValues(s.c, name); isList {
			return l, nil
		}
		return s.c.StringSlice(name), nil
	}
	// A repeatable key given once may be a string, as systemd's
	// EnvironmentFile= takes one.
	if str, ok := v.(string); ok {
		return []string{str}, nil
	}
	if _, ok := v.([]any); !ok {
		return nil, s.typeErr(name, "a string or an array of strings", v)
	}
	return s.stringList(name, v)
}

// Command is the worker command: the arguments after --, else the file's
// "command".
func (s settings) Command() ([]string, error) {
	if args := s.c.Args().Slice(); len(args) > 0 {
		return args, nil
	}
	v, ok := s.file["command"]
	if !ok {
		return nil, nil
	}
	return s.stringList("command", v)
}

func (s settings) stringList(name string, v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, s.typeErr(name, "an array of strings", v)
	}
	out := make([]string, len(list))
	for i, e := range list {
		if out[i], ok = e.(string); !ok {
			return nil, s.typeErr(name, "an array of strings", v)
		}
	}
	return out, nil
}
