#!/usr/bin/env bash
# What a new user on a fresh Debian 12 goes through: a minimal bookworm root made with
# debootstrap (only git, make, python3 and ca-certificates on top of minbase), a clone of this
# repository in it, and the README's two commands run there as root:
#
#   make caffe          (Debian packages, .venv from Debian's /usr/bin/python3, Caffe's build)
#   make lenet-trim     (Fashion-MNIST, LeNet baseline, the trimming loop)
#
# The base root is built once into the cache (${PYTRIM_CACHE:-~/.cache/pytrim}/fresh-check)
# and copied for every check, so each check starts clean. Nothing of the host's home is
# visible inside (HOME is the chroot's /root): Caffe is built from nothing, with the mirror the
# system's apt sources use (PYTRIM_DEBIAN_MIRROR to override) and PyPI.
# Writes runs/fresh-check/result.json in this repository. Needs root (debootstrap, chroot).
set -euo pipefail

SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
CACHE_ROOT="${PYTRIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pytrim}"
WORK="$CACHE_ROOT/fresh-check"
BASE="$WORK/rootfs-base"
ROOT="$WORK/root"                       # the working root of the current check
SUITE=bookworm
INCLUDE="git,make,python3,ca-certificates"
# Part of the base's completion mark: a base made with another recipe is made again.
BASE_RECIPE="1 minbase $SUITE $INCLUDE"
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

usage() {
  sed -n '2,13p' "$SCRIPT" | sed 's/^# \{0,1\}//'
  cat <<EOF

Usage: bash tools/fresh-check.sh [--worktree] [--only-caffe] [--keep]   (or make fresh-check
FRESH_ARGS="...")

Options:
  --worktree     copy the current working tree (tracked and untracked-but-not-ignored files,
                 uncommitted changes included) over the clone instead of checking HEAD alone
  --only-caffe   stop after \`make caffe\`
  --keep         keep the working root ($ROOT) at the end, for debugging
  -h, --help     this text
Environment: PYTRIM_CACHE (cache root), PYTRIM_DEBIAN_MIRROR (Debian mirror URI).
Logs: $WORK/logs/. The base root is made again after \`rm -rf $BASE*\`.
EOF
}

ARGS=("$@")           # kept for the re-exec below (the loop shifts them away)
WORKTREE=0
ONLY_CAFFE=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --worktree) WORKTREE=1 ;;
    --only-caffe) ONLY_CAFFE=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; echo "fresh-check: error: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

T0=$(date +%s)
say() { printf 'fresh-check: [%s] %s\n' "$(fmt_time $(( $(date +%s) - T0 )))" "$*" >&2; }
die() { echo "fresh-check: error: $*" >&2; exit 1; }
fmt_time() { printf '%dm%02ds' $(( $1 / 60 )) $(( $1 % 60 )); }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mounts, chroot): run it as root"

# Every mount below is made in a private mount namespace of this script's own: they are
# unmounted explicitly on exit (trap), and even if this script is killed outright they vanish
# with the namespace instead of staying behind on the host.
if [ -z "${PYTRIM_FRESH_CHECK_NS:-}" ]; then
  command -v unshare >/dev/null || die "unshare (util-linux) not found"
  PYTRIM_FRESH_CHECK_NS=1 exec unshare --mount --propagation private -- bash "$SCRIPT" "${ARGS[@]}"
fi

# --- cleanup: runs on every exit, success, failure or Ctrl-C ------------------------------
MOUNTS=()             # mount points made by this script, in the order they were made
HEARTBEAT_PID=""
RESULT_WANTED=0       # set once the checks have started: a result.json is written then
STATUS="not started"

# Processes whose root directory is the working root (a daemon a package started, a make
# still running after Ctrl-C): ended by pid before their mounts go.
kill_chroot_procs() {
  local p pids=() root
  [ -d "$ROOT" ] || return 0
  root=$(readlink -f "$ROOT")
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then pids+=("${p#/proc/}"); fi
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  say "ending processes still running in the chroot: ${pids[*]}"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 2
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Mount points at or below $1 (from this namespace's mount table).
mounts_under() {
  local dir; dir=$(readlink -f "$1")
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo
}

unmount_all() {
  local i m
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do
    m="${MOUNTS[$i]}"
    mountpoint -q "$m" 2>/dev/null || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "fresh-check: could not unmount $m" >&2
  done
  MOUNTS=()
  # Anything else left under the root (a mount made by something inside): deepest first.
  [ -d "$ROOT" ] || return 0
  mounts_under "$ROOT" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Removes the working root, but never while anything is mounted below it (rm would go into
# /proc, /sys or /dev otherwise), and never across file systems.
remove_root() {
  [ -e "$ROOT" ] || return 0
  if [ -n "$(mounts_under "$ROOT")" ]; then
    echo "fresh-check: error: still mounted under $ROOT, not removing it:" >&2
    mounts_under "$ROOT" >&2
    return 1
  fi
  rm -rf --one-file-system "$ROOT"
}

# shellcheck disable=SC2329  # run by the EXIT trap
cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM   # a second Ctrl-C must not cut the cleanup short
  [ -n "$HEARTBEAT_PID" ] && kill "$HEARTBEAT_PID" 2>/dev/null && wait "$HEARTBEAT_PID" 2>/dev/null
  kill_chroot_procs
  unmount_all
  [ "$RESULT_WANTED" = 1 ] && write_result "$rc"
  if [ "$KEEP" = 1 ] && [ -d "$ROOT" ]; then
    say "kept the working root $ROOT (--keep)"
  else
    remove_root
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'STATUS="interrupted"; exit 130' INT
trap 'STATUS="terminated"; exit 143' TERM

# --- the mirror: the same rule as tools/caffe/build.sh's debian_mirror ------------------------
source "$(dirname "${BASH_SOURCE[0]}")/caffe/mirror.sh"   # debian_mirror

# The security archive: the one the host's own sources use when it is on the mirror's host
# (deb.debian.org serves both /debian and /debian-security), else <mirror host>/debian-security.
security_mirror() {
  local mirror="$1" host uri=""
  host=$(sed -E 's#^[a-z]+://([^/]+).*#\1#' <<<"$mirror")
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u && $0 ~ /security/ {print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $0 ~ /security/ { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit} }' \
          /etc/apt/sources.list | head -n1 || true)
  fi
  case "$uri" in
    *://"$host"/*) echo "$uri" ;;
    *) echo "${mirror%%://*}://$host/debian-security" ;;
  esac
}

# True when $1/dists/$2/Release can be fetched (bash's /dev/tcp: the host may lack curl).
reachable() {
  local uri="$1" suite="$2" host path
  [[ "$uri" == http://* ]] || return 0     # https/file: leave it to apt
  host=$(sed -E 's#^http://([^/:]+).*#\1#' <<<"$uri")
  path=$(sed -E 's#^http://[^/]+##' <<<"$uri")
  # shellcheck disable=SC2016  # $1.. are the inner shell's arguments
  timeout 20 bash -c '
    exec 3<>"/dev/tcp/$1/80" || exit 1
    printf "HEAD %s/dists/%s/Release HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$3" "$1" >&3
    head -n1 <&3 | grep -q " 200 "' _ "$host" "$path" "$suite" 2>/dev/null
}

# --- step 1: the base root, once --------------------------------------------------------------
ensure_debootstrap() {
  command -v debootstrap >/dev/null && return 0
  say "installing debootstrap on the host"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

build_base() {
  local mirror="$1" log="$WORK/logs/debootstrap.log" start
  if [ -f "$BASE.done" ] && [ "$(cat "$BASE.done")" = "$BASE_RECIPE $mirror" ]; then
    say "reusing the base root $BASE"
    return 0
  fi
  ensure_debootstrap
  [ -z "$(mounts_under "$BASE" 2>/dev/null)" ] || die "something is mounted under $BASE"
  rm -rf --one-file-system "$BASE" "$BASE.done"
  start=$(date +%s)
  say "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $mirror (log: $log)"
  local keyring=()
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] \
    && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  debootstrap --variant=minbase --include="$INCLUDE" "${keyring[@]}" \
    "$SUITE" "$BASE" "$mirror" >"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; die "debootstrap failed (log: $log)"; }
  # No service may start inside the chroot when a package is installed (the standard
  # policy-rc.d answer "not allowed").
  printf '#!/bin/sh\nexit 101\n' > "$BASE/usr/sbin/policy-rc.d"
  chmod +x "$BASE/usr/sbin/policy-rc.d"
  # debootstrap's package lists are dropped: a new user's apt starts with `apt-get update`,
  # which build.sh's install_deps runs.
  rm -rf "$BASE"/var/lib/apt/lists/* "$BASE"/var/cache/apt/archives/*.deb
  echo "$BASE_RECIPE $mirror" > "$BASE.done"
  say "base root made in $(fmt_time $(( $(date +%s) - start )))"
}

# Debian 12's default sources (deb822): bookworm and bookworm-updates from the mirror, and
# the security archive when it can be reached the same way. Written into each working root, so
# that a change of the host's sources needs no new base.
configure_apt() {
  local mirror="$1" security
  security=$(security_mirror "$mirror")
  rm -f "$ROOT/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$SUITE" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if reachable "$security" "$SUITE-security"; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$SUITE"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    else
      say "warning: $security is not reachable: the chroot has no security updates"
    fi
  } > "$ROOT/etc/apt/sources.list.d/debian.sources"
}

# --- step 2: a working root and its mounts -----------------------------------------------------
mount_at() {   # mount_at TARGET MOUNT-ARGS...: mount and remember it for the cleanup
  local target="$1"; shift
  mkdir -p "$target"
  mount "$@" "$target" || return 1   # explicit: set -e does not apply under `||`
  MOUNTS+=("$target")
}

make_root() {
  local mirror="$1" start; start=$(date +%s)
  kill_chroot_procs; unmount_all
  remove_root || die "cannot remove the previous working root"
  cp -a "$BASE" "$ROOT"
  configure_apt "$mirror"
  # The host's DNS, so that the mirror and PyPI resolve inside.
  rm -f "$ROOT/etc/resolv.conf"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # Certificate authorities the host's administrator added (a TLS-inspecting proxy on the
  # way to PyPI, for one): a fresh machine on the same network would have them too.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    env -i PATH="$CLEAN_PATH" chroot "$ROOT" /usr/sbin/update-ca-certificates >/dev/null 2>&1 \
      || say "warning: update-ca-certificates failed in the chroot"
  fi
  # Fresh proc and sysfs (sysfs read-only bind of the host's where a new one is refused), a
  # tmpfs /dev with the usual nodes and its own devpts: nothing of the host's /dev is shared.
  mount_at "$ROOT/proc" -t proc proc
  mount_at "$ROOT/sys" -t sysfs -o ro sysfs 2>/dev/null || mount_at "$ROOT/sys" --rbind -o ro /sys
  mount_at "$ROOT/dev" -t tmpfs -o mode=755,nosuid devtmp
  local node
  for node in "null c 1 3" "zero c 1 5" "full c 1 7" "random c 1 8" "urandom c 1 9" "tty c 5 0"; do
    # shellcheck disable=SC2086
    set -- $node; mknod -m 666 "$ROOT/dev/$1" "$2" "$3" "$4"
  done
  ln -s /proc/self/fd "$ROOT/dev/fd"
  ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
  ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
  ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
  mount_at "$ROOT/dev/pts" -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts
  ln -s pts/ptmx "$ROOT/dev/ptmx"
  mount_at "$ROOT/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev shm   # Python's semaphores
  say "working root ready in $(fmt_time $(( $(date +%s) - start ))): $ROOT"
}

# --- step 3: the repository inside --------------------------------------------------------------
CLONE=/root/pytrim        # inside the chroot
COMMIT=""                 # what is checked: HEAD when the copy was made (it may move on meanwhile)
DIRTY=false               # --worktree with uncommitted changes to tracked files
copy_repo() {
  local dest="$ROOT$CLONE"
  say "cloning $REPO into the chroot's $CLONE"
  git clone -q --no-hardlinks "$REPO" "$dest"
  COMMIT=$(git -C "$dest" rev-parse HEAD)
  say "cloned HEAD $COMMIT"
  [ "$WORKTREE" = 1 ] || return 0
  # The working tree over the clone: tracked files (as they are now, deletions included) and
  # untracked files that are not ignored; .git stays the clone's, at HEAD.
  [ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] || DIRTY=true
  say "--worktree: copying the working tree's files over the clone (uncommitted changes included)"
  git -C "$dest" ls-files -z | (cd "$dest" && xargs -0 -r rm -f --)
  git -C "$REPO" ls-files -co --exclude-standard -z \
    | (cd "$REPO" && while IFS= read -r -d '' f; do
         if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done) \
    | tar -C "$REPO" --null -T - -cf - | tar -C "$dest" -xf -
}

# --- step 4: the README's commands ------------------------------------------------------------
LOG_DIR="$WORK/logs"
STAMP=$(date +%Y%m%d-%H%M%S)
CAFFE_SECONDS=null
TRIM_SECONDS=null
FAILED_STEP=""

# run_step NAME COMMAND: COMMAND in the clone, as root, with a clean environment; output to
# a log; a progress line every minute; the last lines of the log on failure.
run_step() {
  local name="$1" cmd="$2" log="$LOG_DIR/$STAMP-$1.log" start rc=0
  start=$(date +%s)
  say "running \`$cmd\` in the chroot (log: $log)"
  (
    while sleep 60; do
      say "  $cmd: $(fmt_time $(( $(date +%s) - start ))) ... $(last_line "$log")$([ "$name" = caffe ] && caffe_progress)"
    done
  ) &
  HEARTBEAT_PID=$!
  env -i HOME=/root PATH="$CLEAN_PATH" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    chroot "$ROOT" /bin/bash -c "cd $CLONE && $cmd" </dev/null >"$log" 2>&1 || rc=$?
  kill "$HEARTBEAT_PID" 2>/dev/null; wait "$HEARTBEAT_PID" 2>/dev/null || true
  HEARTBEAT_PID=""
  STEP_SECONDS=$(( $(date +%s) - start ))
  if [ "$rc" != 0 ]; then
    echo "fresh-check: ---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    echo "fresh-check: ----" >&2
    say "\`$cmd\` FAILED (exit $rc) after $(fmt_time "$STEP_SECONDS")"
    FAILED_STEP="$name"
    return 1
  fi
  say "\`$cmd\` passed in $(fmt_time "$STEP_SECONDS")"
}

# The log's last line as a terminal shows it (progress bars rewrite theirs with \r).
last_line() {
  tail -c 2000 "$1" 2>/dev/null | tr '\r' '\n' | grep -v '^[[:space:]]*$' | tail -n1 | cut -c1-100
}

# While Caffe compiles, the step's own log stays on "building with N jobs": the percentage
# of the build's make.log inside the chroot says more.
caffe_progress() {
  local mk pct
  mk=$(find "$ROOT/root/.cache/pytrim/caffe" -path '*/build/make*.log' -mmin -2 2>/dev/null | head -n1)
  [ -n "$mk" ] || return 0
  pct=$(grep -o '^\[ *[0-9]*%\]' "$mk" 2>/dev/null | tail -n1 | tr -d ' ')
  [ -z "$pct" ] || echo " (Caffe's build: $pct)"
}

# shellcheck disable=SC2329  # run by cleanup
write_result() {
  local rc="$1" ok=false out="$REPO/runs/fresh-check/result.json"
  [ "$rc" = 0 ] && ok=true
  mkdir -p "$(dirname "$out")"
  cat > "$out" <<EOF
{
  "caffe_seconds": $CAFFE_SECONDS,
  "lenet_trim_seconds": $TRIM_SECONDS,
  "ok": $ok,
  "status": "$STATUS",
  "failed_step": $([ -n "$FAILED_STEP" ] && echo "\"$FAILED_STEP\"" || echo null),
  "commit": "$COMMIT",
  "source": "$([ "$WORKTREE" = 1 ] && echo worktree || echo clone)",
  "worktree_dirty": $DIRTY,
  "only_caffe": $([ "$ONLY_CAFFE" = 1 ] && echo true || echo false),
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "logs": "$LOG_DIR/$STAMP-*.log"
}
EOF
  say "wrote $out"
}

main() {
  mkdir -p "$WORK" "$LOG_DIR"
  # One check at a time: they share the working root.
  exec 8>"$WORK/.lock"
  flock -n 8 || die "another fresh-check is running ($WORK/.lock)"
  local mirror; mirror=$(debian_mirror)
  build_base "$mirror"
  make_root "$mirror"
  copy_repo
  RESULT_WANTED=1
  STATUS=failed
  local rc=0
  run_step caffe "make caffe" || rc=$?
  CAFFE_SECONDS=$STEP_SECONDS
  [ "$rc" = 0 ] || exit 1
  if [ "$ONLY_CAFFE" = 0 ]; then
    run_step lenet-trim "make lenet-trim" || rc=$?
    TRIM_SECONDS=$STEP_SECONDS
    [ "$rc" = 0 ] || exit 1
  fi
  STATUS=passed
  say "PASSED: make caffe $(fmt_time "$CAFFE_SECONDS")$([ "$ONLY_CAFFE" = 0 ] \
    && echo ", make lenet-trim $(fmt_time "$TRIM_SECONDS")" || echo " (--only-caffe)")"
}

# One line: bash has read it whole before main starts, and reads no further, so an edit of this
# file during a check (a long one) cannot change what the running check does next.
main; exit
