package supervisor

import (
	"encoding/json"
	"reflect"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestGenSettingsHandedOverWhole: every field of a generation's settings
// survives the handoff's JSON, including fields added later (the test
// fails on a field left at its zero value here, so a new one must be set).
func TestGenSettingsHandedOverWhole(t *testing.T) {
	in := handoffGen{Gen: 7, GenSettings: GenSettings{
		Command:      []string{"/usr/bin/myapp", "--port", "0"},
		Directory:    "/srv/myapp/releases/v2",
		Env:          []string{"DATABASE_URL=postgres://db/app", "FEATURE_X=on"},
		Ready:        Ready{Kind: ReadyHTTP, URL: "http://127.0.0.1:9{slot}/healthz"},
		ReadyTimeout: 20 * time.Second,
		DrainTimeout: 90 * time.Second,
		StopSignal:   syscall.SIGQUIT,
		Watchdog:     5 * time.Second,
	}}
	v := reflect.ValueOf(in.GenSettings)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("GenSettings.%s is not set in this test", v.Type().Field(i).Name)
		}
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out handoffGen
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("after the handoff (-before +after):\n%s", diff)
	}
}
