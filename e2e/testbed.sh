#!/bin/bash
# Borrowed from the project's systemd testbed notes, with fixes marked where
# they are.
# testbed.sh - run a real systemd (PID 1) in a systemd-nspawn container on a host
# whose own PID 1 is NOT systemd (CI VMs, sandboxes, docker-less boxes).
#
# Needs root and: apt-get install --no-install-recommends systemd-container mmdebstrap
# (fix: mmdebstrap, not debootstrap, builds the root filesystems: apt resolves the packages and
# downloads them in parallel, and dpkg unpacks each once; half debootstrap's time and CPU.)
#
#   testbed.sh deps                                  apt-get install the host packages
#   testbed.sh build-rootfs DIR [--suite S] [--backports] [--include pkg,pkg]
#   testbed.sh cached-rootfs VERSION                 e2e's rootfs for systemd VERSION, built once: prints its DIR
#   testbed.sh boot DIR NAME [--ephemeral] [--host-net] [--hybrid-cgroup] [--bind SRC[:DST]]...
#                            [--bind-ro SRC[:DST]]... [--nspawn-arg ARG]... [--timeout SEC]
#   testbed.sh exec NAME [--] CMD...                 run CMD inside (nsenter; inherits stdin/stdout)
#   testbed.sh run  NAME [--] CMD...                 run CMD inside as a transient unit (systemd-run --pipe --wait)
#   testbed.sh shell NAME                            interactive bash inside
#   testbed.sh copy-in NAME SRC DST                  copy host file/dir SRC to DST inside the container
#   testbed.sh copy-out NAME SRC DST                 copy container SRC to host DST
#   testbed.sh journal NAME [journalctl args]        journalctl inside (e.g. -u myapp -f)
#   testbed.sh leader NAME                           print host PID of the container's PID 1
#   testbed.sh list                                  list running testbeds
#   testbed.sh stop NAME [--timeout SEC]             clean poweroff (SIGKILL after timeout), cgroup cleanup
#   testbed.sh stop-all
#
# Environment: SDTB_STATE (default /run/sdtb) holds NAME.{pid,leader,dir,log};
# BATON_E2E_CACHE (default /var/cache/baton-e2e) holds cached-rootfs's root filesystems.
set -euo pipefail

STATE=${SDTB_STATE:-/run/sdtb}
CG_PREFIX=sdtb                        # host cgroup subtree used for containers
# the Debian mirror this host's apt already uses (deb822 or one-line sources)
host_mirror() {
  sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1
  # (a missing sources.list must not end the script under set -e)
  awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true
}
MIRROR=${SDTB_MIRROR:-$(host_mirror | head -n1)}
IN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "testbed: $*" >&2; exit 1; }
log() { echo "testbed: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

# ---------------------------------------------------------------- host deps
cmd_deps() {
  need_root
  apt-get -o DPkg::Lock::Timeout=600 update
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
    systemd-container mmdebstrap
}

# ---------------------------------------------------------------- rootfs
# minbase + what a booted systemd and our tests need (dbus is required for systemctl <-> PID1 over the bus,
# libpam-systemd/logind are optional but avoid noise; netcat/curl for socket checks).
# The servers of contrib/ run under the sandbox in e2e: gunicorn, python3-systemd, uvicorn,
# puma (with ruby-sd-notify), uwsgi, lighttpd, twisted (python3-cffi-backend named: debootstrap, which
# built them first, did not resolve the virtual packages python3-cryptography depends on).
PKGS="systemd,systemd-sysv,dbus,libpam-systemd,procps,iproute2,netcat-openbsd,curl,ca-certificates,less,needrestart,gunicorn,python3-systemd,python3-uvicorn,puma,ruby-sd-notify,uwsgi-core,uwsgi-plugin-python3,lighttpd,python3-twisted,python3-cffi-backend"

in_chroot() {  # chroot with a private /proc that vanishes with the namespace (no umount to forget)
  local dir=$1; shift
  unshare --fork --pid --mount --propagation private --mount-proc="$dir/proc" chroot "$dir" "$@"
}

cmd_build_rootfs() {
  need_root
  local dir="" suite=bookworm backports=0 extra=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --suite) suite=$2; shift 2;;
      --backports) backports=1; shift;;
      --include) extra=",$2"; shift 2;;
      -*) die "build-rootfs: unknown option $1";;
      *) dir=$1; shift;;
    esac
  done
  [ -n "$dir" ] || die "usage: build-rootfs DIR [--suite S] [--backports] [--include pkgs]"
  [ -e "$dir/usr/lib/systemd/systemd" ] && die "$dir already contains a rootfs"
  mkdir -p "$dir"
  mmdebstrap --quiet --mode=root --variant=minbase --include="$PKGS$extra" "$suite" "$dir" "$MIRROR"
  # lighttpd's own service would start at boot on port 80: the tests run theirs.
  in_chroot "$dir" systemctl disable lighttpd.service >/dev/null 2>&1 || true
  # What this root filesystem was built with: e2e rebuilds a cached one that differs.
  echo "$PKGS$extra" > "$dir/etc/baton-e2e-packages"
  # apt sources inside (deb822 not needed; plain list is fine)
  echo "deb $MIRROR $suite main" > "$dir/etc/apt/sources.list"
  if [ "$backports" = 1 ]; then
    echo "deb $MIRROR $suite-backports main" > "$dir/etc/apt/sources.list.d/backports.list"
    in_chroot "$dir" apt-get update
    DEBIAN_FRONTEND=noninteractive in_chroot "$dir" apt-get install -y --no-install-recommends \
      -t "$suite-backports" systemd systemd-sysv libpam-systemd libsystemd0 libsystemd-shared 2>&1 | tail -n 5
  fi
  in_chroot "$dir" apt-get clean
  rm -f "$dir/etc/hostname"              # container hostname = machine NAME given to `boot`
  in_chroot "$dir" passwd -qd root          # empty root password (console login if ever needed)
  # units that are useless/noisy in a container
  in_chroot "$dir" systemctl mask --quiet systemd-timesyncd.service getty@tty1.service 2>/dev/null || true
  # persistent journal, so `journalctl -b -1` works across container reboots
  mkdir -p "$dir/var/log/journal"
  log "rootfs ready in $dir ($(du -sh "$dir" | cut -f1)), systemd $(chroot "$dir" /usr/lib/systemd/systemd --version | head -1)"
}

# ---------------------------------------------------------------- e2e's root filesystems
# The root filesystem e2e/ boots for a systemd version, built into $BATON_E2E_CACHE the first
# time, and again when it was built with other packages than this script lists now. The build
# goes into DIR.tmp, renamed to DIR once whole. One build of a VERSION at a time, whoever asks:
# a second caller (the e2e tests, while scripts/test's early build of it runs) waits for the
# first's and takes its result.
cmd_cached_rootfs() {
  need_root
  local version=${1:?usage: cached-rootfs VERSION} extra="" args=()
  case "$version" in
    252) extra=",openssh-server"; args=(--include openssh-server);;  # Debian 12, with sshd for the fleet test's Ansible
    254) args=(--backports);;                                        # bookworm-backports
    # Debian 13, with Node 20, whose ABI the host's unix-dgram build (Node 20) matches: the
    # Node example runs here only.
    257) extra=",nodejs"; args=(--suite trixie --include nodejs);;
    *) die "cached-rootfs: no root filesystem for systemd $version";;
  esac
  local cache=${BATON_E2E_CACHE:-/var/cache/baton-e2e}
  local dir="$cache/rootfs-$version"
  mkdir -p "$cache"
  exec 9>"$dir.lock"
  flock 9
  if [ "$(cat "$dir/etc/baton-e2e-packages" 2>/dev/null)" != "$PKGS$extra" ]; then
    [ -e "$dir" ] && log "rebuilding $dir: its packages changed"
    # A build killed half-way may have left mmdebstrap's mounts (proc, sys, dev) in DIR.tmp.
    findmnt -rno TARGET | { grep -F "$dir.tmp/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$dir.tmp"
    cmd_build_rootfs "$dir.tmp" "${args[@]}" >&2   # stdout says where it is, nothing else
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# ---------------------------------------------------------------- helpers
# (fix: a pid file outlives its nspawn when a run is killed, and PIDs come round again soon on a
# busy host (pid_max 32768 on the project's machines): boot and stop check that the pid is still an
# nspawn before they take it for one, and stop signals nothing else.)
is_nspawn() { [ "$(cat /proc/"$1"/comm 2>/dev/null)" = systemd-nspawn ]; }

leader_of() {   # host PID of container PID 1
  local name=$1
  [ -f "$STATE/$name.leader" ] || die "no running testbed '$name' (no $STATE/$name.leader)"
  local l; l=$(cat "$STATE/$name.leader")
  [ -d "/proc/$l" ] || die "testbed '$name' leader $l is gone"
  echo "$l"
}

cg_roots() {    # host cgroup hierarchies systemd cares about
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    echo /sys/fs/cgroup                                 # pure unified host
  else
    [ -d /sys/fs/cgroup/unified ] && echo /sys/fs/cgroup/unified
    [ -d /sys/fs/cgroup/systemd ] && echo /sys/fs/cgroup/systemd
  fi
  return 0
}

cg_cleanup() {  # remove (empty) per-container cgroups, deepest first; retry while the kernel reaps
  # (The $CG_PREFIX directory itself stays: removing it here could pull it from under another
  # container's boot, between its mkdir -p's two steps. stop-all removes it.)
  local name=$1 r i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    for r in $(cg_roots); do
      [ -d "$r/$CG_PREFIX/$name" ] || continue
      find "$r/$CG_PREFIX/$name" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    local left=0
    for r in $(cg_roots); do [ -d "$r/$CG_PREFIX/$name" ] && left=1; done
    [ $left = 0 ] && return 0
    sleep 0.2
  done
  log "warning: could not remove cgroup $CG_PREFIX/$name (processes left?)"
}

nspawn_exec_in_cgroup() {  # (runs in a subshell) move self into our cgroup, then exec nspawn
  local name=$1; shift
  local r
  for r in $(cg_roots); do
    mkdir -p "$r/$CG_PREFIX/$name"
    echo "$BASHPID" > "$r/$CG_PREFIX/$name/cgroup.procs"
  done
  # New session so terminal signals/hangups never reach nspawn. setsid(1) would *fork* if we are
  # already a process-group leader (caller has job control on) -> then we are detached enough already,
  # and exec'ing directly keeps $! == nspawn's PID either way.
  local pgrp; pgrp=$(sed 's/.*) //' /proc/$BASHPID/stat | cut -d' ' -f3)
  if [ "$pgrp" = "$BASHPID" ]; then exec "$@"; else exec setsid "$@"; fi
}

# ---------------------------------------------------------------- boot
cmd_boot() {
  need_root
  local dir="" name="" ephemeral=0 hostnet=0 timeout=120 binds=() unified=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --ephemeral) ephemeral=1; shift;;
      --host-net) hostnet=1; shift;;
      --hybrid-cgroup) unified=0; shift;;
      --bind) binds+=("--bind=$2"); shift 2;;
      --bind-ro) binds+=("--bind-ro=$2"); shift 2;;
      --nspawn-arg) binds+=("$2"); shift 2;;
      --timeout) timeout=$2; shift 2;;
      -*) die "boot: unknown option $1";;
      *) if [ -z "$dir" ]; then dir=$1; elif [ -z "$name" ]; then name=$1; else die "boot: extra arg $1"; fi; shift;;
    esac
  done
  [ -n "$dir" ] && [ -n "$name" ] || die "usage: boot DIR NAME [--ephemeral] [--host-net] [--hybrid-cgroup] [--bind[-ro] SRC[:DST]] [--nspawn-arg ARG] [--timeout SEC]"
  [ -x "$dir/usr/lib/systemd/systemd" ] || die "$dir has no /usr/lib/systemd/systemd (build-rootfs first)"
  dir=$(realpath "$dir")
  mkdir -p "$STATE"
  if [ -f "$STATE/$name.pid" ] && is_nspawn "$(cat "$STATE/$name.pid")"; then
    die "testbed '$name' already running (pid $(cat "$STATE/$name.pid"))"
  fi
  cg_cleanup "$name"

  local args=(
    --quiet
    --directory="$dir" --machine="$name" --hostname="$name"
    --boot                      # run /sbin/init = systemd as PID 1
    --register=no               # no systemd-machined on the host
    --keep-unit                 # do not ask host systemd for a scope (there is none) ...
                                # ... nspawn uses the cgroup we put it in instead
    --link-journal=no           # keep the journal inside the container
    --console=read-only         # container console output -> $STATE/$name.log
    --resolv-conf=off --timezone=off
  )
  [ "$hostnet" = 1 ] || args+=(--private-network)   # own netns with only 'lo': ports never clash with the host
  [ "$ephemeral" = 1 ] && args+=(--volatile=overlay)  # writes go to a tmpfs overlay, DIR stays pristine
  args+=("${binds[@]}")

  # Give the container a pure cgroup2 /sys/fs/cgroup (a delegated subtree of the host's cgroup2 mount).
  # Works for systemd 252..257; systemd >= 256 deprecates (and 258 drops) v1/hybrid inside the container.
  if [ "$unified" = 1 ]; then export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1; else export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0; fi

  local t0; t0=$(date +%s.%N)
  # Detach fully: new session, no stdin, console to log file.
  ( nspawn_exec_in_cgroup "$name" systemd-nspawn "${args[@]}" ) \
      </dev/null >"$STATE/$name.log" 2>&1 &
  local npid=$!
  echo "$npid" > "$STATE/$name.pid"
  echo "$dir" > "$STATE/$name.dir"

  # Find the container's PID 1 (direct child of nspawn whose comm is systemd).
  local leader="" i
  for i in $(seq 1 $((timeout * 10))); do
    kill -0 "$npid" 2>/dev/null || { cat "$STATE/$name.log" >&2; die "systemd-nspawn exited during boot"; }
    for c in $(cat /proc/"$npid"/task/*/children 2>/dev/null); do
      if [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then leader=$c; break; fi
    done
    [ -n "$leader" ] && break
    sleep 0.1
  done
  [ -n "$leader" ] || die "could not find container PID 1"
  echo "$leader" > "$STATE/$name.leader"

  # Wait until the container's systemd has finished booting.
  local st=""
  for i in $(seq 1 $((timeout * 5))); do
    st=$(nsenter -t "$leader" -a -r -w env -i PATH=$IN_PATH systemctl is-system-running 2>/dev/null || true)
    case "$st" in running|degraded) break;; esac
    kill -0 "$npid" 2>/dev/null || { cat "$STATE/$name.log" >&2; die "systemd-nspawn exited during boot"; }
    sleep 0.2
  done
  local t1; t1=$(date +%s.%N)
  case "$st" in
    running) log "'$name' up: state=running leader=$leader nspawn=$npid in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")s";;
    degraded) log "'$name' up but DEGRADED (leader=$leader):";
              nsenter -t "$leader" -a -r -w env -i PATH=$IN_PATH systemctl --failed --no-pager >&2 || true;;
    *) die "'$name' did not reach running within ${timeout}s (state '$st'); see $STATE/$name.log";;
  esac
}

# ---------------------------------------------------------------- exec & co
in_ns() {   # in_ns NAME cmd...   run cmd inside all namespaces of the container, clean env
  local name=$1; shift
  local l; l=$(leader_of "$name")
  exec nsenter -t "$l" -a -r -w -- env -i PATH=$IN_PATH HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" \
       SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

cmd_exec() {
  local name=${1:?usage: exec NAME [--] CMD...}; shift
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "exec: no command"
  in_ns "$name" "$@"
}

cmd_run() {
  local name=${1:?usage: run NAME [--] CMD...}; shift
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "run: no command"
  in_ns "$name" systemd-run --quiet --wait --pipe --collect --service-type=exec "$@"
}

cmd_shell() { in_ns "${1:?usage: shell NAME}" bash -l; }

cmd_copy_in() {
  local name=${1:?usage: copy-in NAME SRC DST} src=${2:?SRC} dst=${3:?DST}
  local l; l=$(leader_of "$name")
  # /proc/PID/root is the container's root (its mount namespace, including tmpfs/overlay mounts)
  local droot="/proc/$l/root"
  if [ -d "$src" ]; then
    mkdir -p "$droot$dst"
    tar -C "$src" -cf - . | tar -C "$droot$dst" -xf -
  else
    case "$dst" in */) mkdir -p "$droot$dst";; esac
    cp -a "$src" "$droot$dst"
  fi
}

cmd_copy_out() {
  local name=${1:?usage: copy-out NAME SRC DST} src=${2:?SRC} dst=${3:?DST}
  local l; l=$(leader_of "$name")
  cp -a "/proc/$l/root$src" "$dst"
}

cmd_journal() { local name=${1:?usage: journal NAME [args]}; shift; in_ns "$name" journalctl --no-pager "$@"; }

cmd_leader() { leader_of "${1:?usage: leader NAME}"; }

cmd_list() {
  local f n
  for f in "$STATE"/*.pid; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .pid)
    if is_nspawn "$(cat "$f")"; then
      echo "$n nspawn=$(cat "$f") leader=$(cat "$STATE/$n.leader" 2>/dev/null) dir=$(cat "$STATE/$n.dir" 2>/dev/null)"
    else
      echo "$n (dead)"
    fi
  done
}

# ---------------------------------------------------------------- stop
cmd_stop() {
  need_root
  local name="" timeout=30
  while [ $# -gt 0 ]; do
    case "$1" in --timeout) timeout=$2; shift 2;; *) name=$1; shift;; esac
  done
  [ -n "$name" ] || die "usage: stop NAME [--timeout SEC]"
  local npid="" leader=""
  [ -f "$STATE/$name.pid" ] && npid=$(cat "$STATE/$name.pid")
  [ -f "$STATE/$name.leader" ] && leader=$(cat "$STATE/$name.leader")
  if [ -n "$npid" ] && is_nspawn "$npid"; then
    # SIGTERM to nspawn = ask the container's systemd for a clean poweroff (SIGRTMIN+3).
    kill -TERM "$npid"
    local i
    for i in $(seq 1 $((timeout * 10))); do is_nspawn "$npid" || break; sleep 0.1; done
    if is_nspawn "$npid"; then
      log "'$name' did not power off in ${timeout}s, killing nspawn $npid"
      kill -KILL "$npid" 2>/dev/null || true   # kills the whole container pid namespace with it
      for i in $(seq 1 50); do is_nspawn "$npid" || break; sleep 0.1; done
    fi
  fi
  # belt and braces: the container's PID 1 must not outlive nspawn (pid + comm check against PID reuse)
  if [ -n "$leader" ] && [ "$(cat /proc/"$leader"/comm 2>/dev/null)" = systemd ] && \
     [ "$(readlink /proc/"$leader"/ns/pid)" != "$(readlink /proc/self/ns/pid)" ]; then
    kill -KILL "$leader" 2>/dev/null || true
  fi
  cg_cleanup "$name"
  rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null || true   # nspawn won't rm_rf a non-tmpfs /run
  rm -f "$STATE/$name.pid" "$STATE/$name.leader" "$STATE/$name.dir"
  log "'$name' stopped (console log kept in $STATE/$name.log)"
}

cmd_stop_all() {
  local f r
  for f in "$STATE"/*.pid; do [ -e "$f" ] && cmd_stop "$(basename "$f" .pid)"; done
  for r in $(cg_roots); do rmdir "$r/$CG_PREFIX" 2>/dev/null || true; done
  return 0
}

# ---------------------------------------------------------------- main
sub=${1:-help}; shift || true
case "$sub" in
  deps) cmd_deps "$@";;
  build-rootfs) cmd_build_rootfs "$@";;
  cached-rootfs) cmd_cached_rootfs "$@";;
  boot) cmd_boot "$@";;
  exec) cmd_exec "$@";;
  run) cmd_run "$@";;
  shell) cmd_shell "$@";;
  copy-in) cmd_copy_in "$@";;
  copy-out) cmd_copy_out "$@";;
  journal) cmd_journal "$@";;
  leader) cmd_leader "$@";;
  list) cmd_list;;
  stop) cmd_stop "$@";;
  stop-all) cmd_stop_all;;
  help|-h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0";;
  *) die "unknown subcommand '$sub' (try help)";;
esac
