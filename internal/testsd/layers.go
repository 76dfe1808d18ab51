package testsd

import "testing"

// baton's tests come in four layers, and a test file's name says which:
//
//   - unit: name_test.go, a package's own code (pure functions, a fake
//     handler, a child that is the test binary re-executed);
//   - fake world: name_fake_test.go in internal/supervisor, the whole
//     supervisor in a fake world, or the rollout with a fake host, where
//     the test moves time and ends processes;
//   - process: name_process_test.go, and every test of faults/ and
//     compat/, real baton and worker processes under the stand-in systemd,
//     in real time;
//   - container: e2e/, baton installed from its .deb under a real systemd
//     in a container.
//
// go test -short runs the first two: each test of the other two starts
// with Process(t) or Container(t) (internal/hygiene checks that none
// forgets).

// Process marks t as a test of the process layer: go test -short skips it.
func Process(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("process layer (real baton and worker processes): skipped with -short")
	}
}

// Container marks t as a test of the container layer: go test -short skips
// it.
func Container(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("container layer (a real systemd in a container): skipped with -short")
	}
}
