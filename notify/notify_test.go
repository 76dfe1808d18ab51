package notify

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("NOTIFY_TEST_SEND_TO"); addr != "" {
		c, err := Open(addr)
		if err == nil {
			err = c.Send("READY=1\nSTATUS=from child")
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Message
		wantErr string
	}{
		{name: "ready", in: "READY=1", want: Message{"READY": "1"}},
		{name: "status then ready", in: "STATUS=x\nREADY=1\n", want: Message{"STATUS": "x", "READY": "1"}},
		{name: "value with equals", in: "STATUS=a=b", want: Message{"STATUS": "a=b"}},
		{name: "empty value", in: "STATUS=", want: Message{"STATUS": ""}},
		{name: "last wins", in: "STATUS=a\nSTATUS=b", want: Message{"STATUS": "b"}},
		{name: "empty", in: "", want: Message{}},
		{name: "no equals", in: "READY\nSTATUS=ok", want: Message{"STATUS": "ok"}, wantErr: `"READY"`},
		{name: "lower key", in: "ready=1", want: Message{}, wantErr: "malformed"},
		{name: "digit key", in: "1A=1", want: Message{}, wantErr: "malformed"},
		{name: "nul in value", in: "STATUS=a\x00b", want: Message{}, wantErr: "malformed"},
		{name: "bad utf8", in: "STATUS=\xff", want: Message{}, wantErr: "malformed"},
		{name: "too long", in: strings.Repeat("A", MaxDatagram+1), want: nil, wantErr: "more than 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if (err != nil) != (tt.wantErr != "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
	if m, _ := Parse([]byte("READY=1")); !m.Is("READY", "1") || m.Is("STOPPING", "1") {
		t.Error("Message.Is")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"READY=1", "STATUS=x\nREADY=1", "FDSTORE=1\nFDNAME=web", "=\n=", "WATCHDOG_USEC=100"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if len(b) > MaxDatagram {
			if err == nil {
				t.Fatal("oversized datagram accepted")
			}
			return
		}
		for k, v := range m {
			if !validKey([]byte(k)) || strings.ContainsAny(v, "\n\x00") {
				t.Fatalf("Parse(%q) kept %q=%q", b, k, v)
			}
		}
	})
}

func TestClientToSocketWithCredentialsAndFDs(t *testing.T) {
	for _, addr := range []string{fmt.Sprintf("@baton-test-%d", os.Getpid()), filepath.Join(t.TempDir(), "n.sock")} {
		t.Run(addr, func(t *testing.T) {
			s, err := Listen(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c, err := Open(s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.CreateTemp(t.TempDir(), "fd")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := c.SendFDs("FDSTORE=1\nFDNAME=web", int(f.Fd())); err != nil {
				t.Fatal(err)
			}
			d, err := s.Read()
			if err != nil {
				t.Fatal(err)
			}
			if d.Err != nil || !d.Msg.Is("FDNAME", "web") || d.PID != os.Getpid() || d.UID != os.Getuid() {
				t.Fatalf("got %+v", d)
			}
			if len(d.Files) != 1 {
				t.Fatalf("got %d fds, want 1", len(d.Files))
			}
			defer d.Files[0].Close()
			a, _ := f.Stat()
			b, _ := d.Files[0].Stat()
			if !os.SameFile(a, b) {
				t.Error("received fd is not the file sent")
			}
		})
	}
}

func TestSocketReportsTheSendersPID(t *testing.T) {
	s, err := Listen(fmt.Sprintf("@baton-test-child-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NOTIFY_TEST_SEND_TO="+s.Addr())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	d, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if d.PID != cmd.Process.Pid || !d.Msg.Is("READY", "1") {
		t.Fatalf("got pid %d msg %v, want pid %d", d.PID, d.Msg, cmd.Process.Pid)
	}
}

func TestOversizedDatagramIsReported(t *testing.T) {
	s, err := Listen(fmt.Sprintf("@baton-test-big-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, _ := Open(s.Addr())
	if err := c.Send("STATUS=" + strings.Repeat("x", 2*MaxDatagram)); err != nil {
		t.Fatal(err)
	}
	d, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if d.Err == nil || d.Msg != nil {
		t.Fatalf("oversized datagram: %+v", d)
	}
}

func TestClientEdges(t *testing.T) {
	var c *Client
	if err := c.Send("READY=1"); err != nil {
		t.Errorf("nil client: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if _, err := FromEnv(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FromEnv without NOTIFY_SOCKET: %v", err)
	}
	if _, err := Open("relative/sock"); err == nil {
		t.Error("relative NOTIFY_SOCKET accepted")
	}
	c, _ = Open("@baton-test-nobody-listens")
	if err := c.Send("READY=1"); err == nil {
		t.Error("send to a missing socket succeeded")
	}
}

func TestWatchdogInterval(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		env     map[string]string
		want    time.Duration
		wantErr string
	}{
		{env: nil, want: 0},
		{env: map[string]string{"WATCHDOG_USEC": "2000000"}, want: 2 * time.Second},
		{env: map[string]string{"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"}, want: 2 * time.Second},
		{env: map[string]string{"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"}, want: 0},
		{env: map[string]string{"WATCHDOG_USEC": "soon"}, wantErr: `WATCHDOG_USEC="soon"`},
		{env: map[string]string{"WATCHDOG_USEC": "0"}, wantErr: "not a positive"},
		{env: map[string]string{"WATCHDOG_USEC": "10", "WATCHDOG_PID": "x"}, wantErr: `WATCHDOG_PID="x"`},
	}
	for _, tt := range tests {
		got, err := WatchdogInterval(env(tt.env), 42)
		if (err != nil) != (tt.wantErr != "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) || got != tt.want {
			t.Errorf("WatchdogInterval(%v) = %v, %v; want %v, %q", tt.env, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseUsec(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     time.Duration
		infinite bool
		bad      bool
	}{
		{"0", 0, false, false},
		{"1000000", time.Second, false, false},
		{"9223372036854775", 9223372036854775 * time.Microsecond, false, false},
		{"9223372036854776", 0, true, false},
		{"18446744073710552", 0, true, false}, // once wrapped to about 1 ms
		{"18446744073709551615", 0, true, false},
		{"18446744073709551616", 0, false, true},
		{"-1", 0, false, true},
		{"", 0, false, true},
		{"1e6", 0, false, true},
	} {
		d, inf, err := ParseUsec(tc.in)
		if (err != nil) != tc.bad || d != tc.want || inf != tc.infinite {
			t.Errorf("ParseUsec(%q) = %v, %v, %v", tc.in, d, inf, err)
		}
	}
}

// FuzzParseUsec: whatever a worker sends as a count of microseconds, the
// result is never negative, and a finite one is exactly the count.
func FuzzParseUsec(f *testing.F) {
	for _, s := range []string{"0", "1", "18446744073710552", "18446744073709551615", "9223372036854775", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, inf, err := ParseUsec(s)
		if err != nil {
			return
		}
		if d < 0 || (inf && d != 0) {
			t.Fatalf("ParseUsec(%q) = %v, %v", s, d, inf)
		}
		if !inf && uint64(d/time.Microsecond) != mustUint(t, s) {
			t.Fatalf("ParseUsec(%q) = %v: not the count", s, d)
		}
	})
}

func mustUint(t *testing.T, s string) uint64 {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSenderPidfd: where the kernel passes SCM_PIDFD, the sender's pid is
// read from the pidfd, which names the process as it was when it sent.
//
// Found by a test here: the pidfd does not undo a forged SCM_CREDENTIALS.
// A sender with CAP_SYS_ADMIN that claims pid 1 gets a pidfd of pid 1
// passed along (the kernel makes the pidfd from the claimed pid), so a
// root worker can still speak for another process; workers should run
// unprivileged (User=, DynamicUser=).
func TestSenderPidfd(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "n.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Open(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("READY=1"); err != nil {
		t.Fatal(err)
	}
	d, err := s.Read()
	if err != nil {
		t.Fatal(err)
	}
	if d.PID != os.Getpid() {
		t.Errorf("sender's pid %d, want %d", d.PID, os.Getpid())
	}
	var uts unix.Utsname
	unix.Uname(&uts)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	if (major > 6 || major == 6 && minor >= 5) && !d.PIDVerified {
		t.Errorf("Linux %d.%d passes SCM_PIDFD, but the pid was not read from one", major, minor)
	}
}

// TestPidOfPidfd: PIDFD_GET_INFO and the fdinfo it replaces where the
// kernel has it tell the same pid, and -1 once the process has exited and
// been reaped.
func TestPidOfPidfd(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Skipf("no pidfd: %v", err)
	}
	defer unix.Close(fd)
	check := func(want int) {
		t.Helper()
		if got := fdinfoPID(fd); got != want {
			t.Errorf("fdinfo: pid %d, want %d", got, want)
		}
		if got, ok := pidfdInfoPID(fd); ok && got != want {
			t.Errorf("PIDFD_GET_INFO: pid %d, want %d", got, want)
		} else if !ok {
			t.Logf("no PIDFD_GET_INFO on this kernel (Linux 6.13 added it)")
		}
		if got := pidOfPidfd(fd); got != want {
			t.Errorf("pidOfPidfd: pid %d, want %d", got, want)
		}
	}
	check(cmd.Process.Pid)
	cmd.Process.Kill()
	cmd.Wait()
	check(-1)
}
