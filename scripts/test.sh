#!/usr/bin/env bash
# The whole kproxy test suite: format, lint, unit tests, a bounded fuzz run (FUZZ_SECONDS per target), the release
# build the images run, then the e2e tests against one fresh environment (real Kafka brokers and kube-apiserver)
# that is torn down afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

timings=()
step_start=0
step() {
  finish_step
  step_name=$1
  step_start=$(date +%s)
  echo
  echo "== $step_name ($(date -u +%H:%M:%S))"
}
finish_step() {
  if [ "$step_start" -ne 0 ]; then
    timings+=("$(printf '%-28s %5ss' "$step_name" $(( $(date +%s) - step_start )))")
  fi
  step_start=0
}
report() {
  local rc=$?
  finish_step
  echo
  echo "== step timings"
  printf '%s\n' "${timings[@]}"
  if [ "${KPROXY_KEEP_ENV:-0}" != 1 ]; then
    scripts/env/down.sh || true
  fi
  if [ $rc -ne 0 ]; then
    echo "make test FAILED (exit $rc); service logs: $root/.cache/logs"
  fi
  exit $rc
}
trap report EXIT

suite_start=$(date +%s)
step "toolchain"
scripts/install-tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit tests"
cargo test --workspace --exclude kproxy-e2e --locked

step "fuzz toolchain"
# nightly and the pinned cargo-fuzz; a fresh machine compiles cargo-fuzz once (~2.5 min).
scripts/install-tools.sh fuzz

step "fuzz (${FUZZ_SECONDS:-20}s per target)"
# Builds the targets into .cache/fuzz/target (not the workspace's target dir), replays the committed corpus and
# regression inputs, then fuzzes each target; any crash, hang or runaway allocation fails the suite.
FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh

step "release build (images)"
# The same command Dockerfile.sidecar and Dockerfile.operator run, so a broken image build fails here.
cargo build --release --locked -p kproxy-sidecar -p kproxy-operator

step "debug binaries for e2e"
cargo build --workspace --bins --locked

step "environment up"
scripts/env/up.sh

step "e2e tests"
# One environment for every e2e test; each test makes its own topics, namespaces and ports.
KPROXY_E2E_REQUIRED=1 cargo test -p kproxy-e2e --locked -- --test-threads="${KPROXY_E2E_THREADS:-4}"

finish_step
echo
echo "make test passed in $(( ($(date +%s) - suite_start) / 60 )) min"
