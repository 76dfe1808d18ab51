package activation_test

import (
	"fmt"

	"github.com/batonsd/baton/activation"
)

// A worker reads the sockets systemd (or baton) passed it: Parse is the
// pure form of FromEnv, given the environment and the process's pid.
func ExampleParse() {
	env := map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "http:admin"}
	passed, err := activation.Parse(func(k string) string { return env[k] }, 4242)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, p := range passed {
		fmt.Println(p.FD, p.Name)
	}
	// Output:
	// 3 http
	// 4 admin
}

// A supervisor hands its sockets to a child: ChildEnv drops its own
// LISTEN_* and names the child's fds; the child's LISTEN_PID is set by the
// exec shim, which alone knows the child's pid.
func ExampleChildEnv() {
	env := activation.ChildEnv([]string{"PATH=/usr/bin", "LISTEN_FDS=1", "LISTEN_PID=1"}, []string{"http"})
	fmt.Println(env)
	// Output:
	// [PATH=/usr/bin LISTEN_FDS=1 LISTEN_FDNAMES=http]
}

// --listen values: an optional name, then an address.
func ExampleParseSpec() {
	for _, s := range []string{"127.0.0.1:8080", "admin=unix:/run/myapp/admin.sock"} {
		spec, err := activation.ParseSpec(s)
		fmt.Println(spec.Name, spec.Address, err)
	}
	// Output:
	// 127.0.0.1_8080 127.0.0.1:8080 <nil>
	// admin /run/myapp/admin.sock <nil>
}
