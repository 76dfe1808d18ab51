package notify

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Infinity is USEC_INFINITY, systemd's "no limit" for microsecond values
// (2^64-1); ParseUsec reads it, and anything too large for a
// time.Duration, as 0, "none".
const Infinity = math.MaxUint64

// maxUsec is the largest count of microseconds a time.Duration holds.
const maxUsec = uint64(math.MaxInt64 / int64(time.Microsecond))

// ParseUsec reads a count of microseconds as systemd's protocols send it
// (WATCHDOG_USEC=, EXTEND_TIMEOUT_USEC=, MONOTONIC_USEC=): a decimal
// uint64. Values beyond what a time.Duration holds (about 292 years),
// USEC_INFINITY among them, mean "no limit" and come back as 0 with
// infinite set; multiplying them into a Duration would wrap around to a
// tiny or negative interval (WATCHDOG_USEC=18446744073710552 became about
// 1 ms and a worker was killed in a loop).
func ParseUsec(v string) (d time.Duration, infinite bool, err error) {
	usec, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%q: not a count of microseconds", v)
	}
	if usec > maxUsec {
		return 0, true, nil
	}
	return time.Duration(usec) * time.Microsecond, false, nil
}
