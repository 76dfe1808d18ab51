package worker

// ShellShim is the exec shim that baton starts workers through: /bin/sh,
// given the command as its positional parameters. A parent cannot set the
// variables that must name the worker's own pid before the fork, but a shell
// knows its pid ($$) and keeps it across exec:
//
//   - LISTEN_PID, when LISTEN_FDS is set (libsystemd, python-systemd and
//     gunicorn ignore the sockets unless it is their own pid);
//   - WATCHDOG_PID, when WATCHDOG_USEC is set (sd_watchdog_enabled(3)).
//
// It closes the exec pipe (ExecFDEnv) in the exec itself, so EOF reaches
// baton as the command's execve begins. A signal baton was holding can then
// land during that execve; a shell installs no handlers, so the signal is
// not lost the way it was in a Go shim (handled on a thread the execve
// ended): it stays pending and the new program gets it with the default
// action.
//
// A shell rather than `baton shim` (which does the same in Go): starting the
// baton binary cost 10 ms of CPU per worker on the benchmark machine (its
// package initialisation alone, mostly the TOML parser's), dash under 1 ms.
const ShellShim = "/bin/sh"

// ShellShimArgv is ShellShim's argv before the command; "$0" is
// "baton-shim", the name a failed exec is reported under.
var ShellShimArgv = []string{"sh", "-c", shellShimScript, "baton-shim"}

const shellShimScript = `if [ -n "${LISTEN_FDS-}" ]; then LISTEN_PID=$$; export LISTEN_PID; fi
if [ -n "${WATCHDOG_USEC-}" ]; then WATCHDOG_PID=$$; export WATCHDOG_PID; fi
fd=${` + ExecFDEnv + `-}; unset ` + ExecFDEnv + `
case $fd in
'' | *[!0-9]*) exec "$@" ;;
*) eval 'exec "$@"' "$fd>&-" ;;
esac`
