package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/batonsd/baton/internal/control"
	"github.com/batonsd/baton/internal/rig"
)

// Footprint is baton's own cost with n workers (sleep, ready at exec, so
// only baton's share shows).
type Footprint struct {
	Workers       int     `json:"workers"`
	RSSIdleKB     int     `json:"rss_idle_kb"`
	CPUIdle       float64 `json:"cpu_idle"` // fraction of one core
	RSSRollingKB  int     `json:"rss_rolling_kb"`
	CPURolling    float64 `json:"cpu_rolling"`
	RolloutMean   time.Duration
	FDsAfter1     int `json:"fds_after_1_rollout"`
	FDsAfterN     int `json:"fds_after_n_rollouts"`
	RSSAfter1KB   int `json:"rss_after_1_rollout_kb"`
	RSSAfterNKB   int `json:"rss_after_n_rollouts_kb"`
	Rollouts      int `json:"rollouts"`
	ZombiesAfterN int `json:"zombies_after_n"`
	// Scraped: baton ran with --metrics and its /metrics was scraped every
	// scrapeEvery throughout, Scrapes times, each taking ScrapeMean.
	Scraped    bool          `json:"scraped"`
	Scrapes    int           `json:"scrapes,omitempty"`
	ScrapeMean time.Duration `json:"scrape_mean,omitempty"`
}

// scrapeEvery is how often a scraped footprint run reads /metrics: far
// more often than Prometheus would (15 s by default), to show the cost.
const scrapeEvery = 250 * time.Millisecond

// MeasureFootprint runs baton with n workers: idle for a while, then
// rollouts back to back, reading its RSS, CPU and fds from /proc. With
// scraped, baton serves --metrics and a scraper reads it throughout.
func MeasureFootprint(ctx context.Context, p Params, n, rollouts int, idle time.Duration, scraped bool) (Footprint, error) {
	dir, err := os.MkdirTemp("", "bf")
	if err != nil {
		return Footprint{}, err
	}
	defer os.RemoveAll(dir)
	ctl := filepath.Join(dir, "c.sock")
	args := []string{"run", "--workers", strconv.Itoa(n), "--ready", "exec", "--max-surge", strconv.Itoa(max(1, n/8)),
		"--listen", "app=" + p.addr(), "--control", ctl, "--log", "inherit"}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", p.Port+1)
	if scraped {
		args = append(args, "--metrics", metricsAddr)
	}
	cmd := exec.Command(p.Baton, append(args, "--", "sleep", "3600")...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return Footprint{}, err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitReady(startCtx, ctl, n); err != nil {
		return Footprint{}, err
	}
	pid := cmd.Process.Pid
	f := Footprint{Workers: n, Rollouts: rollouts, Scraped: scraped}
	var scrapes *scraper
	if scraped {
		scrapes = startScraper("http://" + metricsAddr + "/metrics")
		defer scrapes.stop()
	}
	cpu0 := cpuTime(pid)
	time.Sleep(idle)
	f.CPUIdle = (cpuTime(pid) - cpu0).Seconds() / idle.Seconds()
	f.RSSIdleKB = rssKB(pid)

	reload := func() error {
		_, err := control.Call(ctx, ctl, control.Request{Command: control.CmdReload})
		return err
	}
	if err := reload(); err != nil {
		return f, err
	}
	// Old workers drain in the background, holding their pipes and notify
	// sockets: count once they are gone.
	if err := waitDrained(startCtx, ctl); err != nil {
		return f, err
	}
	f.FDsAfter1, f.RSSAfter1KB = settledFDs(pid), rssKB(pid)
	cpu0, t0 := cpuTime(pid), time.Now()
	for range rollouts - 1 {
		if err := reload(); err != nil {
			return f, err
		}
	}
	took := time.Since(t0)
	f.CPURolling = (cpuTime(pid) - cpu0).Seconds() / took.Seconds()
	f.RolloutMean = took / time.Duration(max(rollouts-1, 1))
	f.RSSRollingKB = rssKB(pid)
	if err := waitDrained(startCtx, ctl); err != nil {
		return f, err
	}
	f.FDsAfterN, f.RSSAfterNKB = settledFDs(pid), rssKB(pid)
	f.ZombiesAfterN = zombies(pid)
	if scrapes != nil {
		if err := scrapes.stop(); err != nil {
			return f, fmt.Errorf("scrape /metrics: %w", err)
		}
		f.Scrapes, f.ScrapeMean = scrapes.n, scrapes.mean()
	}
	return f, nil
}

// scraper reads a URL every scrapeEvery until stopped.
type scraper struct {
	stopc chan struct{}
	once  sync.Once
	done  chan struct{}
	n     int
	took  time.Duration
	err   error
}

func startScraper(url string) *scraper {
	s := &scraper{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(scrapeEvery)
		defer t.Stop()
		for first := true; ; first = false {
			if !first {
				select {
				case <-s.stopc:
					return
				case <-t.C:
				}
			}
			t0 := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := rig.Get(ctx, url)
			cancel()
			if err != nil {
				s.err = err
				continue
			}
			s.n++
			s.took += time.Since(t0)
		}
	}()
	return s
}

// stop ends the scraping (again: nothing) and returns the last error it
// met.
func (s *scraper) stop() error {
	s.once.Do(func() { close(s.stopc) })
	<-s.done
	return s.err
}

func (s *scraper) mean() time.Duration {
	if s.n == 0 {
		return 0
	}
	return s.took / time.Duration(s.n)
}

// waitDrained waits until no worker is draining any more.
func waitDrained(ctx context.Context, ctl string) error {
	for {
		resp, err := control.Call(ctx, ctl, control.Request{Command: control.CmdStatus})
		if err == nil && len(resp.Status.Draining) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("workers still draining: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func rssKB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

// cpuTime is pid's user+system time (clock ticks of 1/100 s on Linux).
func cpuTime(pid int) time.Duration {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// settledFDs counts pid's fds once the count has held for 150 ms: an exited
// worker's output pipes close a moment after it is reaped, when their
// readers see EOF.
func settledFDs(pid int) int {
	n := fds(pid)
	for same, deadline := 0, time.Now().Add(3*time.Second); same < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if m := fds(pid); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

func fds(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func zombies(ppid int) int {
	_, n := rig.ChildrenOf(ppid)
	return n
}

// FootprintTable writes the footprints as a markdown table.
func FootprintTable(w io.Writer, fs []Footprint) {
	fmt.Fprintln(w, "| workers | RSS idle | CPU idle | RSS rolling | CPU rolling | rollout | fds after 1 / after N | RSS after 1 / after N | zombies |")
	fmt.Fprintln(w, "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
	for _, f := range fs {
		workers := strconv.Itoa(f.Workers)
		if f.Scraped {
			workers += fmt.Sprintf(", --metrics scraped every %s (%d scrapes of %s)", scrapeEvery, f.Scrapes, f.ScrapeMean.Round(100*time.Microsecond))
		}
		fmt.Fprintf(w, "| %s | %.1f MB | %.1f%% | %.1f MB | %.1f%% | %s | %d / %d (N=%d) | %.1f / %.1f MB | %d |\n",
			workers, float64(f.RSSIdleKB)/1024, f.CPUIdle*100, float64(f.RSSRollingKB)/1024, f.CPURolling*100,
			f.RolloutMean.Round(time.Millisecond), f.FDsAfter1, f.FDsAfterN, f.Rollouts, float64(f.RSSAfter1KB)/1024, float64(f.RSSAfterNKB)/1024, f.ZombiesAfterN)
	}
}

// usageWatch samples a process's RSS every 100 ms and its CPU time.
type usageWatch struct {
	pid    int
	start  time.Time
	cpu0   time.Duration
	stopc  chan struct{}
	done   chan struct{}
	peakKB int
}

func watchUsage(pid int) *usageWatch {
	u := &usageWatch{pid: pid, start: time.Now(), cpu0: cpuTime(pid), stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(u.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			u.peakKB = max(u.peakKB, rssKB(pid))
			select {
			case <-u.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return u
}

// stop returns the peak RSS and the CPU used as a share of one core.
func (u *usageWatch) stop() (peakKB int, cpu float64) {
	used, wall := cpuTime(u.pid)-u.cpu0, time.Since(u.start)
	close(u.stopc)
	<-u.done
	return u.peakKB, used.Seconds() / wall.Seconds()
}
