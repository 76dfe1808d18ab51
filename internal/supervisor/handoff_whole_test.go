package supervisor

// The handoff is whole: every field of the state crosses the JSON, every
// field of the Supervisor, a slot and a worker's record is either handed
// over (in its *Kept struct) or listed here with why it need not be, and
// any change to the state's shape comes with a new protocol number.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var updateShape = flag.Bool("update-handoff-shape", false, "write testdata/handoff-<protocol>.shape")

// notHandedOver lists, for each struct whose state an upgrade must carry,
// the fields that do not cross and why. A field added to one of these
// structs must go into its *Kept struct (handed over with no more code) or
// here: TestNothingLeftBehind fails otherwise.
var notHandedOver = map[reflect.Type]map[string]string{
	reflect.TypeFor[Supervisor](): {
		"world": "the new image's own", "cfg": "read again by the new image", "reload": "the new image's own",
		"log": "the new image's own", "exe": "the binary just exec'd", "started": "this image's start",
		"notifyDir": "handed over as NotifyDir", "sd": "the notify socket is in the environment",
		"listeners": "handed over as fds (Listeners)", "source": "handed over with Listeners",
		"baseEnv": "the environment is the exec's", "underSystemd": "read from the environment again",
		"fdLimit": "read again", "sigs": "the new image's own; signals in the exec go through sigrelay",
		"ctl": "handed over as ControlFD", "metricsLn": "handed over as MetricsFD",
		"recovering": "the new image's own readers", "events": "empty: the exec runs from the loop",
		"later": "empty: the exec runs from the loop", "done": "the new image's own",
		"serving": "handed over as Serving", "previous": "handed over as Previous",
		"slots": "handed over as Slots", "workers": "handed over as Workers",
		"helpers": "an upgrade waits for the --check (a rollout) to end",
		"rollout": "an upgrade is refused during a rollout", "recycles": "dropped at the exec: a caller's request is sent again to the new image by its client (control.Call), an automatic one found again by the next check (checkRecycle, every second)",
		"sampling":          "a memory reading in flight is dropped; the next tick reads again",
		"wantSize":          "begun at once outside a rollout, which blocks an upgrade",
		"pendingConfigured": "set only during a reload (a rollout)",
		"requests":          "callers waiting on a rollout: an upgrade is refused during one; await-reload callers waiting for one to begin see EOF at the exec",
		"toStart":           "the start blocks an upgrade (ReadySent)", "exited": "their output is read to its end, for up to outputGrace, before the exec; then cut",
		"upgradeDeferred": "false when an upgrade runs", "upgrading": "the upgrade itself",
		"stopping": "an upgrade is refused while stopping", "lameDuck": "an upgrade is refused while stopping",
		"lameDuckEnds": "an upgrade is refused while stopping", "stopSigs": "an upgrade is refused while stopping",
		"status": "sent again by the new image", "sockets": "asked of the listeners again",
		"inodes": "read again", "socketProblems": "asked of the listeners again",
		"exitErr": "nil while running", "costs": "handed over as Costs",
		"adopted": "a /proc file of this image's main thread, opened again",
	},
	reflect.TypeFor[slot](): {
		"w": "handed over as PID", "next": "only during a rollout, which blocks an upgrade",
		"spec": "handed over as Gen", "restart": "re-armed by adopt (scheduleStart)",
	},
	reflect.TypeFor[proc](): {
		"p": "handed over as worker.Handoff (fds, pid, tail)", "pid": "in worker.Handoff",
		"started": "in worker.Handoff", "slot": "handed over as SlotAt", "spec": "handed over as Generation",
		"exited": "a reaped worker is no longer in workers", "timers": "re-armed by adopt",
		"cancel": "a probe is started again by adopt (awaitReady)", "wdTimer": "re-armed by adopt",
		"lastPing": "the watchdog's interval starts over from the exec",
	},
}

func TestNothingLeftBehind(t *testing.T) {
	kept := map[reflect.Type]reflect.Type{
		reflect.TypeFor[Supervisor](): reflect.TypeFor[supervisorKept](),
		reflect.TypeFor[slot]():       reflect.TypeFor[slotKept](),
		reflect.TypeFor[proc]():       reflect.TypeFor[procKept](),
	}
	for typ, why := range notHandedOver {
		seen := map[string]bool{}
		for f := range typ.Fields() {
			seen[f.Name] = true
			switch {
			case f.Anonymous && f.Type == kept[typ]:
			case why[f.Name] != "":
			default:
				t.Errorf("%s.%s is neither handed over at an upgrade (in %s) nor listed in notHandedOver with a reason", typ.Name(), f.Name, kept[typ].Name())
			}
		}
		for name := range why {
			if !seen[name] {
				t.Errorf("notHandedOver lists %s.%s, which is no longer a field", typ.Name(), name)
			}
		}
	}
}

// TestHandoffStateRoundTrip: a state with every field set (by reflection,
// so a field added later is set too) reads back equal: no field without a
// JSON name, hidden by another of the same name, or dropped.
func TestHandoffStateRoundTrip(t *testing.T) {
	var in handoffState
	fill(t, reflect.ValueOf(&in).Elem(), "handoffState")
	in.Protocol = HandoffProtocol
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(in); err != nil {
		t.Fatal(err)
	}
	out, err := decodeState(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, *out, cmp.Exporter(func(reflect.Type) bool { return true })); diff != "" {
		t.Errorf("after the handoff (-before +after):\n%s", diff)
	}
}

// fill sets every field of v to a value that is not its zero.
func fill(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	special := map[reflect.Type]any{
		reflect.TypeFor[time.Time]():      time.Date(2026, 12, 2, 15, 4, 5, 6, time.UTC),
		reflect.TypeFor[Ready]():          Ready{Kind: ReadyHTTP, URL: "http://127.0.0.1:9{slot}/healthz"},
		reflect.TypeFor[procState]():      stateDraining,
		reflect.TypeFor[syscall.Signal](): syscall.SIGQUIT,
	}
	if x, ok := special[v.Type()]; ok {
		v.Set(reflect.ValueOf(x))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() && !f.Anonymous {
				t.Errorf("%s.%s is unexported: JSON does not hand it over", path, f.Name)
				continue
			}
			if tag := f.Tag.Get("json"); tag == "-" {
				t.Errorf("%s.%s is left out of the JSON (json:\"-\")", path, f.Name)
				continue
			}
			fill(t, v.Field(i), path+"."+f.Name)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0), path+"[0]")
	case reflect.Array:
		for i := range v.Len() {
			fill(t, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k, path+"[key]")
		fill(t, e, path+"[]")
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString(path)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(3 + len(path)%50))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(3 + len(path)%50))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(0.25)
	default:
		t.Errorf("%s: a %s in the handoff state: extend fill", path, v.Kind())
	}
}

// TestHandoffRefusesWhatItCannotRead: an unknown field (a newer image's),
// a protocol outside the range, trailing junk: no partial adoption.
func TestHandoffRefusesWhatItCannotRead(t *testing.T) {
	good := fmt.Sprintf(`{"protocol":%d}`, HandoffProtocol)
	if _, err := decodeState(strings.NewReader(good)); err != nil {
		t.Fatalf("%s: %v", good, err)
	}
	for _, bad := range []string{
		fmt.Sprintf(`{"protocol":%d,"drain_everything":true}`, HandoffProtocol),
		fmt.Sprintf(`{"protocol":%d,"workers":[{"pid":1,"ready_at_ms":5}]}`, HandoffProtocol),
		fmt.Sprintf(`{"protocol":%d}`, HandoffReads.Oldest-1),
		fmt.Sprintf(`{"protocol":%d}`, HandoffReads.Newest+1),
		`{"protocol":`,
		fmt.Sprintf(`{"protocol":%d} {"protocol":%d}`, HandoffProtocol, HandoffProtocol),
	} {
		if _, err := decodeState(strings.NewReader(bad)); err == nil {
			t.Errorf("%s was read", bad)
		}
	}
}

// TestParseHandoffProtocol: both sides check the range the same way; a
// binary without the reads line reads just its own protocol.
func TestParseHandoffProtocol(t *testing.T) {
	for _, c := range []struct {
		out   string
		proto int
		reads ProtocolRange
		takes bool // it can take over from this image
	}{
		{"baton 1.4\ncommit x\nhandoff-protocol 2\n", 2, ProtocolRange{2, 2}, HandoffProtocol == 2},
		{fmt.Sprintf("baton dev\nhandoff-protocol %d\nhandoff-reads %s\n", HandoffProtocol, HandoffReads), HandoffProtocol, HandoffReads, true},
		{fmt.Sprintf("handoff-protocol %d\nhandoff-reads %d-%d\n", HandoffProtocol+1, HandoffProtocol, HandoffProtocol+1), HandoffProtocol + 1, ProtocolRange{HandoffProtocol, HandoffProtocol + 1}, true},
		{fmt.Sprintf("handoff-protocol %d\nhandoff-reads %d-%d\n", HandoffProtocol+1, HandoffProtocol+1, HandoffProtocol+1), HandoffProtocol + 1, ProtocolRange{HandoffProtocol + 1, HandoffProtocol + 1}, false},
	} {
		proto, reads, err := parseHandoffProtocol(c.out)
		if err != nil || proto != c.proto || reads != c.reads || reads.Reads(HandoffProtocol) != c.takes {
			t.Errorf("%q: protocol %d, reads %s, %v; want %d, %s, takes over %v", c.out, proto, reads, err, c.proto, c.reads, c.takes)
		}
	}
	for _, bad := range []string{"baton dev\n", "handoff-protocol two\n", "handoff-protocol 3\nhandoff-reads 3\n"} {
		if _, _, err := parseHandoffProtocol(bad); err == nil {
			t.Errorf("%q read", bad)
		}
	}
}

// TestHandoffShapeIsTheProtocol: the state's shape (every JSON name and
// type, recursively) is recorded per protocol; a change without a new
// HandoffProtocol fails here. After bumping it, write the new shape with
// go test -run TestHandoffShapeIsTheProtocol -update-handoff-shape.
func TestHandoffShapeIsTheProtocol(t *testing.T) {
	var b strings.Builder
	shape(&b, reflect.TypeFor[handoffState](), "", map[reflect.Type]bool{})
	file := filepath.Join("testdata", fmt.Sprintf("handoff-%d.shape", HandoffProtocol))
	if *updateShape {
		if _, err := os.Stat(file); err == nil {
			t.Fatalf("%s exists: a protocol's shape is never rewritten; bump HandoffProtocol", file)
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no recorded shape for protocol %d: %v", HandoffProtocol, err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("the handoff state changed without a new protocol: bump HandoffProtocol (handoff.go), set HandoffReads, "+
			"then go test -run TestHandoffShapeIsTheProtocol -update-handoff-shape (-protocol %d +now):\n%s", HandoffProtocol, diff)
	}
}

// shape writes one line per JSON name: its path and Go kind.
func shape(b *strings.Builder, t reflect.Type, path string, seen map[reflect.Type]bool) {
	if _, ok := reflect.New(t).Interface().(json.Marshaler); ok || t == reflect.TypeFor[time.Time]() {
		fmt.Fprintf(b, "%s %s (own JSON)\n", path, t)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		shape(b, t.Elem(), path, seen)
	case reflect.Slice, reflect.Array:
		shape(b, t.Elem(), path+"[]", seen)
	case reflect.Map:
		shape(b, t.Elem(), path+"{"+t.Key().Kind().String()+"}", seen)
	case reflect.Struct:
		if seen[t] {
			fmt.Fprintf(b, "%s %s (again)\n", path, t)
			return
		}
		seen[t] = true
		var fields []reflect.StructField
		for f := range t.Fields() {
			fields = append(fields, f)
		}
		slices.SortFunc(fields, func(a, b reflect.StructField) int { return strings.Compare(jsonName(a), jsonName(b)) })
		for _, f := range fields {
			if f.Anonymous && jsonName(f) == f.Name {
				shape(b, f.Type, path, seen)
				continue
			}
			shape(b, f.Type, path+"."+jsonName(f), seen)
		}
		delete(seen, t)
	default:
		fmt.Fprintf(b, "%s %s\n", path, t.Kind())
	}
}

func jsonName(f reflect.StructField) string {
	if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" {
		return name
	}
	return f.Name
}

// TestHandoffReadsProtocol3: protocols 4 and 5 only added slot fields, so
// a protocol-3 state (an image before them) is read, those fields empty:
// an upgrade from it needs no restart. A hold of the slot's recycles that
// protocol-3 image set, still to come, is shown with a reason (status
// shows it, and its end is logged): one set while no recycle of the slot
// had failed was a memory back-off, and holds recycles by memory alone.
func TestHandoffReadsProtocol3(t *testing.T) {
	now := time.Now()
	future, past := now.Add(time.Hour).UTC().Format(time.RFC3339), now.Add(-time.Hour).UTC().Format(time.RFC3339)
	v3 := `{"protocol":3,"slots":[` +
		`{"index":0,"restarts":1,"backoff":100000000,"recycles":2,"recycle_hold":"` + future + `","mem_backoff":60000000000,"gen":1,"pid":42},` +
		`{"index":1,"recycle_hold":"` + future + `","recycle_retry":30000000000,"gen":1,"pid":43},` +
		`{"index":2,"recycle_hold":"` + past + `","mem_backoff":30000000000,"gen":1,"pid":44}]}`
	st, err := decodeState(strings.NewReader(v3))
	if err != nil {
		t.Fatalf("a protocol-3 state: %v", err)
	}
	if sl := st.Slots[0]; sl.MemBackoff != time.Minute || sl.Recycles != 2 || sl.MemRecycles != nil {
		t.Errorf("slot read from protocol 3: %+v", sl)
	}
	for i, want := range []struct {
		why        string
		memoryOnly bool
	}{{heldBeforeUpgrade, true}, {heldBeforeUpgrade, false}, {"", false}} {
		sl := slot{slotKept: st.Slots[i].slotKept}
		if why, _, memoryOnly := sl.held(now); why != want.why || memoryOnly != want.memoryOnly {
			t.Errorf("slot %d read from protocol 3 is held for %q, by memory only %v; want %q, %v (slot %+v)", i, why, memoryOnly, want.why, want.memoryOnly, sl.slotKept)
		}
	}
}

// TestHandoffReadsProtocol4: a protocol-4 hold held recycles by memory and
// by age alike. Read, one set while no recycle of the slot had failed was
// a memory hold, and holds recycles by memory alone; one set by a failed
// recycle holds both still.
func TestHandoffReadsProtocol4(t *testing.T) {
	now := time.Now()
	future := now.Add(time.Hour).UTC().Format(time.RFC3339)
	v4 := `{"protocol":4,"slots":[` +
		`{"index":0,"recycle_hold":"` + future + `","hold_why":"12 recycles by memory in the last hour; raise --recycle-memory","gen":1,"pid":42},` +
		`{"index":1,"recycle_hold":"` + future + `","hold_why":"its last recycle failed: x","recycle_retry":30000000000,"gen":1,"pid":43}]}`
	st, err := decodeState(strings.NewReader(v4))
	if err != nil {
		t.Fatalf("a protocol-4 state: %v", err)
	}
	for i, want := range []struct {
		why        string
		memoryOnly bool
	}{{"12 recycles by memory in the last hour; raise --recycle-memory", true}, {"its last recycle failed: x", false}} {
		sl := slot{slotKept: st.Slots[i].slotKept}
		if why, _, memoryOnly := sl.held(now); why != want.why || memoryOnly != want.memoryOnly {
			t.Errorf("slot %d read from protocol 4 is held for %q, by memory only %v; want %q, %v", i, why, memoryOnly, want.why, want.memoryOnly)
		}
	}
}
