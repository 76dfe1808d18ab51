package supervisor

import (
	"fmt"

	"github.com/batonsd/baton/activation"
)

// openListeners takes the sockets systemd passed (socket activation, or the
// FD store giving back what baton stored), then opens --listen addresses for
// names systemd did not pass. Opened sockets are never re-bound while
// systemd holds one of the same name.
func (s *Supervisor) openListeners() error {
	passed, err := activation.FromEnv()
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, l := range passed {
		s.listeners = append(s.listeners, l)
		have[l.Name] = true
		s.log.Info("listener from systemd", "name", l.Name, "addr", l.Addr(), "fd", l.FD())
	}
	for _, spec := range s.cfg.Listen {
		if have[spec.Name] {
			s.log.Info("listener kept from systemd, not re-bound", "name", spec.Name)
			continue
		}
		l, err := activation.Listen(spec)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("%w: %w", ErrNoListener, err)
		}
		have[spec.Name] = true
		s.listeners = append(s.listeners, l)
		s.opened[l] = true
		s.log.Info("listening", "name", l.Name, "addr", l.Addr(), "fd", l.FD())
	}
	if len(s.listeners) == 0 {
		return fmt.Errorf("%w: systemd passed no sockets (LISTEN_FDS) and no --listen was given", ErrNoListener)
	}
	return nil
}

// storeListeners puts the sockets baton opened itself into systemd's FD
// store, so a restarted baton gets them back in LISTEN_FDS and never has to
// re-bind (connections keep queueing in the meantime). Sockets systemd
// passed are already held by systemd: by the .socket unit, or by the store.
func (s *Supervisor) storeListeners() {
	if s.sd == nil {
		return
	}
	for _, l := range s.listeners {
		if !s.opened[l] {
			continue
		}
		// FDPOLL=0: a listening socket never hangs up; don't watch it.
		msg := fmt.Sprintf("FDSTORE=1\nFDNAME=%s\nFDPOLL=0", l.Name)
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
