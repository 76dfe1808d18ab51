package systemd

import "testing"

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{`"252.22-1~deb12u1"`: 252, `"254.5-1~bpo12+3"`: 254, "257": 257, `"v255"`: 0, `""`: 0} {
		got, err := ParseVersion(in)
		if got != want || (want == 0) != (err != nil) {
			t.Errorf("ParseVersion(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
}
