package supervisor

import (
	"fmt"
	"net"
	"os"

	"github.com/batonsd/baton/internal/metrics"
)

// serveMetrics starts the metrics endpoint (--metrics): on the listener a
// previous image handed over, so that a scrape during `baton upgrade`
// waits in its backlog instead of being refused (one being answered at the
// exec is cut), else on a new one. stop closes it when Run returns.
func (s *Supervisor) serveMetrics(handoff *handoffState) (stop func(), err error) {
	none := func() {}
	var ln net.Listener
	switch {
	case handoff != nil && handoff.MetricsFD >= 0:
		f := os.NewFile(uintptr(handoff.MetricsFD), "metrics")
		ln, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return none, fmt.Errorf("adopt the metrics listener: %w", err)
		}
	case s.cfg.Metrics != "":
		if ln, err = net.Listen("tcp", s.cfg.Metrics); err != nil {
			return none, fmt.Errorf("--metrics %s: %w", s.cfg.Metrics, err)
		}
		s.log.Info("metrics endpoint listening", "addr", ln.Addr().String(), "paths", "/metrics /healthz")
	default:
		return none, nil
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return none, fmt.Errorf("metrics listener: %T, want TCP", ln)
	}
	s.metricsLn = tl
	srv := metrics.Serve(tl, s.Status)
	return func() { srv.Close() }, nil
}
