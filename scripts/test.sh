#!/usr/bin/env bash
# The whole kproxy test suite: format, lint, unit tests, a bounded fuzz run (FUZZ_SECONDS per target), the release
# build the images run, the images, then the e2e tests (against those release binaries) in one fresh environment
# (real Kafka brokers, control plane and a node running the chart's pods) that is torn down afterwards.
#
# Builds are cached outside the clone so repeated runs on one machine are warm: $KPROXY_CACHE (default
# ~/.cache/kproxy) holds the Go caches and binaries, the images and, for a clone without its own target/, cargo's
# target dir (a clone that already has target/ keeps using it; CARGO_TARGET_DIR wins over both).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export KPROXY_CACHE=${KPROXY_CACHE:-$HOME/.cache/kproxy}
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ ! -d "$root/target" ]; then
  export CARGO_TARGET_DIR="$KPROXY_CACHE/target"
  # The fuzz targets' own build (a separate workspace, nightly) likewise.
  export FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-$KPROXY_CACHE/fuzz-target}
fi
echo "cargo target dir: ${CARGO_TARGET_DIR:-$root/target}; Go and image caches: $KPROXY_CACHE"

# Everything the suite prints is also kept in one log, so a failure can be summed up in the last lines printed
# (a CI page often shows only the tail of a long run).
mkdir -p "$root/.cache/logs"
suite_log="$root/.cache/logs/make-test.log"
: >"$suite_log"
exec > >(tee -a "$suite_log") 2>&1

timings=()
step_start=0
step_line=0
step() {
  finish_step
  step_name=$1
  step_start=$(date +%s)
  step_line=$(wc -l <"$suite_log")
  echo
  echo "== $step_name ($(date -u +%H:%M:%S))"
}
finish_step() {
  if [ "$step_start" -ne 0 ]; then
    timings+=("$(printf '%-28s %5ss' "$step_name" $(( $(date +%s) - step_start )))")
  fi
  step_start=0
}
install_pid=""
# failure_summary: what went wrong in the failed step, in at most 19 lines: the lines that name an error (a
# script's ERROR, a test's panic, a failing target), then the step's last lines.
failure_summary() {
  local lines errors
  sleep 0.2 # what the step printed last is through tee
  lines=$(tail -n +"$((step_line + 1))" "$suite_log")
  errors=$(grep -E 'ERROR|Error from server|^error|error:|panicked at|assertion|FAILED|exited before|not ready after' \
    <<<"$lines" | grep -v -E '^--- last lines of' | cut -c1-300 | tail -n 8 || true)
  echo "== make test FAILED in step \"${step_name:-?}\" (exit $1); full output: $suite_log"
  if [ -n "$errors" ]; then
    echo "-- its lines naming an error:"
    echo "$errors"
  fi
  echo "-- its last lines:"
  tail -n 8 <<<"$lines" | cut -c1-300
}

report() {
  local rc=$? summary=""
  [ $rc -ne 0 ] && summary=$(failure_summary $rc)
  finish_step
  if [ -n "$install_pid" ]; then kill -- -"$install_pid" 2>/dev/null || true; fi
  echo
  echo "== step timings"
  printf '%s\n' "${timings[@]}"
  if [ "${KPROXY_KEEP_ENV:-0}" != 1 ]; then
    # Its many lines go to a log; a failing stop is printed whole.
    scripts/env/down.sh >"$root/.cache/logs/env-down.log" 2>&1 && echo "test environment stopped" ||
      { cat "$root/.cache/logs/env-down.log"; echo "env-down FAILED"; }
  fi
  if [ $rc -ne 0 ]; then
    echo
    echo "$summary"
    echo "service logs: $root/.cache/logs"
  fi
  exit $rc
}
trap report EXIT

suite_start=$(date +%s)
step "toolchain"
scripts/install-tools.sh

step "environment programs (started in the background)"
# The Go builds (one go build per tools module; ~30 min cold on a busy 2-core machine, seconds warm) and the
# Debian packages the environment needs, next to the Rust steps below: they take the cores those steps leave idle
# (test runs, single-threaded fuzzing, link tails). Waited for, and their log printed, before the images.
install_log="$root/.cache/logs/install-all.log"
# Its own session, so a failing suite stops the whole build (report kills the group).
setsid scripts/env/install.sh all >"$install_log" 2>&1 &
install_pid=$!

step "cargo fmt --check"
cargo fmt --all -- --check
# The fuzz targets are their own workspace with their own lock file: a dependency added to the sidecar must be
# locked there too, or the fuzz step fails minutes later; say so now.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null ||
  { echo "fuzz/Cargo.lock is out of date: run 'cargo metadata --format-version 1 --manifest-path fuzz/Cargo.toml'"; exit 1; }

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

step "release build (images, e2e)"
# What Dockerfile.sidecar and Dockerfile.operator build (so a broken image build fails here), plus the benchmark
# programs; the e2e tests run these release binaries, so there is no separate debug build.
# The commit both binaries report in kproxy_build_info, as scripts/images.sh and the Dockerfiles build them.
KPROXY_GIT_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
export KPROXY_GIT_COMMIT
cargo build --release --locked -p kproxy-sidecar -p kproxy-operator -p kproxy-webhook -p kproxy-bench

step "environment programs (waiting for the background install)"
install_rc=0
wait "$install_pid" || install_rc=$?
install_pid=""
cat "$install_log"
[ "$install_rc" = 0 ]

step "images"
KPROXY_IMAGES_NO_CARGO=1 scripts/images.sh

step "environment up"
# A dozen daemons come up here; one that fails to start (a port taken meanwhile, a slow first start) gets one
# more try from a clean slate, after its failure has been printed above.
if ! scripts/env/up.sh; then
  echo "environment up FAILED once (its error is above); stopping it and trying again"
  scripts/env/down.sh >"$root/.cache/logs/env-down-retry.log" 2>&1 || true
  scripts/env/up.sh
fi

step "e2e tests"
# One environment for every e2e test; each test makes its own topics, namespaces and ports.
export KPROXY_E2E_REQUIRED=1
# The binaries just built in release, the ones the images ship.
export KPROXY_E2E_PROFILE=release
cargo test -p kproxy-e2e --locked --no-run
# The tests on the node spend most of their time waiting for kubelet's sync period, so they run next to the
# others; their whole output (pods, propagation figures) is printed afterwards.
node_tests=(chart_policy_and_injected_pod_on_a_real_node policy_edit_propagation_through_kubelet)
node_log="$root/.cache/logs/e2e-node-flow.log"
mkdir -p "$(dirname "$node_log")"
cargo test -p kproxy-e2e --locked --test node_flow -- --nocapture --test-threads=2 >"$node_log" 2>&1 &
node_pid=$!
e2e_rc=0
# --no-fail-fast: one failing test file must not keep the files after it from running.
# The multi-broker tests stop and start east's brokers (broker 1 too, which the node's pods and most other tests
# use), so they run alone once everything else is done.
broker_tests=(a_rolling_restart_of_all_three_brokers_loses_no_record_and_drops_no_bootstrap_connection
  leaders_moved_by_reassignment_and_leader_election_are_followed_without_client_errors
  a_broker_killed_with_sigkill_and_restarted_loses_no_record
  a_fourth_broker_gets_a_virtual_broker_when_metadata_first_names_it_and_clients_follow_leaders_there)
cargo test -p kproxy-e2e --locked --no-fail-fast -- --test-threads="${KPROXY_E2E_THREADS:-4}" \
  "${node_tests[@]/#/--skip=}" "${broker_tests[@]/#/--skip=}" || e2e_rc=$?
node_rc=0
wait "$node_pid" || node_rc=$?
echo
echo "== e2e on the node (node_flow, $node_log)"
cat "$node_log"
echo
echo "== e2e restarting east's brokers (multi_broker, alone)"
broker_rc=0
cargo test -p kproxy-e2e --locked --test multi_broker -- --nocapture || broker_rc=$?
# An explicit exit: under set -e a failing test in `a && b` would not stop the script.
if [ "$e2e_rc" != 0 ] || [ "$node_rc" != 0 ] || [ "$broker_rc" != 0 ]; then
  echo "e2e tests FAILED (other tests: exit $e2e_rc, node tests: exit $node_rc, multi-broker tests: exit $broker_rc)"
  exit 1
fi

finish_step
echo
echo "make test passed in $(( ($(date +%s) - suite_start) / 60 )) min"
