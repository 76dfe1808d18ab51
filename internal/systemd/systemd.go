// Package systemd is the only place in baton that talks to systemd's
// manager over D-Bus (go-systemd/dbus over godbus): the running version,
// enabling units and daemon-reload, and a unit's state for `baton status`.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Conn is a connection to systemd's manager.
type Conn struct{ c *sddbus.Conn }

// Connect reaches systemd: as root through its private socket, which needs
// no dbus-daemon, else through the system bus.
func Connect(ctx context.Context) (*Conn, error) {
	var c *sddbus.Conn
	var err error
	if os.Geteuid() == 0 {
		c, err = sddbus.NewSystemdConnectionContext(ctx)
	} else {
		c, err = sddbus.NewSystemConnectionContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over D-Bus: %w", err)
	}
	return &Conn{c: c}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.c.Close() }

// Version returns the major version of the running systemd ("252").
func (c *Conn) Version(ctx context.Context) (int, error) {
	v, err := c.c.GetManagerProperty("Version")
	if err != nil {
		return 0, fmt.Errorf("systemd's version over D-Bus: %w", err)
	}
	return ParseVersion(v)
}

// ParseVersion reads the major version from systemd's Version property, as
// D-Bus renders it: "\"252.22-1~deb12u1\"" or "254".
func ParseVersion(v string) (int, error) {
	s := strings.Trim(v, "\"")
	end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		s = s[:end]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("systemd version %q: no leading number", v)
	}
	return n, nil
}

// Install enables the freshly written units (by path), then daemon-reloads
// so that systemd reads them, in systemctl enable's order. The other order
// leaves them needing a reload on systemd 257 (NeedDaemonReload=yes, and a
// "changed on disk" warning from every systemctl command naming them):
// enabling touches what systemd compares against the files it loaded.
func (c *Conn) Install(ctx context.Context, paths []string) error {
	var errs []error
	if _, _, err := c.c.EnableUnitFilesContext(ctx, paths, false, true); err != nil {
		errs = append(errs, fmt.Errorf("enable %s: %w", strings.Join(paths, ", "), err))
	}
	// Even when enabling failed: the files are written, and systemd must
	// read them (a start by hand still works).
	if err := c.c.ReloadContext(ctx); err != nil {
		errs = append(errs, fmt.Errorf("daemon-reload: %w", err))
	}
	return errors.Join(errs...)
}

// Unit is systemd's view of a service.
type Unit struct {
	Name        string
	ActiveState string // active, reloading, failed...
	SubState    string
	MainPID     uint32
	StatusText  string // the service's last STATUS=
	NRestarts   uint32
}

// Unit returns systemd's view of a service unit.
func (c *Conn) Unit(ctx context.Context, name string) (Unit, error) {
	u := Unit{Name: name}
	props, err := c.c.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return u, fmt.Errorf("unit %s: %w", name, err)
	}
	u.ActiveState, _ = props["ActiveState"].(string)
	u.SubState, _ = props["SubState"].(string)
	svc, err := c.c.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return u, fmt.Errorf("unit %s: %w", name, err)
	}
	u.MainPID, _ = svc["MainPID"].(uint32)
	u.StatusText, _ = svc["StatusText"].(string)
	u.NRestarts, _ = svc["NRestarts"].(uint32)
	return u, nil
}
