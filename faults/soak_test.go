package faults

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batonsd/baton/activation"
	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/testsd"
	"golang.org/x/sys/unix"
)

var (
	soakSeed  = flag.Uint64("soak.seed", 0, "TestSoak: replay the steps of this seed (0: a new seed)")
	soakFor   = flag.Duration("soak.for", 45*time.Second, "TestSoak: how long it takes random steps")
	soakSteps = flag.Int("soak.steps", 0, "TestSoak: stop after this many steps (0: only soak.for bounds it)")
)

// TestSoak runs a real baton under light load while a seeded random
// sequence of what users and the world do to it goes on: reloads (some into
// a broken release or with a broken environment file, some while `current`
// flips in a tight loop), scales, recycles, rollbacks, `current` flips,
// environment-file edits, workers killed behind baton's back, in-place
// upgrades by command and by SIGUSR2, SIGHUP. After each step it checks
// what serves, not what was reported:
//
//   - no request of the load failed;
//   - the ready workers, read every few milliseconds, never fell below the
//     floor a rolling rollout promises (every slot; one less only while a
//     killed worker restarts, the smaller size during a scale);
//   - every serving worker answers, through the shared socket, with the
//     release, directory, environment and generation the model of the
//     steps so far expects, and all workers of a generation with one
//     release and one environment;
//   - every command's answer is true: a reload that said "generation g
//     serves in N slots" has N workers of g answering; a refused one left
//     the old release serving.
//
// It prints its seed; -soak.seed replays the same steps (their timing is
// the machine's). Bounded by -soak.for (45 s) and -soak.steps.
func TestSoak(t *testing.T) {
	testsd.Process(t)
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d: replay with go test ./faults -run TestSoak -soak.seed=%d", seed, seed)
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx := timeout(t, *soakFor+60*time.Second)

	w := newSoakWorld(t)
	s := w.start(ctx, t)
	defer s.load.Stop()

	type step struct {
		name   string
		weight int
		do     func(s *soak, ctx context.Context, t *testing.T)
	}
	steps := []step{
		{"reload", 6, (*soak).reload},
		{"reload while current flips", 2, (*soak).reloadWhileFlipping},
		{"flip current", 5, (*soak).flip},
		{"edit the environment file", 3, (*soak).editEnv},
		{"scale", 2, (*soak).scale},
		{"recycle", 2, (*soak).recycle},
		{"rollback", 2, (*soak).rollback},
		{"kill a worker", 2, (*soak).kill},
		{"upgrade", 1, (*soak).upgrade},
		{"SIGUSR2", 1, (*soak).upgradeBySignal},
		{"SIGHUP", 2, (*soak).hangup},
	}
	total := 0
	for _, st := range steps {
		total += st.weight
	}
	end := time.Now().Add(*soakFor)
	for n := 1; time.Now().Before(end) && (*soakSteps == 0 || n <= *soakSteps); n++ {
		pick := rnd.IntN(total)
		i := 0
		for pick >= steps[i].weight {
			pick -= steps[i].weight
			i++
		}
		s.rnd = rnd
		s.trace = append(s.trace, fmt.Sprintf("%d: %s", n, steps[i].name))
		steps[i].do(s, ctx, t)
		s.check(ctx, t)
	}
	t.Logf("%d steps, %d requests answered, generation %d", len(s.trace), s.load.OK(), s.gen)
	ok, failures := s.load.Stop()
	if failures != "" || ok == 0 {
		s.fail(t, "the load: %d answered, failed: %s", ok, failures)
	}
	sig := []unix.Signal{unix.SIGTERM, unix.SIGINT}[rnd.IntN(2)]
	s.svc.Signal(t, sig)
	if code := s.svc.Wait(ctx, t); code != 0 {
		s.fail(t, "baton exited %d after %v, want 0", code, sig)
	}
}

// soakWorld is the releases, the environment file and the binaries a soak
// runs with.
type soakWorld struct {
	root    string // releases/v1..v3 and vbad, current, shared/soak.env, baton.toml
	batonAt string // the copy of baton that upgrades replace
}

// soakReleases are the releases that serve; vbad's program exits at once.
var soakReleases = []string{"v1", "v2", "v3"}

func newSoakWorld(t *testing.T) *soakWorld {
	t.Helper()
	root, err := filepath.EvalSymlinks(shortDir(t))
	if err != nil {
		t.Fatal(err)
	}
	w := &soakWorld{root: root, batonAt: filepath.Join(root, "baton")}
	for _, id := range append(slices.Clone(soakReleases), "vbad") {
		dir := filepath.Join(root, "releases", id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// The program says its own release; the directory it runs in and
		// the release's environment file say theirs: a generation that
		// mixes releases answers with two names.
		body := fmt.Sprintf("exec %s --say \"release %s dir $(pwd -P) env ${SOAK_RELEASE:-none} epoch ${SOAK_EPOCH:-none}\"\n", bins.Worker, id)
		if id == "vbad" {
			body = "echo no database >&2; exit 1\n"
		}
		script(t, dir, "app", body)
		writeFile(t, filepath.Join(dir, "release.env"), "SOAK_RELEASE="+id+"\n")
	}
	if err := os.MkdirAll(filepath.Join(root, "shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "shared", "soak.env"), "SOAK_EPOCH=0\n")
	point(t, root, "v1")
	// The program through the link, absolute: the pin must resolve it in
	// the same look as the directory.
	writeFile(t, filepath.Join(root, "baton.toml"), fmt.Sprintf(`command = [%q]
directory = %q
env-file = ["release.env", %q]
ready = "notify"
ready-timeout = "10s"
drain-timeout = "5s"
max-surge = 1
crash-limit = "1000/60s"
restart-backoff = "20ms..200ms"
`, filepath.Join(root, "current", "app"), filepath.Join(root, "current"), filepath.Join(root, "shared", "soak.env")))
	copyBinary(t, bins.Baton, w.batonAt)
	return w
}

// soak is a running soak: baton, its load, the floor watcher, and the
// model of what should serve.
type soak struct {
	w     *soakWorld
	svc   *testsd.Service
	ctl   string
	url   string
	load  *testsd.Load
	rnd   *rand.Rand
	trace []string

	// The floor watcher's: the least ready workers allowed now, and the
	// first time it saw fewer.
	floor    atomic.Int64
	mu       sync.Mutex
	belowMsg string

	// The model.
	workers  int
	current  string // where current points
	epoch    int    // SOAK_EPOCH in the shared file
	envBad   bool   // the shared file has a line that cannot be parsed
	gen      int    // the serving generation
	made     int    // the last generation made (a failed rollout makes one too)
	serving  served // what its workers must answer
	previous *served
	version  string // baton's version after the upgrades so far
	seen     map[int]served
}

// served is what a worker answers with, besides its slot and pid.
type served struct {
	release, dir, env, epoch string
}

func (w *soakWorld) want(release string, epoch int) served {
	return served{release, filepath.Join(w.root, "releases", release), release, strconv.Itoa(epoch)}
}

func (w *soakWorld) start(ctx context.Context, t *testing.T) *soak {
	t.Helper()
	web := listener(t)
	sd := testsd.New(t)
	b := bins
	b.Baton = w.batonAt
	ctl := shortDir(t) + "/c.sock"
	s := &soak{w: w, ctl: ctl, url: "http://" + web.Addr() + "/", workers: 3, current: "v1", version: "dev", seen: map[int]served{}}
	s.svc = sd.Start(b, []*activation.Listener{web}, nil, "run", "--workers", "3", "--config", filepath.Join(w.root, "baton.toml"), "--control", ctl)
	sd.WaitFor(ctx, "READY=1", testsd.Sent("READY", "1"))
	s.gen, s.made, s.serving = 1, 1, w.want("v1", 0)
	s.floor.Store(3)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { s.watchFloor(watchCtx); close(watched) }()
	t.Cleanup(func() { stopWatch(); <-watched })
	s.load = testsd.StartLoad(s.url, 2, 2, 5*time.Millisecond)
	return s
}

// watchFloor reads the ready workers every few milliseconds until ctx ends
// and keeps the first reading below the floor.
func (s *soak) watchFloor(ctx context.Context) {
	for ctx.Err() == nil {
		floor := s.floor.Load()
		resp, err := control.Call(ctx, s.ctl, control.Request{Command: control.CmdStatus})
		if err == nil && resp.Status.State == "ready" && int64(resp.Status.Ready) < floor && floor == s.floor.Load() {
			s.mu.Lock()
			if s.belowMsg == "" {
				s.belowMsg = fmt.Sprintf("%d ready, floor %d, at step %d; workers %+v", resp.Status.Ready, floor, len(s.trace), resp.Status.Workers)
			}
			s.mu.Unlock()
		}
		time.Sleep(20 * time.Millisecond) // each status reads /proc for every worker: cheap, not free
	}
}

// fail ends the test with the seed's trace.
func (s *soak) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("after step %q: %s\nsteps:\n  %s", s.trace[len(s.trace)-1], fmt.Sprintf(format, args...), strings.Join(s.trace, "\n  "))
}

// note adds what a step did to the trace.
func (s *soak) note(format string, args ...any) {
	s.trace[len(s.trace)-1] += ": " + fmt.Sprintf(format, args...)
}

// call sends req and fails the soak on an error that is not the control
// protocol's refusal (baton's answer is what the step judges).
func (s *soak) call(ctx context.Context, t *testing.T, req control.Request) (control.Response, error) {
	t.Helper()
	resp, err := control.Call(ctx, s.ctl, req)
	if err != nil && !errors.Is(err, control.ErrRefused) {
		s.fail(t, "%s: %v", req.Command, err)
	}
	return resp, err
}

// rolledOut is the model's side of a rollout that was asked for: ok when
// the environment file parses and current names a release that serves.
func (s *soak) rolledOut(t *testing.T, what string, resp control.Response, err error) {
	t.Helper()
	fine := !s.envBad && s.current != "vbad"
	switch {
	case fine && err != nil:
		s.fail(t, "%s failed: %v", what, err)
	case !fine && err == nil:
		s.fail(t, "%s into %s (environment file broken: %v) answered ok: %+v", what, s.current, s.envBad, resp.Rollout)
	case !fine:
		if r := resp.Rollout; r != nil && r.To != 0 {
			if r.From != s.gen || r.To != s.made+1 {
				s.fail(t, "%s failed saying generation %d to %d, the model says %d to %d", what, r.From, r.To, s.gen, s.made+1)
			}
			s.made = r.To
		}
		s.note("refused: %s", firstLine(resp.Error))
		return
	}
	r := resp.Rollout
	if r.To != s.made+1 || r.Slots != s.workers {
		s.fail(t, "%s answered %+v, want generation %d in %d slots", what, r, s.made+1, s.workers)
	}
	s.advance(s.w.want(s.current, s.epoch))
	s.note("generation %d, %s", s.gen, s.serving.release)
}

// advance is a new generation that serves want.
func (s *soak) advance(want served) {
	if want != s.serving {
		prev := s.serving
		s.previous = &prev
	}
	s.made++
	s.gen = s.made
	s.serving = want
}

func (s *soak) reload(ctx context.Context, t *testing.T) {
	resp, err := s.call(ctx, t, control.Request{Command: control.CmdReload})
	s.rolledOut(t, "reload", resp, err)
}

// reloadWhileFlipping reloads while current flips between two releases in
// a tight loop: the generation must be one of them, whole.
func (s *soak) reloadWhileFlipping(ctx context.Context, t *testing.T) {
	a := soakReleases[s.rnd.IntN(len(soakReleases))]
	b := soakReleases[(slices.Index(soakReleases, a)+1+s.rnd.IntN(len(soakReleases)-1))%len(soakReleases)]
	if err := testsd.Point(s.w.root, a); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	type flipped struct {
		n   int
		err error
	}
	flips := make(chan flipped)
	go func() {
		n := 0
		for {
			select {
			case <-done:
				flips <- flipped{n, nil}
				return
			default:
			}
			id := a
			if n%2 == 1 {
				id = b
			}
			if err := testsd.Point(s.w.root, id); err != nil {
				<-done
				flips <- flipped{n, err}
				return
			}
			n++
		}
	}()
	resp, err := control.Call(ctx, s.ctl, control.Request{Command: control.CmdReload})
	close(done)
	f := <-flips
	if f.err != nil {
		s.fail(t, "flipping current: %v", f.err)
	}
	n := f.n
	if err := testsd.Point(s.w.root, b); err != nil {
		t.Fatal(err)
	}
	s.current = b
	if s.envBad {
		s.current = "vbad" // only for rolledOut's judgement: refused either way
		s.rolledOut(t, "reload while current flips", resp, err)
		s.current = b
		return
	}
	if err != nil {
		s.fail(t, "reload while current flips between %s and %s: %v", a, b, err)
	}
	// Which of the two it took is the race's; that it took one whole is
	// the promise. The workers' answers say which.
	if resp.Rollout.To != s.made+1 {
		s.fail(t, "reload while current flips answered %+v, want generation %d", resp.Rollout, s.made+1)
	}
	got := s.answer(ctx, t, resp.Rollout.To)
	if got.release != a && got.release != b {
		s.fail(t, "reload while current flipped between %s and %s serves %+v", a, b, got)
	}
	s.advance(s.w.want(got.release, s.epoch))
	s.note("%d flips between %s and %s; generation %d, %s", n, a, b, s.gen, s.serving.release)
}

// answer is what the first worker of gen that answers says.
func (s *soak) answer(ctx context.Context, t *testing.T, gen int) served {
	t.Helper()
	for range 200 {
		a := s.get(ctx, t)
		if a.gen == gen {
			return a.served
		}
	}
	s.fail(t, "no worker of generation %d answered in 200 requests", gen)
	return served{}
}

func (s *soak) flip(ctx context.Context, t *testing.T) {
	id := soakReleases[s.rnd.IntN(len(soakReleases))]
	if s.rnd.IntN(5) == 0 {
		id = "vbad"
	}
	if err := testsd.Point(s.w.root, id); err != nil {
		t.Fatal(err)
	}
	s.current = id
	s.note("current -> %s", id)
}

func (s *soak) editEnv(ctx context.Context, t *testing.T) {
	s.epoch++
	text := fmt.Sprintf("# edited\nSOAK_EPOCH=%d\n", s.epoch)
	s.envBad = s.rnd.IntN(5) == 0
	if s.envBad {
		text += "this line is no assignment\n"
	}
	tmp := filepath.Join(s.w.root, "shared", "soak.env.new")
	writeFile(t, tmp, text)
	if err := os.Rename(tmp, filepath.Join(s.w.root, "shared", "soak.env")); err != nil {
		t.Fatal(err)
	}
	s.note("epoch %d, broken %v", s.epoch, s.envBad)
}

func (s *soak) scale(ctx context.Context, t *testing.T) {
	n := 2 + s.rnd.IntN(3)
	s.floor.Store(int64(min(n, s.workers)))
	resp, err := s.call(ctx, t, control.Request{Command: control.CmdScale, Workers: n})
	if err != nil {
		s.fail(t, "scale to %d: %v", n, err)
	}
	if r := resp.Rollout; r.Workers != n || r.WorkersFrom != s.workers {
		s.fail(t, "scale to %d from %d answered %+v", n, s.workers, r)
	}
	// A scale makes a generation of the serving one's settings.
	s.gen, s.workers = resp.Rollout.To, n
	s.floor.Store(int64(n))
	s.note("%d workers, generation %d", n, s.gen)
}

func (s *soak) recycle(ctx context.Context, t *testing.T) {
	req := control.Request{Command: control.CmdRecycle, Slot: s.rnd.IntN(s.workers)}
	if s.rnd.IntN(3) == 0 {
		req.Slot, req.All = 0, true
	}
	resp, err := s.call(ctx, t, req)
	if err != nil {
		s.fail(t, "recycle %+v: %v", req, err)
	}
	want := 1
	if req.All {
		want = s.workers
	}
	if r := resp.Rollout; len(r.Replaced) != want || r.To != s.gen {
		s.fail(t, "recycle %+v answered %+v, want %d replaced in generation %d", req, r, want, s.gen)
	}
	s.note("slot %d all %v", req.Slot, req.All)
}

func (s *soak) rollback(ctx context.Context, t *testing.T) {
	resp, err := s.call(ctx, t, control.Request{Command: control.CmdRollback})
	switch {
	case s.previous == nil && err == nil:
		s.fail(t, "rollback with no previous generation answered ok: %+v", resp.Rollout)
	case s.previous == nil:
		s.note("refused: %s", firstLine(resp.Error))
		return
	case err != nil:
		s.fail(t, "rollback to %+v: %v", *s.previous, err)
	}
	if r := resp.Rollout; r.To != s.made+1 {
		s.fail(t, "rollback answered %+v, want generation %d", r, s.made+1)
	}
	s.advance(*s.previous)
	s.note("generation %d, %s", s.gen, s.serving.release)
}

// kill stops a worker behind baton's back, gracefully (SIGTERM: it
// finishes its requests), and waits until its slot serves again.
func (s *soak) kill(ctx context.Context, t *testing.T) {
	st := testsd.Status(ctx, t, s.ctl)
	victim := st.Workers[s.rnd.IntN(len(st.Workers))]
	s.floor.Store(int64(s.workers - 1))
	if err := unix.Kill(victim.PID, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testsd.WaitStatus(ctx, t, s.ctl, fmt.Sprintf("slot %d restarted", victim.Slot), func(st control.Status) bool {
		w := st.Workers[victim.Slot]
		return w.PID != victim.PID && w.State == "ready" && st.Ready == s.workers
	})
	s.floor.Store(int64(s.workers))
	s.note("slot %d pid %d", victim.Slot, victim.PID)
}

// nextBinary puts the other build of baton where it runs from, as a
// package upgrade does.
func (s *soak) nextBinary(t *testing.T) string {
	next, src := "v2", bins.BatonV2
	if s.version == "v2" {
		next, src = "dev", bins.Baton
	}
	copyBinary(t, src, s.w.batonAt)
	return next
}

func (s *soak) upgrade(ctx context.Context, t *testing.T) {
	next := s.nextBinary(t)
	resp, err := s.call(ctx, t, control.Request{Command: control.CmdUpgrade})
	if err != nil {
		s.fail(t, "upgrade: %v", err)
	}
	if u := resp.Upgrade; u.Version != next || u.PID != s.svc.PID() || u.Workers < s.workers {
		s.fail(t, "upgrade answered %+v, want version %s, pid %d, %d workers or more", u, next, s.svc.PID(), s.workers)
	}
	s.version = next
	s.note("to %s", next)
}

func (s *soak) upgradeBySignal(ctx context.Context, t *testing.T) {
	next := s.nextBinary(t)
	s.svc.Signal(t, unix.SIGUSR2)
	testsd.WaitStatus(ctx, t, s.ctl, "the new image", func(st control.Status) bool { return st.Version == next })
	s.version = next
	s.note("to %s", next)
}

// hangup is systemctl reload of a Type=notify-reload unit: a rollout
// whose result only the status tells.
func (s *soak) hangup(ctx context.Context, t *testing.T) {
	before := testsd.Status(ctx, t, s.ctl).LastRollout
	s.svc.Signal(t, unix.SIGHUP)
	st := testsd.WaitStatus(ctx, t, s.ctl, "the rollout's end", func(st control.Status) bool {
		return st.Rollout == nil && st.LastRollout != nil && (before == nil || !st.LastRollout.Started.Equal(before.Started))
	})
	var resp control.Response
	var err error
	resp.Rollout = st.LastRollout
	if st.LastRollout.State != "ok" {
		resp.Error = st.LastRollout.Error
		err = errors.New(st.LastRollout.Error)
	}
	s.rolledOut(t, "SIGHUP", resp, err)
}

// soakAnswer is one worker's answer.
type soakAnswer struct {
	slot, pid, gen int
	served
}

var soakAnswerRE = regexp.MustCompile(`^hello from slot (\d+) pid (\d+) generation (\d+) release (\S+) dir (\S+) env (\S+) epoch (\S+)\n$`)

func (s *soak) get(ctx context.Context, t *testing.T) soakAnswer {
	t.Helper()
	body, err := testsd.Get(ctx, s.url)
	if err != nil {
		s.fail(t, "GET: %v", err)
	}
	m := soakAnswerRE.FindStringSubmatch(body)
	if m == nil {
		s.fail(t, "answer %q", body)
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	return soakAnswer{n(1), n(2), n(3), served{m[4], m[5], m[6], m[7]}}
}

// check is what must hold after every step.
func (s *soak) check(ctx context.Context, t *testing.T) {
	t.Helper()
	if f := s.load.Failures(); len(f) > 0 {
		s.fail(t, "%d requests failed, the first at %s: %s", len(f), f[0].Start.Format(time.TimeOnly+".000"), f[0].Err)
	}
	s.mu.Lock()
	below := s.belowMsg
	s.mu.Unlock()
	if below != "" {
		s.fail(t, "ready workers fell below the floor: %s", below)
	}
	st := testsd.WaitStatus(ctx, t, s.ctl, "every slot ready, no rollout", func(st control.Status) bool {
		return st.Rollout == nil && st.Ready == st.Slots && len(st.Incoming) == 0
	})
	if st.Generation != s.gen || st.Slots != s.workers || st.Version != s.version {
		s.fail(t, "status says generation %d, %d slots, version %s; the model %d, %d, %s", st.Generation, st.Slots, st.Version, s.gen, s.workers, s.version)
	}
	for _, g := range st.Generations {
		if g.Role == "serving" && g.Directory != s.serving.dir {
			s.fail(t, "status says generation %d runs in %s, the model %s", g.Generation, g.Directory, s.serving.dir)
		}
	}
	serving, draining := map[int]int{}, map[int]bool{}
	for _, w := range st.Workers {
		serving[w.PID] = w.Slot
	}
	for _, w := range st.Draining {
		draining[w.PID] = true
	}
	heard := map[int]bool{}
	for tries := 0; len(heard) < len(st.Workers); tries++ {
		if tries == 2000 {
			s.fail(t, "%d of %d slots answered in 2000 requests", len(heard), len(st.Workers))
		}
		a := s.get(ctx, t)
		slot, ok := serving[a.pid]
		switch {
		case draining[a.pid]:
			continue // told to drain a moment ago, still taking a connection
		case !ok:
			// Gone from the status since: a worker that drained and was
			// listed in neither, or one of a step that ended just now.
			if slices.ContainsFunc(testsd.Status(ctx, t, s.ctl).Draining, func(w control.Worker) bool { return w.PID == a.pid }) {
				continue
			}
			s.fail(t, "pid %d answered %+v, and baton lists it neither as serving nor as draining", a.pid, a)
		case slot != a.slot:
			s.fail(t, "pid %d answers as slot %d, baton lists it in slot %d", a.pid, a.slot, slot)
		case a.served != s.serving:
			s.fail(t, "slot %d (pid %d, generation %d) serves %+v, want %+v", a.slot, a.pid, a.gen, a.served, s.serving)
		}
		if prev, ok := s.seen[a.gen]; ok && prev != a.served {
			s.fail(t, "generation %d answers with %+v and with %+v", a.gen, prev, a.served)
		}
		s.seen[a.gen] = a.served
		heard[a.slot] = true
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// point moves root/current to releases/id (testsd.Point).
func point(t *testing.T, root, id string) {
	t.Helper()
	if err := testsd.Point(root, id); err != nil {
		t.Fatal(err)
	}
}

// copyBinary puts a copy of src at dst through a rename, as dpkg does: the
// running image's file is never written.
func copyBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
