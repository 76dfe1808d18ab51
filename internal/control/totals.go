package control

import (
	"maps"
	"slices"
)

// Totals count what happened since the service started: kept across
// in-place upgrades (`baton upgrade`), not across a restart of the service.
// They are the counters of the metrics endpoint.
type Totals struct {
	// Rollouts by kind (reload, scale), then result (ok, failed).
	Rollouts map[string]map[string]uint64 `json:"rollouts"`
	// RolloutSeconds is how long the rollouts took, ok or failed.
	RolloutSeconds Histogram `json:"rollout_seconds"`
	// Crashes are serving workers that exited when nobody asked them to,
	// by cause (Cause*): they count against --crash-limit and are
	// restarted. Restarts counts those restarts.
	Crashes  map[string]uint64 `json:"crashes"`
	Restarts uint64            `json:"restarts"`
	// NewWorkerFailures are a rollout's new workers that failed, by cause:
	// each aborted its rollout and counted no crash.
	NewWorkerFailures map[string]uint64 `json:"new_worker_failures"`
	// DrainKills are draining workers killed before they were done: at
	// their --drain-timeout, or to free the fds new workers need.
	DrainKills uint64 `json:"drain_kills"`
	// Recycles are workers replaced gracefully (successor first) without a
	// deploy, by reason (Recycle*).
	Recycles map[string]uint64 `json:"recycles"`
}

// Why a worker was recycled.
const (
	RecycleMemory = "memory" // its tree stayed above --recycle-memory
	RecycleAge    = "age"    // it was older than --recycle-after
	RecycleManual = "manual" // `baton recycle`
	// RecycleGeneration: its worker was of another generation than its
	// slot (a failed rollout's, whose rollback could not bring the
	// previous generation's back).
	RecycleGeneration = "generation"
)

// Why a worker exited unasked.
const (
	CauseExit     = "exit"      // it exited by itself
	CauseSignal   = "signal"    // a signal baton did not send killed it
	CauseWatchdog = "watchdog"  // baton killed it: it missed its watchdog
	CauseNotReady = "not_ready" // baton killed it: not ready within --ready-timeout
)

// RolloutBuckets are the upper bounds, in seconds, of
// Totals.RolloutSeconds's buckets: from a few fast workers to a rolling
// restart of many slow ones.
var RolloutBuckets = []float64{0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900}

// Histogram counts observations by the bucket bounds they fall under
// (Counts[i] holds those at most Bounds[i] and above the bound before it;
// the ones above the last bound are only in Count).
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Sum    float64   `json:"sum"`
	Count  uint64    `json:"count"`
}

// Observe adds one observation v.
func (h *Histogram) Observe(v float64) {
	if len(h.Bounds) == 0 {
		h.Bounds = RolloutBuckets
	}
	if len(h.Counts) != len(h.Bounds) {
		h.Counts = make([]uint64, len(h.Bounds))
	}
	for i, b := range h.Bounds {
		if v <= b {
			h.Counts[i]++
			break
		}
	}
	h.Sum += v
	h.Count++
}

// Clone returns a copy of t that shares nothing with it.
func (t Totals) Clone() Totals {
	c := t
	c.Rollouts = nil
	for kind, m := range t.Rollouts {
		if c.Rollouts == nil {
			c.Rollouts = map[string]map[string]uint64{}
		}
		c.Rollouts[kind] = maps.Clone(m)
	}
	c.RolloutSeconds.Counts = slices.Clone(t.RolloutSeconds.Counts)
	c.Crashes = maps.Clone(t.Crashes)
	c.NewWorkerFailures = maps.Clone(t.NewWorkerFailures)
	c.Recycles = maps.Clone(t.Recycles)
	return c
}

// CountRollout counts a rollout that ended after seconds.
func (t *Totals) CountRollout(kind, result string, seconds float64) {
	if t.Rollouts == nil {
		t.Rollouts = map[string]map[string]uint64{}
	}
	if t.Rollouts[kind] == nil {
		t.Rollouts[kind] = map[string]uint64{}
	}
	t.Rollouts[kind][result]++
	t.RolloutSeconds.Observe(seconds)
}

// CountCrash counts a serving worker's unasked exit.
func (t *Totals) CountCrash(cause string) { count(&t.Crashes, cause) }

// CountRecycle counts a worker recycled for reason.
func (t *Totals) CountRecycle(reason string) { count(&t.Recycles, reason) }

// CountNewWorkerFailure counts a rollout's new worker that failed.
func (t *Totals) CountNewWorkerFailure(cause string) { count(&t.NewWorkerFailures, cause) }

func count(m *map[string]uint64, key string) {
	if *m == nil {
		*m = map[string]uint64{}
	}
	(*m)[key]++
}
