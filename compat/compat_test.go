// Package compat proves that servers people already run work as baton
// workers unmodified: each starts under a stand-in systemd, answers in every
// slot, goes through rollouts under load without a failed request, and stops
// cleanly. The third-party servers come from Debian's packages (gunicorn,
// python3-systemd, python3-uvicorn, puma, uwsgi, lighttpd, python3-twisted)
// and npm (unix-dgram for Node); scripts/test installs them.
package compat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

var bins testsd.Bins

func TestMain(m *testing.M) { testsd.Main(m, &bins) }

// answer matches every example worker's reply: "<kind> slot N pid P".
var answer = regexp.MustCompile(`slot (\d+) pid (\d+)`)

func TestWorkers(t *testing.T) {
	testsd.Process(t)
	for _, tt := range []struct {
		name string
		cmd  []string
		args []string
		// closesUnread: the server closes, at shutdown, connections whose
		// request it has not started reading (uvicorn 0.17: Server.shutdown
		// closes every connection with no request cycle; twistd 22: the
		// reactor stops, and with it every connection). A fresh request
		// accepted an instant before the stop signal is then lost, which no
		// supervisor can prevent: it is reported, bounded, not hidden.
		closesUnread bool
		// rollouts under load: 2 unless the server's case is a rare race,
		// where more rollouts make "none lost" mean something.
		rollouts int
		// says: a line the server's output must have, proof that a
		// runner's change is in effect (a patch that silently did not
		// apply once passed for a fix).
		says string
	}{
		{"go (activation, notify)", []string{bins.Worker}, nil, false, 0, ""},
		{"python3-systemd", []string{"/usr/bin/python3", "../contrib/python-systemd/worker.py"}, []string{"--watchdog", "2s"}, false, 0, ""},
		{"gunicorn", []string{"/usr/bin/gunicorn", "--workers", "2", "--chdir", "../contrib/gunicorn", "app:app"}, nil, false, 0, ""},
		{"uvicorn --fd 3", []string{"/usr/bin/python3", "-m", "uvicorn", "--fd", "3", "--app-dir", "../contrib/uvicorn", "app:app"}, nil, true, 0, ""},
		// contrib/uvicorn/serve.py: uvicorn with a shutdown that reads what
		// it accepted before closing it. Unpatched uvicorn loses one fresh
		// request in a few rollouts; 12 rollouts (24 worker stops) make a
		// regression show.
		{"uvicorn (contrib runner)", []string{"/usr/bin/python3", "../contrib/uvicorn/serve.py", "--fd", "3", "--app-dir", "../contrib/uvicorn", "app:app"}, nil, false, 12, "Graceful stop: "},
		{"node {fd: 3}", []string{"node", "../contrib/node/server.js"}, []string{"--watchdog", "2s"}, false, 0, ""},
		// puma closes, at its stop, a connection it has parsed nothing
		// from: contrib/puma/puma.rb answers those that have not served a
		// request yet (1 to 5 fresh requests lost in 12 rollouts without).
		{"puma (cluster)", []string{"/usr/bin/puma", "--config", "../contrib/puma/puma.rb", "--bind", "tcp://{addr}", "--dir", "../contrib/puma", "config.ru"}, nil, false, 12, ""},
		{"uwsgi (master, processes)", []string{"/usr/bin/uwsgi", "--ini", "../contrib/uwsgi/uwsgi.ini"}, nil, false, 0, ""},
		{"lighttpd", []string{"/usr/sbin/lighttpd", "-D", "-f", "../contrib/lighttpd/lighttpd.conf"}, []string{"--ready", "listening", "--stop-signal", "INT"}, false, 0, ""},
		// twistd's shutdown stops the reactor without waiting for requests
		// it has accepted and not answered: the same race as uvicorn's.
		{"twistd", []string{"/usr/bin/twistd3", "--nodaemon", "--pidfile=", "web", "--listen", "systemd:domain=INET:index=0", "--path", "../contrib/twisted"}, []string{"--ready", "listening"}, true, 0, ""},
		// contrib/twisted/serve.tac: twistd's web server with a stop that
		// answers what it accepted (4 to 9 fresh requests lost in 12
		// rollouts with plain twistd web, 0 with it).
		{"twistd (contrib serve.tac)", []string{"/usr/bin/twistd3", "--nodaemon", "--pidfile=", "-y", "../contrib/twisted/serve.tac"}, []string{"--ready", "listening"}, false, 12, "Graceful stop: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := exec.LookPath(tt.cmd[0]); err != nil {
				t.Fatalf("%s is not installed (scripts/test installs it): %v", tt.cmd[0], err)
			}
			out := rolloutsUnderLoad(t, tt.cmd, tt.args, tt.closesUnread, max(tt.rollouts, 2))
			if !strings.Contains(out, tt.says) {
				t.Errorf("the server never said %q: the runner is not in effect\n%s", tt.says, out)
			}
		})
	}
}

// rolloutsUnderLoad runs cmd as baton's workers through rollouts under load
// and a stop, and returns what baton and the workers wrote.
func rolloutsUnderLoad(t *testing.T, cmd, args []string, closesUnread bool, rollouts int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	svc, web, ctl := served(ctx, t, func(addr string) []string {
		run := append([]string{"--workers", "2", "--ready-timeout", "30s"}, args...)
		for _, a := range cmd {
			run = append(run, strings.ReplaceAll(a, "{addr}", addr)) // puma's --bind names the socket it is given
		}
		return slices.Insert(run, len(run)-len(cmd), "--")
	})
	url := "http://" + web.Addr() + "/"

	// Every slot answers through the shared socket, from the pid baton lists.
	st := testsd.Status(ctx, t, ctl)
	for _, w := range st.Workers {
		// What each costs: a pre-fork server (gunicorn, puma, uwsgi) is a
		// tree, whose memory is more than its master's.
		if w.Processes == 0 || w.RSSBytes == 0 || w.TreeRSSBytes < w.RSSBytes {
			t.Errorf("slot %d: %d processes, %d bytes resident, %d in its tree", w.Slot, w.Processes, w.RSSBytes, w.TreeRSSBytes)
		}
		if w.Processes > 1 && w.TreeRSSBytes <= w.RSSBytes {
			t.Errorf("slot %d: a tree of %d processes holds no more memory (%d) than its root (%d)", w.Slot, w.Processes, w.TreeRSSBytes, w.RSSBytes)
		}
		t.Logf("slot %d: %d processes, %.1f MiB resident (its own %.1f MiB), %.1f%% CPU", w.Slot, w.Processes,
			float64(w.TreeRSSBytes)/(1<<20), float64(w.RSSBytes)/(1<<20), w.CPUPercent)
	}
	seen := map[int]bool{}
	for len(seen) < 2 {
		body, err := testsd.Get(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		m := answer.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("answer %q", body)
		}
		slot, _ := strconv.Atoi(m[1])
		pid, _ := strconv.Atoi(m[2])
		if slot > 1 || st.Workers[slot].PID != pid {
			t.Fatalf("answer from slot %d pid %d; baton lists %+v", slot, pid, st.Workers)
		}
		seen[slot] = true
	}

	const fresh = 4 // clients on fresh connections, and as many kept alive
	load := testsd.StartLoad(url, fresh, 4, 2*time.Millisecond)
	defer load.Stop()
	for gen := 2; gen <= rollouts+1; gen++ {
		resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
		if err != nil {
			t.Fatalf("rollout to generation %d: %v\n%s", gen, err, svc.Output.String())
		}
		if resp.Rollout.To != gen {
			t.Fatalf("rollout %+v", resp.Rollout)
		}
		for _, w := range testsd.Status(ctx, t, ctl).Workers {
			if w.Generation != gen || w.State != "ready" {
				t.Fatalf("after rollout %d: %+v", gen, w)
			}
		}
	}
	ok, failures := load.Stop()
	if closesUnread {
		lost := 0
		for _, f := range load.Failures() {
			// Go's client words "closed before any answer" three ways.
			closed := strings.HasSuffix(f.Err, ": EOF") || strings.HasSuffix(f.Err, "connection reset by peer") ||
				strings.HasSuffix(f.Err, "server closed idle connection")
			if strings.HasPrefix(f.Err, "fresh: ") && closed {
				lost++
				t.Logf("lost to the server's own shutdown (closed unread): %s", f.Err)
				continue
			}
			t.Errorf("failed request: %s", f.Err)
		}
		// The race loses what was accepted and unread at a worker's stop:
		// at most one request of each fresh client, at each of the two
		// stops of a rollout (4 in 2 rollouts was seen on a loaded machine).
		if most := fresh * 2 * rollouts; lost > most {
			t.Errorf("%d fresh requests closed unread across %d rollouts: more than the shutdown race explains (%d)", lost, rollouts, most)
		}
		t.Logf("%d requests across %d rollouts, %d closed unread by the server's shutdown", ok, rollouts, lost)
	} else if failures != "" {
		for _, f := range load.Failures() {
			t.Logf("failed at %s: %s", f.Start.UTC().Format("15:04:05.000000"), f.Err)
		}
		t.Errorf("failed requests across %d rollouts (%d ok): %s", rollouts, ok, failures)
	} else {
		t.Logf("%d requests across %d rollouts, none failed", ok, rollouts)
	}

	// How long a rollout step took: the new workers' own start.
	for _, line := range strings.Split(svc.Output.String(), "\n") {
		if strings.Contains(line, `msg="worker ready"`) && !strings.Contains(line, "gen=1 ") {
			if _, after, ok := strings.Cut(line, " after="); ok {
				t.Logf("a new worker was ready after %s", after)
			}
		}
	}
	if st := testsd.Status(ctx, t, ctl); len(st.Listeners) > 0 && len(st.Listeners[0].Changes) > 0 {
		t.Logf("what the server did to the shared socket: %q (accept queue now %d)", st.Listeners[0].Changes, st.Listeners[0].Backlog)
	}

	svc.Signal(t, unix.SIGTERM)
	if code := svc.Wait(ctx, t); code != 0 {
		t.Errorf("exit code %d after SIGTERM\n%s", code, svc.Output.String())
	}
	if left := holders(t, web); len(left) > 0 {
		t.Errorf("processes still hold the socket after baton stopped: %v", left)
	}
	return svc.Output.String()
}

// holders lists the processes other than this one that hold l's socket:
// after a clean stop, no worker (nor a process a worker forked) is left.
func holders(t *testing.T, l *activation.Listener) []string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(l.FD(), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("socket:[%d]", st.Ino)
	procs, _ := os.ReadDir("/proc")
	var left []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if link, _ := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); link == want {
				comm, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
				left = append(left, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return left
}
