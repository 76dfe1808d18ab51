package notify

import (
	"fmt"
	"strconv"
	"time"
)

// WatchdogInterval reads WATCHDOG_USEC and WATCHDOG_PID through getenv for
// the process pid, as sd_watchdog_enabled(3) does: 0 means the watchdog is
// off (unset, infinite, or meant for another pid). The process should send WATCHDOG=1
// at half the interval.
func WatchdogInterval(getenv func(string) string, pid int) (time.Duration, error) {
	usecVal := getenv("WATCHDOG_USEC")
	if usecVal == "" {
		return 0, nil
	}
	interval, infinite, err := ParseUsec(usecVal)
	if err != nil || (interval == 0 && !infinite) {
		return 0, fmt.Errorf("WATCHDOG_USEC=%q: not a positive count of microseconds", usecVal)
	}
	if pidVal := getenv("WATCHDOG_PID"); pidVal != "" {
		p, err := strconv.Atoi(pidVal)
		if err != nil || p <= 0 {
			return 0, fmt.Errorf("WATCHDOG_PID=%q: not a pid", pidVal)
		}
		if p != pid {
			return 0, nil
		}
	}
	return interval, nil // 0 when infinite: no watchdog
}
