// Package units renders the systemd unit files of a service run by baton:
// one NAME.socket per listener name (Accept=no, FileDescriptorName=) and a
// NAME.service whose type and reload path depend on the systemd version:
//
//   - systemd >= 253: Type=notify-reload with ReloadSignal=SIGUSR1 (it
//     survives baton's re-exec, SIGHUP does not); `systemctl reload` sends it
//     and waits for baton's READY=1, and ExecReload=baton reload
//     --wait-signal, which systemd runs after the signal, fails the reload
//     when the rollout was aborted (READY=1 has no failure form);
//   - systemd 252 (Debian 12): Type=notify-reload does not exist (the unit
//     would silently run as Type=simple), so Type=notify with
//     ExecReload=baton reload, which blocks until the rollout ends: a
//     non-blocking ExecReload= ends the reload job before the rollout has
//     even begun.
//
// Every value is validated (no newlines or control characters) and escaped
// for unit-file syntax: '%' specifiers, '$' expansion and quoting in
// command lines. It uses only the standard library.
package units

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Listener is one listening socket of the service.
type Listener struct {
	Name    string // FileDescriptorName=, what baton and workers see in LISTEN_FDNAMES
	Address string // ListenStream= value: "127.0.0.1:8080", "[::]:443", "/run/app.sock"
}

// Options describe the service.
type Options struct {
	Name        string // the unit name without suffix: "myapp"
	Description string
	Listeners   []Listener
	Baton       string   // path of the baton binary
	RunArgs     []string // flags of `baton run`, before "--"
	Control     string   // baton's --control, if not the default under RuntimeDirectory=
	Command     []string // the worker command
	// User is User= and Group= of the service; empty runs it as a dynamic
	// user (DynamicUser=), or as root with NoSandbox.
	User string
	// NoSandbox leaves the sandbox out (see writeSandbox).
	NoSandbox bool
	// Writable are more ReadWritePaths= for the sandbox.
	Writable []string
	// AddressFamilies are more RestrictAddressFamilies= (AF_NETLINK, ...).
	AddressFamilies []string
	// SystemdVersion picks the service type; see the package comment.
	SystemdVersion int
	// DrainTimeout is baton's --drain-timeout: TimeoutStopSec= is set above
	// it, so systemd never kills draining workers before baton does.
	DrainTimeout time.Duration
	// LameDuck is baton's --lame-duck, which a stop spends before the drain.
	LameDuck time.Duration
	// Watchdog is WatchdogSec= for baton itself; 0 leaves it off.
	Watchdog time.Duration
}

// File is one rendered unit file.
type File struct {
	Name    string // "myapp.service"
	Content string
}

// NotifyReloadVersion is the first systemd version with Type=notify-reload.
const NotifyReloadVersion = 253

// fdStorePreserveVersion is the first with FileDescriptorStorePreserve=.
const fdStorePreserveVersion = 254

var unitName = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+$`)

var addressFamily = regexp.MustCompile(`^AF_[A-Z0-9]+$`)

// Render returns the socket units and the service unit.
func Render(o Options) ([]File, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	var files []File
	var sockets []string
	for i, l := range o.Listeners {
		name := o.Name + ".socket"
		if i > 0 {
			name = o.Name + "-" + l.Name + ".socket"
		}
		sockets = append(sockets, name)
		var b strings.Builder
		fmt.Fprintf(&b, "[Unit]\nDescription=%s socket %s\n\n", escape(o.description()), escape(l.Name))
		fmt.Fprintf(&b, "[Socket]\nListenStream=%s\nFileDescriptorName=%s\n", escape(l.Address), escape(l.Name))
		b.WriteString("# One socket shared by every worker: queued connections survive any\n# worker, and baton itself, going away.\nAccept=no\n")
		fmt.Fprintf(&b, "Service=%s.service\n\n[Install]\nWantedBy=sockets.target\n", o.Name)
		files = append(files, File{Name: name, Content: b.String()})
	}

	var b strings.Builder
	fmt.Fprintf(&b, "[Unit]\nDescription=%s\n", escape(o.description()))
	if len(sockets) > 0 {
		fmt.Fprintf(&b, "Requires=%s\nAfter=%s network.target\n", strings.Join(sockets, " "), strings.Join(sockets, " "))
	} else {
		b.WriteString("After=network.target\n")
	}
	b.WriteString("\n[Service]\n")
	exec := append([]string{o.Baton, "run"}, o.RunArgs...)
	exec = append(append(exec, "--"), o.Command...)
	if o.SystemdVersion >= NotifyReloadVersion {
		b.WriteString("# systemctl reload sends SIGUSR1; baton answers RELOADING=1, then READY=1\n# when the rollout has ended, whatever its result. SIGUSR1, not SIGHUP: a\n# reload that meets an upgrade's re-exec must not kill the service, and\n# only SIGUSR1 and SIGUSR2 stay blocked through a Go program's start.\nType=notify-reload\nReloadSignal=SIGUSR1\n")
	} else {
		b.WriteString("# systemd < 253 has no notify-reload service type: ExecReload= must block\n# until the rollout has ended, which `baton reload` does (exit non-zero if aborted).\nType=notify\n")
	}
	b.WriteString("NotifyAccess=main\n")
	fmt.Fprintf(&b, "ExecStart=%s\n", CommandLine(exec))
	reload := []string{o.Baton, "reload"}
	if o.SystemdVersion >= NotifyReloadVersion {
		// systemd runs ExecReload= right after the signal; its exit status
		// is the reload's result, the only way to make `systemctl reload`
		// fail (READY=1 has no failure form).
		b.WriteString("# `systemctl reload` fails when the rollout was aborted:\n")
		reload = append(reload, "--wait-signal")
	}
	if o.Control != "" {
		reload = append(reload, "--control", o.Control)
	}
	fmt.Fprintf(&b, "ExecReload=%s\n", CommandLine(reload))
	stop := []string{o.Baton, "stop"}
	if o.Control != "" {
		stop = append(stop, "--control", o.Control)
	}
	// KillMode=control-group signals every process of the unit at once,
	// the workers with baton: their drain would begin with baton's, not
	// after the lame duck, with systemd's SIGTERM rather than their own
	// stop signal. systemd runs ExecStop= first and signals only what is
	// left once it returns; after a crash of baton it runs no ExecStop=,
	// and control-group's SIGTERM is what drains the orphaned workers.
	// The "-": a stop must not fail because ExecStop= could not run (the
	// package was removed under the running service); KillMode= then
	// stops it as before.
	b.WriteString("# systemctl stop asks baton to stop and waits until it has exited: the\n# workers serve through the lame duck and drain on baton's word. Only\n# what is left then gets KillMode='s signal (after a crash of baton, the\n# workers: SIGTERM, so they drain).\n")
	fmt.Fprintf(&b, "ExecStop=-%s\n", CommandLine(stop))
	fmt.Fprintf(&b, "# The control socket lives in $RUNTIME_DIRECTORY.\nRuntimeDirectory=%s\n", escape(o.Name))
	b.WriteString("# Sockets baton opens itself survive its restarts here, and so do the\n# workers' output pipes (two each), so that a worker draining while baton\n# restarts never writes to a pipe without a reader.\nFileDescriptorStoreMax=4096\n")
	if o.SystemdVersion >= fdStorePreserveVersion {
		b.WriteString("FileDescriptorStorePreserve=yes\n")
	}
	if o.Watchdog > 0 {
		fmt.Fprintf(&b, "WatchdogSec=%s\n", seconds(o.Watchdog))
	}
	b.WriteString("Restart=always\nRestartSec=1\nKillMode=control-group\n")
	fmt.Fprintf(&b, "TimeoutStopSec=%s\n", seconds(o.LameDuck+o.DrainTimeout+15*time.Second))
	if o.User != "" {
		fmt.Fprintf(&b, "User=%s\nGroup=%s\n", escape(o.User), escape(o.User))
	}
	o.writeSandbox(&b)
	b.WriteString("\n[Install]\nWantedBy=multi-user.target\n")
	files = append(files, File{Name: o.Name + ".service", Content: b.String()})
	return files, nil
}

func (o Options) description() string {
	if o.Description != "" {
		return o.Description
	}
	return o.Name + " (supervised by baton)"
}

func (o Options) check() error {
	var errs []error
	if !unitName.MatchString(o.Name) || strings.Contains(o.Name, "@") {
		errs = append(errs, fmt.Errorf("--name %q: want letters, digits and :_.\\- only", o.Name))
	}
	if !strings.HasPrefix(o.Baton, "/") {
		errs = append(errs, fmt.Errorf("baton binary %q: want an absolute path", o.Baton))
	}
	if len(o.Command) == 0 {
		errs = append(errs, errors.New("no worker command: baton units --name NAME [flags] -- CMD [ARG...]"))
	}
	if o.SystemdVersion <= 0 {
		errs = append(errs, fmt.Errorf("systemd version %d: want the running systemd's, or --systemd-version N", o.SystemdVersion))
	}
	seen := map[string]bool{}
	for _, l := range o.Listeners {
		if seen[l.Name] {
			errs = append(errs, fmt.Errorf("--listen: the name %q is given twice", l.Name))
		}
		seen[l.Name] = true
		if !unitName.MatchString(l.Name) {
			errs = append(errs, fmt.Errorf("--listen %s=%s: a socket unit name needs letters, digits and :_.\\- only", l.Name, l.Address))
		}
		if err := checkValue("--listen", l.Address); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range []struct{ what, value string }{{"--description", o.Description}, {"--user", o.User}, {"baton binary", o.Baton}, {"--control", o.Control}} {
		if err := checkValue(v.what, v.value); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range o.Writable {
		if !strings.HasPrefix(p, "/") {
			errs = append(errs, fmt.Errorf("--writable %q: want an absolute path", p))
		}
		if err := checkValue("--writable", p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, af := range o.AddressFamilies {
		if !addressFamily.MatchString(af) {
			errs = append(errs, fmt.Errorf("--address-family %q: want a name such as AF_NETLINK", af))
		}
	}
	for _, a := range append(append([]string{}, o.RunArgs...), o.Command...) {
		if err := checkValue("command", a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkValue rejects what no unit-file value may hold.
func checkValue(what, v string) error {
	for _, c := range v {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("%s %q: control characters such as newlines cannot go into a unit file", what, v)
		}
	}
	return nil
}

// escape makes v literal in a unit-file value: '%' starts a specifier.
func escape(v string) string { return strings.ReplaceAll(v, "%", "%%") }

func seconds(d time.Duration) string {
	return fmt.Sprintf("%ds", int((d+time.Second-1)/time.Second))
}

// CommandLine renders argv for ExecStart= so that systemd passes exactly
// these arguments: each word that is not plain is double-quoted with C-style
// escapes, '%' is doubled (specifiers) and '$' doubled (variable
// expansion), and a lone ";" (a command separator) is escaped.
func CommandLine(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = quoteWord(a)
	}
	return strings.Join(words, " ")
}

func quoteWord(a string) string {
	a = strings.NewReplacer("%", "%%", "$", "$$").Replace(a)
	if a == ";" {
		return `\;`
	}
	if a != "" && strings.IndexFunc(a, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_@%+=:,./-$", r))
	}) < 0 {
		return a
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range a {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
