#!/usr/bin/env bash
# `make bench`: kproxy's benchmark suite, direct vs through the sidecar, written to BENCHMARKS.md and
# benchmarks/ (results.json, results.csv, producer.svg). Runs unattended in well under 25 minutes.
#
#   BENCH_QUICK=1   one short round of every figure (a smoke run of the suite, ~3 minutes)
#   BENCH_ONLY=...  comma-separated subset: kafka,side_by_side,proxy_alone,memory_budget,memory,startup,reload,
#                   instructions,operator_scale (side_by_side fetches Kroxylicious 0.12.0 from Maven Central once
#                   into .cache/; operator_scale needs the environment's kube-apiserver and is skipped without it)
#   BENCH_ROUNDS=N  interleaved rounds per figure (default 3)
#   BENCH_BUDGET_S  groups not started within this many seconds are skipped and noted (default 1200)
#   BENCH_KEEP_WORK=1  keep the temporary directory (sidecar logs, callgrind and strace output)
#   scripts/bench.sh --report-only   rewrite BENCHMARKS.md from benchmarks/results.json
#
# Uses the running test environment (.cache/env.sh) if there is one; otherwise starts Kafka with
# `scripts/env/up.sh` and stops it again afterwards. Release binaries are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ "${1:-}" = --report-only ]; then
  exec python3 "$root/bench/driver/run.py" "$@"
fi

started_env=0
cleanup() {
  local rc=$?
  if [ "$started_env" = 1 ]; then
    echo "[bench] stopping the environment this run started"
    scripts/env/down.sh || true
  fi
  exit $rc
}
trap cleanup EXIT

echo "[bench] release build"
cargo build --release --locked -p kproxy-sidecar -p kproxy-operator -p kproxy-bench

if [ ! -f .cache/env.sh ]; then
  echo "[bench] no running environment: starting Kafka (scripts/env/up.sh, Kafka only)"
  KPROXY_ENV_SKIP_KUBE=1 scripts/env/up.sh
  started_env=1
fi
# shellcheck source=/dev/null
source .cache/env.sh

# 10,000 idle client connections need ~10,000 descriptors in the load generator and as many in the sidecar.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 20000 ]; then
  echo "[bench] warning: open-file limit $(ulimit -n) is below 20000; the 10,000-connection figure may fall short"
fi

python3 "$root/bench/driver/run.py" "$@"
