package units_test

import (
	"fmt"
	"strings"

	"github.com/batonsd/baton/units"
)

// Render writes a socket unit per listener and the service; here for
// Debian 12's systemd, with the lines that make `systemctl reload` a
// rollout that fails when it was aborted.
func ExampleRender() {
	files, err := units.Render(units.Options{
		Name:           "myapp",
		Listeners:      []units.Listener{{Name: "http", Address: "127.0.0.1:8080"}},
		Baton:          "/usr/bin/baton",
		RunArgs:        []string{"--workers", "4"},
		Command:        []string{"/usr/bin/myapp", "--port-from-fd"},
		SystemdVersion: 252,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range files {
		fmt.Println(f.Name)
		for line := range strings.Lines(f.Content) {
			if strings.HasPrefix(line, "Type=") || strings.HasPrefix(line, "Exec") || strings.HasPrefix(line, "ListenStream=") || strings.HasPrefix(line, "DynamicUser=") {
				fmt.Print("  ", line)
			}
		}
	}
	// Output:
	// myapp.socket
	//   ListenStream=127.0.0.1:8080
	// myapp.service
	//   Type=notify
	//   ExecStart=/usr/bin/baton run --workers 4 -- /usr/bin/myapp --port-from-fd
	//   ExecReload=/usr/bin/baton reload
	//   ExecStop=-/usr/bin/baton stop
	//   DynamicUser=yes
}

// CommandLine quotes and escapes an argv for ExecStart=: '%' and '$' are
// literal, spaces quoted.
func ExampleCommandLine() {
	fmt.Println(units.CommandLine([]string{"/usr/bin/myapp", "100%", "$HOME", "a b"}))
	// Output: /usr/bin/myapp 100%% $$HOME "a b"
}
