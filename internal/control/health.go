package control

import (
	"errors"
	"fmt"
	"strings"
)

// Health is `baton status --check` and the metrics listener's /healthz:
// nil when the service serves at full strength (every slot has a ready
// worker, every listener listens), else why not, on one line. A rollout
// in progress or a failed last one does not count against it: the slots
// still serve.
func (st *Status) Health() error {
	switch st.State {
	case "starting":
		return fmt.Errorf("starting: %d/%d ready", st.Ready, st.Slots)
	case "stopping":
		if st.LameDuckSeconds > 0 {
			return fmt.Errorf("stopping: lame duck, every worker serves %.1fs more, then drains", st.LameDuckSeconds)
		}
		return errors.New("stopping")
	}
	var why []string
	for _, l := range st.Listeners {
		if !l.Listening {
			why = append(why, fmt.Sprintf("listener %s (%s) not listening: %s", Printable(l.Name), Printable(l.Address), Printable(l.Error)))
		}
	}
	for _, w := range st.Workers {
		if w.State == "ready" {
			continue
		}
		s := fmt.Sprintf("slot %d %s", w.Slot, w.State)
		if w.Error != "" {
			s += " (" + Printable(w.Error) + ")"
		}
		why = append(why, s)
	}
	if st.Ready < st.Slots || len(why) > 0 {
		return fmt.Errorf("%d/%d ready, generation %d: %s", st.Ready, st.Slots, st.Generation, strings.Join(why, "; "))
	}
	return nil
}

// Healthy is the one line that says the service is healthy.
func (st *Status) Healthy() string {
	return fmt.Sprintf("ok: %d/%d ready, generation %d", st.Ready, st.Slots, st.Generation)
}
