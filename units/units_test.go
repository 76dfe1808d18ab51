package units

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func opts(version int) Options {
	return Options{
		Name:           "myapp",
		Listeners:      []Listener{{"http", "127.0.0.1:8080"}, {"admin", "/run/myapp/admin.sock"}},
		Baton:          "/usr/bin/baton",
		RunArgs:        []string{"--workers", "4"},
		Command:        []string{"/usr/bin/myapp", "--port-from-fd"},
		SystemdVersion: version,
		DrainTimeout:   30 * time.Second,
		Watchdog:       20 * time.Second,
	}
}

func render(t *testing.T, o Options) map[string]string {
	t.Helper()
	fs, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, f := range fs {
		m[f.Name] = f.Content
	}
	return m
}

func TestRenderByVersion(t *testing.T) {
	for _, tt := range []struct {
		version      int
		want, absent []string
	}{
		{252, []string{"Type=notify\n", "ExecReload=/usr/bin/baton reload\n"}, []string{"Type=notify-reload", "FileDescriptorStorePreserve"}},
		{253, []string{"Type=notify-reload\n", "ReloadSignal=SIGUSR1\n", "ExecReload=/usr/bin/baton reload --wait-signal\n"}, []string{"FileDescriptorStorePreserve"}},
		{254, []string{"Type=notify-reload\n", "ReloadSignal=SIGUSR1\n", "FileDescriptorStorePreserve=yes\n", "ExecReload=/usr/bin/baton reload --wait-signal\n"}, []string{"Type=notify\n"}},
	} {
		m := render(t, opts(tt.version))
		svc := m["myapp.service"]
		for _, w := range append(tt.want,
			"NotifyAccess=main\n", "ExecStart=/usr/bin/baton run --workers 4 -- /usr/bin/myapp --port-from-fd\n",
			"ExecStop=-/usr/bin/baton stop\n", "RuntimeDirectory=myapp\n", "FileDescriptorStoreMax=4096\n", "WatchdogSec=20s\n", "Restart=always\n",
			"KillMode=control-group\n", "TimeoutStopSec=45s\n", "Requires=myapp.socket myapp-admin.socket\n") {
			if !strings.Contains(svc, w) {
				t.Errorf("systemd %d: service lacks %q:\n%s", tt.version, w, svc)
			}
		}
		for _, a := range tt.absent {
			if strings.Contains(svc, a) {
				t.Errorf("systemd %d: service has %q", tt.version, a)
			}
		}
		for name, addr := range map[string]string{"myapp.socket": "ListenStream=127.0.0.1:8080\nFileDescriptorName=http\n", "myapp-admin.socket": "ListenStream=/run/myapp/admin.sock\nFileDescriptorName=admin\n"} {
			if !strings.Contains(m[name], addr) || !strings.Contains(m[name], "Accept=no\n") || !strings.Contains(m[name], "Service=myapp.service\n") {
				t.Errorf("%s:\n%s", name, m[name])
			}
		}
	}
}

func TestRenderRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"newline in an argument", func(o *Options) { o.Command = append(o.Command, "a\nExecStartPre=/bin/rm") }, "control characters"},
		{"newline in the user", func(o *Options) { o.User = "app\n[Service]" }, "--user"},
		{"bad name", func(o *Options) { o.Name = "my app" }, `--name "my app"`},
		{"template name", func(o *Options) { o.Name = "my@" }, "--name"},
		{"relative baton", func(o *Options) { o.Baton = "baton" }, "absolute path"},
		{"no command", func(o *Options) { o.Command = nil }, "no worker command"},
		{"no version", func(o *Options) { o.SystemdVersion = 0 }, "--systemd-version"},
		{"duplicate listener", func(o *Options) { o.Listeners = append(o.Listeners, Listener{"http", "[::]:80"}) }, `"http" is given twice`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := opts(252)
			tt.mod(&o)
			if _, err := Render(o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Render error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSpecifiersAndVariablesAreLiteral(t *testing.T) {
	o := opts(252)
	o.Description = "100% app"
	o.RunArgs = []string{"--check", "test -f $HOME/%i"}
	svc := render(t, o)["myapp.service"]
	for _, w := range []string{"Description=100%% app\n", `--check "test -f $$HOME/%%i"`} {
		if !strings.Contains(svc, w) {
			t.Errorf("service lacks %q:\n%s", w, svc)
		}
	}
}

// unquote splits a command line as systemd does for ExecStart= (quotes,
// C escapes, "\;"), then undoes "%%" and "$$": a reference for the tests.
func unquote(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quote := false, rune(0)
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case r == '\\':
			if i+1 >= len(rs) {
				return nil, errors.New("trailing backslash")
			}
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	for i, w := range words {
		words[i] = strings.NewReplacer("%%", "%", "$$", "$").Replace(w)
	}
	return words, nil
}

func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{"plain", "a b", `q"x\y`, ";", "100%", "$HOME", "", "'", "é ü"} {
		f.Add(s, "x")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		argv := []string{"/usr/bin/baton", a, b}
		if checkValue("", a) != nil || checkValue("", b) != nil {
			return // Render refuses these
		}
		line := CommandLine(argv)
		if strings.ContainsAny(line, "\n\r") {
			t.Fatalf("newline in %q", line)
		}
		got, err := unquote(line)
		if err != nil {
			t.Fatalf("CommandLine(%q) = %q: %v", argv, line, err)
		}
		if diff := cmp.Diff(argv, got); diff != "" {
			t.Fatalf("CommandLine(%q) = %q, read back differently (-want +got):\n%s", argv, line, diff)
		}
	})
}

// TestSystemdAnalyzeVerify: what Render writes passes systemd's own check,
// for both service types.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is needed (Debian package systemd; scripts/test installs it)")
	}
	// The installed systemd judges the units made for its own version (the
	// e2e tests verify the others inside containers of those versions).
	out, err := exec.Command(sa, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if _, err := fmt.Sscanf(string(out), "systemd %d", &v); err != nil {
		t.Fatalf("systemd-analyze --version: %q", out)
	}
	{
		dir := t.TempDir()
		o := opts(v)
		o.Baton, o.Command = "/bin/true", []string{"/bin/sleep", "a b", "100%"}
		o.User = "daemon"
		var paths []string
		for name, content := range render(t, o) {
			p := filepath.Join(dir, name)
			os.WriteFile(p, []byte(content), 0o644)
			paths = append(paths, p)
		}
		out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify (systemd %d units): %v\n%s", v, err, out)
		}
	}
}

// TestSandboxScore: systemd-analyze security rates the default units 2.5
// or lower (OK), and each flag does what it says; every variant verifies.
func TestSandboxScore(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze is needed (Debian package systemd; scripts/test installs it)")
	}
	out, _ := exec.Command(sa, "--version").Output()
	var v int
	fmt.Sscanf(string(out), "systemd %d", &v)
	score := func(t *testing.T, o Options) float64 {
		t.Helper()
		dir := t.TempDir()
		var service string
		var paths []string
		for name, content := range render(t, o) {
			p := filepath.Join(dir, name)
			os.WriteFile(p, []byte(content), 0o644)
			paths = append(paths, p)
			if strings.HasSuffix(name, ".service") {
				service = p
			}
		}
		if out, err := exec.Command(sa, append([]string{"verify"}, paths...)...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		out, err := exec.Command(sa, "security", "--offline=yes", service).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze security: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no overall exposure in:\n%s", out)
		}
		s, _ := strconv.ParseFloat(string(m[1]), 64)
		return s
	}
	o := opts(v)
	o.Baton, o.Command = "/bin/true", []string{"/bin/sleep", "100"}
	if s := score(t, o); s > 2.5 {
		t.Errorf("default units: exposure %.1f, want 2.5 or lower", s)
	} else {
		t.Logf("systemd %d, default units: exposure %.1f", v, s)
	}
	withUser := o
	withUser.User, withUser.Writable, withUser.AddressFamilies = "daemon", []string{"/var/log/myapp"}, []string{"AF_NETLINK"}
	if s := score(t, withUser); s > 2.5 {
		t.Errorf("--user, --writable, --address-family: exposure %.1f", s)
	}
	content := render(t, withUser)["myapp.service"]
	for _, want := range []string{"User=daemon\n", "ReadWritePaths=/var/log/myapp\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n"} {
		if !strings.Contains(content, want) {
			t.Errorf("lacks %q:\n%s", want, content)
		}
	}
	if strings.Contains(content, "DynamicUser=") {
		t.Errorf("DynamicUser= with --user:\n%s", content)
	}
	bare := o
	bare.NoSandbox = true
	if s := score(t, bare); s < 5 {
		t.Errorf("--no-sandbox: exposure %.1f, the sandbox is still there", s)
	}
}

// TestControlReachesEveryClient: a --control given to baton run is given to
// the commands systemd runs beside it, or they would look for the socket
// under RuntimeDirectory= and not find it.
func TestControlReachesEveryClient(t *testing.T) {
	for _, version := range []int{252, 254} {
		o := opts(version)
		o.Control = "/run/myapp-ctl/c.sock"
		svc := render(t, o)["myapp.service"]
		for _, w := range []string{"ExecReload=/usr/bin/baton reload --control /run/myapp-ctl/c.sock\n", "ExecStop=-/usr/bin/baton stop --control /run/myapp-ctl/c.sock\n"} {
			if version >= NotifyReloadVersion {
				w = strings.Replace(w, "reload", "reload --wait-signal", 1)
			}
			if !strings.Contains(svc, w) {
				t.Errorf("systemd %d: service lacks %q:\n%s", version, w, svc)
			}
		}
	}
}
