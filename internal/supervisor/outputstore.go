package supervisor

// Workers' output pipes in systemd's FD store. A worker's stdout and stderr
// are pipes whose read ends baton holds; when baton died (kill -9, the OOM
// killer), the pipes had no reader left, and the first line a draining
// worker wrote killed it with SIGPIPE (a Go program cannot ignore SIGPIPE
// on fds 1 and 2), dropping the requests it was finishing. So each read
// end also goes to the FD store (FDSTORE=1, FDPOLL=0), named after the
// worker: systemd's copy keeps the pipe open while no baton runs. The
// restarted baton gets them back in LISTEN_FDS, reads what the old workers
// wrote until they exited, logs it with their slot, generation and pid, and
// removes them from the store; while baton lives, a worker's pipes are
// removed once its output has been read to the end.

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/batonsd/baton/internal/worker"
	"golang.org/x/sys/unix"
)

// outputPrefix starts the FD-store name of a worker's output pipe:
// baton-out.SLOT.GEN.PID.STREAM. Not "baton.", which is the listeners'.
const outputPrefix = "baton-out."

func outputName(w *proc, stream worker.Stream) string {
	return fmt.Sprintf("%s%d.%d.%d.%s", outputPrefix, w.slot.Index, w.spec.gen, w.pid, stream)
}

// parseOutputName reads a name outputName made.
func parseOutputName(name string) (slot, gen, pid int, stream worker.Stream, ok bool) {
	rest, found := strings.CutPrefix(name, outputPrefix)
	parts := strings.Split(rest, ".")
	if !found || len(parts) != 4 {
		return 0, 0, 0, "", false
	}
	var nums [3]int
	for i := range nums {
		n, err := strconv.Atoi(parts[i])
		if err != nil || n < 0 {
			return 0, 0, 0, "", false
		}
		nums[i] = n
	}
	switch s := worker.Stream(parts[3]); s {
	case worker.Stdout, worker.Stderr:
		return nums[0], nums[1], nums[2], s, true
	}
	return 0, 0, 0, "", false
}

// storeOutput puts a new worker's output pipes in the FD store.
func (s *Supervisor) storeOutput(w *proc) {
	if s.sd == nil {
		return
	}
	w.p.OutputFDs(func(stream worker.Stream, fd int) {
		msg := fmt.Sprintf("FDSTORE=1\nFDNAME=%s\nFDPOLL=0", outputName(w, stream))
		if err := s.sd.SendFDs(msg, fd); err != nil {
			s.log.Warn("FD store: worker output not stored", "slot", w.slot.Index, "pid", w.pid, "err", err)
		}
	})
}

// unstoreOutput removes an exited worker's pipes from the FD store once its
// output has been read to the end. It may run off the loop: the notify
// client is safe for concurrent use.
func (s *Supervisor) unstoreOutput(w *proc) {
	if s.sd == nil {
		return
	}
	for _, stream := range w.p.OutputStreams() {
		s.removeStored(outputName(w, stream))
	}
}

func (s *Supervisor) removeStored(name string) {
	if err := s.sd.Send("FDSTOREREMOVE=1\nFDNAME=" + name); err != nil {
		s.log.Warn("FD store: remove", "name", name, "err", err)
	}
}

// recoverOutput reads a pipe a previous baton stored for a worker of its
// own: what that worker wrote while no baton ran, until it (and whatever
// it started) has exited. Then it removes the pipe from the store.
func (s *Supervisor) recoverOutput(fd int, name string) {
	slot, gen, pid, stream, ok := parseOutputName(name)
	if !ok || s.cfg.Output == nil {
		if !ok {
			s.log.Warn("FD store: dropping an entry baton does not know", "name", name)
		}
		unix.Close(fd)
		s.removeStored(name)
		return
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), name)
	p := worker.Orphan(pid, slot, gen, s.log)
	s.log.Info("reading the output a worker of the previous baton wrote", "slot", slot, "gen", gen, "pid", pid, "stream", string(stream))
	s.recovering.Go(func() {
		n := p.ReadOutput(f, stream, s.cfg.Output)
		s.log.Info("output of a worker of the previous baton read to its end", "slot", slot, "gen", gen, "pid", pid,
			"stream", string(stream), "lines", n)
		s.removeStored(name)
	})
}
