# Shared helpers for the test-environment scripts (sourced, never run): paths, logging, pid files, ports.
# shellcheck shell=bash

KPROXY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_DIR="$KPROXY_ROOT/.cache"
ENV_DIR="$CACHE_DIR/env"
LOG_DIR="$CACHE_DIR/logs"
BIN_DIR="$CACHE_DIR/bin"
TOOLS_DIR="$KPROXY_ROOT/tools"
# Builds that outlive the clone (Go caches and binaries, images): repeated runs on one machine are warm, a fresh
# machine still builds everything.
KPROXY_CACHE=${KPROXY_CACHE:-${HOME:-/root}/.cache/kproxy}

# The node's network: a bridge only this machine has, with a pod subnet routed nowhere else. Pods reach the
# brokers and the API server at the bridge address (DNAT to loopback); everything listens on loopback or here.
NODE_NAME=kproxy-node
BRIDGE=kproxy0
BRIDGE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
# Runtime state of the node (sockets, containerd state) and its data (kubelet and containerd roots): outside the
# clone because sockets need short paths and mounts must not end up in the working tree.
NODE_RUN=/run/kproxy-node
NODE_LIB=/var/lib/kproxy-node
# The clone whose environment holds the machine now: written by env-up, removed by its env-down. The node's bridge
# and directories above are the machine's, not the clone's, so two clones' environments cannot run at once.
ENV_OWNER=/run/kproxy-env-owner

# Kafka versions: the two "datacenter" clusters run 4.x, "legacy" runs 3.9.x (poms under tools/).
pom_kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$TOOLS_DIR/$1/pom.xml"; }
KAFKA4_VERSION=$(pom_kafka_version kafka-4)
KAFKA39_VERSION=$(pom_kafka_version kafka-3.9)
KAFKA_CLUSTERS=(east west legacy)

export PATH="$BIN_DIR:$PATH"

log() { printf '[env %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# die MESSAGE: fails the script. A message ending in "see FILE" also prints that log's last lines, since the
# log may be gone (a CI machine) by the time anyone reads the output.
die() {
  local file=${*##*see }
  if [ "$file" != "$*" ] && [ -f "$file" ]; then
    echo "--- last lines of $file:" >&2
    tail -n 15 "$file" >&2
  fi
  printf '[env %s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
  exit 1
}

# is_running PIDFILE PATTERN: the pid in PIDFILE is alive and its command line contains PATTERN
# (so a recycled pid after a reboot is never mistaken for one of ours).
is_running() {
  local pidfile=$1 pattern=$2 pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Read whole first: `tr | grep -q` under pipefail fails when grep exits before tr has written everything.
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$pattern"* ]]
}

# stop_pid NAME PIDFILE PATTERN [SIGNAL]: stops one of our processes and waits for it to exit (KILL after 30 s).
stop_pid() {
  local name=$1 pidfile=$2 pattern=$3 signal=${4:-TERM} pid i
  if ! is_running "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  log "stopping $name (pid $pid, SIG$signal)"
  kill -"$signal" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not exit within 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

# spawn PIDFILE LOGFILE CMD...: starts CMD detached in its own session, stdout/stderr to LOGFILE.
spawn() {
  local pidfile=$1 logfile=$2
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  printf '\n=== %s starting: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$logfile"
  rm -f "$pidfile"
  # The child writes its own pid just before exec: setsid forks when it is already a group leader, so $! could
  # name a parent that has gone.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  local i
  for ((i = 0; i < 100; i++)); do
    [ -s "$pidfile" ] && return 0
    sleep 0.05
  done
  die "could not start $1; see $logfile"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT (bound with SO_REUSEADDR, as the servers do).
port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# free_ports N: N distinct free loopback ports below the kernel's ephemeral range, so client connections'
# local ports never take them between a stop and a restart.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
n, out = int(sys.argv[1]), []
while len(out) < n:
    p = random.randint(20000, 32000)
    if p in out:
        continue
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
        out.append(p)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, out)))
EOF
}

# wait_for DESCRIPTION TIMEOUT_S LOGFILE PIDFILE PATTERN CMD...: polls CMD until it succeeds; fails with LOGFILE's
# last lines as soon as the process died or the timeout passed.
wait_for() {
  local what=$1 timeout=$2 logfile=$3 pidfile=$4 pattern=$5 deadline
  shift 5
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    # The process was just started: while it is still exec'ing its command line can read empty, so a live pid
    # is enough here (the pattern guards against a pid reused since an earlier start, not this one).
    if ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null && ! is_running "$pidfile" "$pattern"; then
      die "$what exited before it was ready; see $logfile"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "$what not ready after ${timeout}s; see $logfile"
    fi
    sleep 0.5
  done
}

# claim_machine: env-up's first step. Refuses while another clone's environment is up (that clone still exists
# and has not run its env-down); a clone deleted without its env-down leaves nothing to refuse for.
claim_machine() {
  local owner
  owner=$(cat "$ENV_OWNER" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$KPROXY_ROOT" ] && [ -d "$owner" ]; then
    die "the test environment of $owner is up on this machine (the node's bridge and directories are shared): run make env-down there first"
  fi
  echo "$KPROXY_ROOT" >"$ENV_OWNER"
}

# release_machine: env-down's last step.
release_machine() {
  [ "$(cat "$ENV_OWNER" 2>/dev/null || true)" = "$KPROXY_ROOT" ] && rm -f "$ENV_OWNER"
  return 0
}
