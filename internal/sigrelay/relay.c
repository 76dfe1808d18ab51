// Signals across an in-place re-exec, the part that must run outside Go.
// See relay.go for the whole design; this file has the recorder (a signal
// handler that writes the signal's number into the relay pipe), the
// blocking of signals on every thread, and the constructor and sigaction
// guard that keep the recorder in place in a re-executed image from before
// the Go runtime starts until the supervisor has asked for the signals.
// Which signals it holds is Go's list (relay.go's Held): the old image
// passes it to batonRelayCatch, and names it in the new image's
// environment, where the constructor reads it.

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

static volatile int relayFD = -1;

// held are the signals the recorder is for; saved holds, by signal number,
// the handlers it replaced (the Go runtime's), swapped says which are
// replaced now.
static sigset_t held;
static struct sigaction saved[NSIG];
static int swapped[NSIG];

static int isHeld(int sig) { return sig > 0 && sig < NSIG && sigismember(&held, sig) == 1; }

// The real sigaction: this file defines sigaction itself (below).
extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

static void record(int sig) {
	int fd = relayFD, e = errno;
	unsigned char b = (unsigned char)sig;
	if (fd >= 0)
		(void)!write(fd, &b, 1); // non-blocking: a full pipe drops, never stalls
	errno = e;
}

static void recorder(struct sigaction *sa) {
	memset(sa, 0, sizeof *sa);
	sa->sa_handler = record;
	sigfillset(&sa->sa_mask);
	// SA_ONSTACK: a Go thread runs the handler on its signal stack, not on
	// a goroutine's small one (the runtime's rule for foreign handlers).
	sa->sa_flags = SA_ONSTACK | SA_RESTART;
}

int batonRelayCatch(int fd, const int *sigs, int n) {
	sigemptyset(&held);
	for (int i = 0; i < n; i++)
		if (sigaddset(&held, sigs[i]) != 0)
			return errno;
	struct sigaction sa;
	recorder(&sa);
	relayFD = fd;
	for (int sig = 1; sig < NSIG; sig++) {
		if (!isHeld(sig))
			continue;
		if (__sigaction(sig, &sa, &saved[sig]) != 0)
			return errno;
		swapped[sig] = 1;
	}
	return 0;
}

// handBack reinstalls the handlers the recorder replaced; after it, the
// recorder writes nothing more.
static void handBack(void) {
	for (int sig = 1; sig < NSIG; sig++) {
		if (swapped[sig]) {
			__sigaction(sig, &saved[sig], NULL);
			swapped[sig] = 0;
		}
	}
	relayFD = -1;
}

void batonRelayRelease(void) { handBack(); }

// Blocking the held signals on every thread. The recorder alone is not
// enough in the old image: a thread may take a signal from the kernel and
// be killed by execve (which ends every other thread) before its handler
// runs, and a Go handler that started before the recorder was installed
// may still be on its way to the runtime's queue. With the signals blocked
// on every thread they stay pending for the process, across execve, to the
// new image's recorder. No libc call does this for other threads; each is
// sent broadcastSig, whose handler adds the held signals to the mask the
// thread returns to (a handler's own sigprocmask would be undone on return),
// and a thread runs it only after any handler in progress (the runtime's
// handlers block all signals while they run).
enum { maxThreads = 4096 };
static pid_t signalled[maxThreads]; // the threads sent broadcastSig
static volatile int nsignalled, acked[maxThreads];
static int blocking;

static void onBroadcast(int sig, siginfo_t *si, void *ctx) {
	(void)sig;
	(void)si;
	ucontext_t *uc = ctx;
	for (int sig = 1; sig < NSIG; sig++) {
		if (!isHeld(sig))
			continue;
		if (blocking)
			sigaddset(&uc->uc_sigmask, sig);
		else
			sigdelset(&uc->uc_sigmask, sig);
	}
	pid_t self = (pid_t)syscall(SYS_gettid);
	for (int i = 0; i < nsignalled; i++)
		if (signalled[i] == self)
			acked[i] = 1;
}

int batonBroadcastSignal(void) { return SIGRTMIN + 5; }

// signalThreads sends sig to every thread but the caller not signalled yet;
// it returns how many it sent, or -1 with errno set.
static int signalThreads(int sig) {
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return -1;
	pid_t self = (pid_t)syscall(SYS_gettid), pid = getpid();
	int sent = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		pid_t tid = (pid_t)atoi(e->d_name);
		if (tid <= 0 || tid == self)
			continue;
		int seen = 0;
		for (int i = 0; i < nsignalled; i++)
			seen |= signalled[i] == tid;
		if (seen || nsignalled == maxThreads)
			continue;
		acked[nsignalled] = 0;
		signalled[nsignalled] = tid;
		nsignalled++;
		if (syscall(SYS_tgkill, pid, tid, sig) == 0)
			sent++;
		else
			acked[nsignalled - 1] = 1; // gone already
	}
	closedir(d);
	return sent;
}

// waiting says whether a signalled thread that still exists has not run
// the handler yet.
static int waiting(void) {
	char path[64];
	for (int i = 0; i < nsignalled; i++) {
		if (acked[i])
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%d", (int)signalled[i]);
		if (access(path, F_OK) == 0)
			return 1;
		acked[i] = 1; // ended before it ran it
	}
	return 0;
}

int batonRelayAllThreads(int block) {
	int sig = batonBroadcastSignal();
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = onBroadcast;
	sigfillset(&sa.sa_mask);
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	if (sigaction(sig, &sa, &old) != 0)
		return errno;
	blocking = block;
	nsignalled = 0;
	struct timespec start, now, pause = {0, 20000};
	clock_gettime(CLOCK_MONOTONIC, &start);
	int err = 0;
	// Until a pass finds no thread it has not signalled: the Go runtime may
	// start one meanwhile. A thread runs the handler once any handler in
	// progress has returned (the runtime's block every signal while they
	// run); one that ends first needs nothing.
	for (;;) {
		int sent = signalThreads(sig);
		if (sent < 0) {
			err = errno;
			break;
		}
		while (waiting()) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - start.tv_sec >= 2) {
				err = ETIMEDOUT;
				break;
			}
			nanosleep(&pause, NULL);
		}
		if (err != 0 || sent == 0)
			break;
	}
	sigaction(sig, &old, NULL);
	return err;
}

// In a re-executed image. The constructor below runs before the Go
// runtime: it installs the recorder over the held signals Env names, so
// what was pending across execve (and what comes until the supervisor asks
// for signals) is recorded, not fatal: the runtime unblocks SIGHUP, SIGINT
// and SIGTERM before it has handlers. The runtime then installs its own
// handlers, and until signal.Notify asked for the signals its handler kills
// the process for those three. So while the relay guards (from the
// constructor to batonRelayHandBack, called after signal.Notify) the
// runtime's handlers for the held signals are kept aside in saved[], not
// installed. That needs the runtime to set its handlers through libc's
// sigaction, which it does with cgo on linux/386, amd64, arm64, loong64 and
// ppc64le (runtime/cgo's x_cgo_sigaction; elsewhere it makes the system
// call itself, and relay_cgo.go's mode says so): this file defines
// sigaction, and an executable's own definition is the one every call in it
// reaches (libc's is a weak symbol; __sigaction, glibc's real one, is what
// it calls; a libc without that symbol fails to link). Outside the guard,
// and for every other signal, it is libc's.
static volatile int guarding;

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
	if (!guarding || !isHeld(sig))
		return __sigaction(sig, act, old);
	// What the caller believes is installed: its own handler once it set
	// one, the recorder until then.
	if (old != NULL) {
		if (swapped[sig])
			*old = saved[sig];
		else if (__sigaction(sig, NULL, old) != 0)
			return -1;
	}
	if (act != NULL) {
		saved[sig] = *act;
		swapped[sig] = 1;
	}
	return 0;
}

void batonRelayHandBack(void) {
	if (guarding) {
		guarding = 0;
		handBack();
	}
}

// parseEnv reads Env's value, "R,W:SIG,SIG,...": the relay pipe's ends and
// the held signals, into held. It returns the write end, or -1 when v is
// not of that form.
static int parseEnv(const char *v) {
	char *end;
	const char *p = v;
	strtol(p, &end, 10); // the read end: the Go side's
	if (end == p || *end != ',')
		return -1;
	p = end + 1;
	long w = strtol(p, &end, 10);
	if (end == p || *end != ':' || w < 3 || w > INT_MAX)
		return -1;
	sigemptyset(&held);
	for (;;) {
		p = end + 1;
		long sig = strtol(p, &end, 10);
		if (end == p || sig <= 0 || sig >= NSIG || sigaddset(&held, (int)sig) != 0)
			return -1;
		if (*end == '\0')
			return (int)w;
		if (*end != ',')
			return -1;
	}
}

__attribute__((constructor)) static void batonRelayEarly(void) {
	const char *v = getenv(BATON_RELAY_ENV);
	if (v == NULL)
		return;
	int fd = parseEnv(v);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
		sigemptyset(&held);
		return; // not what a baton image passed: leave the signals alone
	}
	relayFD = fd;
	struct sigaction rec;
	recorder(&rec);
	for (int sig = 1; sig < NSIG; sig++)
		if (isHeld(sig))
			__sigaction(sig, &rec, NULL); // not swapped: nothing of Go's to keep yet
	guarding = 1;
}
