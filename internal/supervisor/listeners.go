package supervisor

import (
	"fmt"
	"os"
	"strings"

	"github.com/batonsd/baton/activation"
)

// storePrefix marks the FD-store entries baton makes (FDNAME=baton.NAME):
// at a restart they come back in LISTEN_FDS next to the sockets of .socket
// units, and only the prefix tells the two apart.
const storePrefix = "baton."

// openListeners takes the sockets systemd passed, then opens --listen
// addresses for names it did not pass:
//
//   - a socket from a .socket unit is used under its name;
//   - a socket baton itself stored (FDNAME=baton.NAME) is adopted as NAME
//     when a --listen still names it, and never re-bound; one that no
//     --listen claims any more is dropped from the store (FDSTOREREMOVE=1);
//   - every other --listen is opened, and later stored.
func (s *Supervisor) openListeners() error {
	fds, err := activation.Parse(s.world.getenv, os.Getpid())
	if err != nil {
		return err
	}
	var passed []*activation.Listener
	for _, p := range fds {
		if strings.HasPrefix(p.Name, outputPrefix) {
			// A worker's output pipe, stored by a previous baton.
			s.recoverOutput(p.FD, p.Name)
			continue
		}
		l, err := activation.NewListener(p.FD, p.Name)
		if err != nil {
			return err
		}
		passed = append(passed, l)
	}
	wanted := map[string]bool{}
	for _, spec := range s.cfg.Listen {
		wanted[spec.Name] = true
	}
	have := map[string]bool{}
	for _, l := range passed {
		name, stored := strings.CutPrefix(l.Name, storePrefix)
		switch {
		case stored && !wanted[name]:
			s.log.Info("FD store: dropping a socket no --listen claims any more", "name", name, "addr", l.Addr())
			s.removeStored(l.Name)
			l.Close()
			continue
		case stored:
			l.Name = name
			s.source[l] = sourceStore
			s.log.Info("listener back from the FD store, not re-bound", "name", name, "addr", l.Addr(), "fd", l.FD())
		default:
			s.source[l] = sourceSystemd
			s.log.Info("listener from systemd", "name", l.Name, "addr", l.Addr(), "fd", l.FD())
		}
		s.listeners = append(s.listeners, l)
		have[l.Name] = true
	}
	for _, spec := range s.cfg.Listen {
		if have[spec.Name] {
			continue
		}
		l, err := s.world.listen(spec)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("%w: %w", ErrNoListener, err)
		}
		have[spec.Name] = true
		s.listeners = append(s.listeners, l)
		s.source[l] = sourceListen
		s.log.Info("listening", "name", l.Name, "addr", l.Addr(), "fd", l.FD())
	}
	if len(s.listeners) == 0 {
		return fmt.Errorf("%w: systemd passed no sockets (LISTEN_FDS) and no --listen was given", ErrNoListener)
	}
	return nil
}

// Where a listener came from, as `baton status` shows it.
const (
	sourceSystemd = "systemd"  // socket activation (a .socket unit)
	sourceStore   = "fd store" // baton's own socket, kept by systemd across a restart
	sourceListen  = "listen"   // opened by this baton for --listen
)

// storeListeners puts the sockets baton opened itself into systemd's FD
// store, so a restarted baton gets them back in LISTEN_FDS and never has to
// re-bind: connections keep queueing in the socket's backlog while nothing
// runs. Sockets systemd passed are already held by systemd, by a .socket
// unit or by the store.
func (s *Supervisor) storeListeners() {
	if s.sd == nil {
		return
	}
	for _, l := range s.listeners {
		if s.source[l] != sourceListen {
			continue
		}
		// FDPOLL=0: a listening socket never hangs up; don't watch it.
		msg := fmt.Sprintf("FDSTORE=1\nFDNAME=%s%s\nFDPOLL=0", storePrefix, l.Name)
		if err := s.sd.SendFDs(msg, l.FD()); err != nil {
			s.log.Warn("FD store: listener not stored", "name", l.Name, "err", err)
		}
	}
}

func (s *Supervisor) closeListeners() {
	for _, l := range s.listeners {
		l.Close() // our copy only; systemd and workers keep theirs
	}
	s.listeners = nil
}
