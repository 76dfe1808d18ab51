package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/batonsd/baton/internal/control"
)

// health is `baton status --check`: nil when the service serves at full
// strength (every slot has a ready worker, every listener listens), else
// why not, on one line. A rollout in progress or a failed last one does not
// count against it: the slots still serve.
func health(st *control.Status) error {
	switch st.State {
	case "starting":
		return fmt.Errorf("starting: %d/%d ready", st.Ready, st.Slots)
	case "stopping":
		return errors.New("stopping")
	}
	var why []string
	for _, l := range st.Listeners {
		if !l.Listening {
			why = append(why, fmt.Sprintf("listener %s (%s) not listening: %s", printable(l.Name), printable(l.Address), printable(l.Error)))
		}
	}
	for _, w := range st.Workers {
		if w.State == "ready" {
			continue
		}
		s := fmt.Sprintf("slot %d %s", w.Slot, w.State)
		if w.Error != "" {
			s += " (" + printable(w.Error) + ")"
		}
		why = append(why, s)
	}
	if st.Ready < st.Slots || len(why) > 0 {
		return fmt.Errorf("%d/%d ready, generation %d: %s", st.Ready, st.Slots, st.Generation, strings.Join(why, "; "))
	}
	return nil
}
