package activation

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    []Passed
		wantErr string
	}{
		{name: "unset", env: nil, want: nil},
		{name: "zero", env: map[string]string{"LISTEN_FDS": "0", "LISTEN_PID": "42"}, want: nil},
		{
			name: "two named",
			env:  map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "http:admin"},
			want: []Passed{{FD: 3, Name: "http"}, {FD: 4, Name: "admin"}},
		},
		{
			name: "no names",
			env:  map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "42"},
			want: []Passed{{FD: 3, Name: "unknown"}},
		},
		{name: "not a number", env: map[string]string{"LISTEN_FDS": "two", "LISTEN_PID": "42"}, wantErr: `LISTEN_FDS="two": not a count`},
		{name: "negative", env: map[string]string{"LISTEN_FDS": "-1", "LISTEN_PID": "42"}, wantErr: `LISTEN_FDS="-1"`},
		{name: "huge", env: map[string]string{"LISTEN_FDS": "99999999", "LISTEN_PID": "42"}, wantErr: "more than"},
		{name: "pid missing", env: map[string]string{"LISTEN_FDS": "1"}, wantErr: "LISTEN_PID is not"},
		{name: "pid garbage", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "x"}, wantErr: `LISTEN_PID="x": not a pid`},
		{name: "wrong pid", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "7"}, wantErr: "LISTEN_PID=7, this process is 42"},
		{
			name:    "names count",
			env:     map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "http"},
			wantErr: "1 names for LISTEN_FDS=2",
		},
		{
			name:    "bad name",
			env:     map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "42", "LISTEN_FDNAMES": "http:a\tb"},
			wantErr: "LISTEN_FDNAMES: fd 4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(envOf(tt.env), 42)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseWrongPIDIsSentinel(t *testing.T) {
	_, err := Parse(envOf(map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "7"}), 42)
	if !errors.Is(err, ErrWrongPID) {
		t.Fatalf("err = %v, want ErrWrongPID", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1", "42", "http")
	f.Add("2", "42", "a:b")
	f.Add("x", "", "")
	f.Add("3", "42", "::")
	f.Fuzz(func(t *testing.T, fds, pid, names string) {
		got, err := Parse(envOf(map[string]string{"LISTEN_FDS": fds, "LISTEN_PID": pid, "LISTEN_FDNAMES": names}), 42)
		if err != nil {
			if got != nil {
				t.Fatalf("Parse returned sockets with an error: %v", got)
			}
			return
		}
		for i, p := range got {
			if p.FD != FirstFD+i {
				t.Fatalf("fd %d at index %d", p.FD, i)
			}
			if CheckName(p.Name) != nil {
				t.Fatalf("invalid name %q accepted", p.Name)
			}
		}
	})
}

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr string
	}{
		{in: "127.0.0.1:8080", want: Spec{Name: "127.0.0.1_8080", Network: "tcp", Address: "127.0.0.1:8080"}},
		{in: "http=127.0.0.1:8080", want: Spec{Name: "http", Network: "tcp", Address: "127.0.0.1:8080"}},
		{in: "[::]:443", want: Spec{Name: "[__]_443", Network: "tcp", Address: "[::]:443"}},
		{in: ":8080", want: Spec{Name: "_8080", Network: "tcp", Address: ":8080"}},
		{in: "api=unix:/run/app.sock", want: Spec{Name: "api", Network: "unix", Address: "/run/app.sock"}},
		{in: "unix:/run/a=b.sock", want: Spec{Name: "unix_/run/a=b.sock", Network: "unix", Address: "/run/a=b.sock"}},
		{in: "127.0.0.1", wantErr: "want HOST:PORT"},
		{in: "127.0.0.1:", wantErr: "missing port"},
		{in: "unix:run/app.sock", wantErr: "absolute path"},
		{in: "unix:/" + strings.Repeat("x", 120), wantErr: "longer than"},
		{in: "a\tb=127.0.0.1:80", wantErr: "only printable ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSpec(%q) error = %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8080", "http=[::1]:80", "unix:/tmp/x", "a=unix:/b", "=:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseSpec(s)
		if err != nil {
			return
		}
		if CheckName(spec.Name) != nil {
			t.Fatalf("ParseSpec(%q) gave invalid name %q", s, spec.Name)
		}
		if spec.Network != "tcp" && spec.Network != "unix" {
			t.Fatalf("ParseSpec(%q) gave network %q", s, spec.Network)
		}
	})
}

func TestChildEnv(t *testing.T) {
	env := []string{"PATH=/bin", "LISTEN_FDS=9", "LISTEN_PID=1", "LISTEN_FDNAMES=x", "LISTEN_PIDFDID=5", "HOME=/"}
	got := ChildEnv(env, []string{"http", "admin"})
	want := []string{"PATH=/bin", "HOME=/", "LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ChildEnv mismatch (-want +got):\n%s", diff)
	}
	if got := ChildEnv(env, nil); len(got) != 2 {
		t.Errorf("ChildEnv without sockets = %q, want only PATH and HOME", got)
	}
}
