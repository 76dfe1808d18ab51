//go:build !race

package supervisor

// raceEnabled: the test binary was built with -race.
const raceEnabled = false
