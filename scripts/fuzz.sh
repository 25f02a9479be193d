#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time each: FUZZ_SECONDS (default 60; 0 replays only)
# per target, or only the targets named in FUZZ_TARGETS. Each run first replays the committed corpus
# (fuzz/corpus/<target>) and the regression inputs (fuzz/regressions/<target>), then fuzzes; the first crash, hang
# (-timeout) or runaway memory (-rss_limit_mb) fails the script, with the input left in
# .cache/fuzz/artifacts/<target>/ and the log printed. New inputs go to .cache/fuzz/corpus/<target>; committed
# files are only read. Needs the nightly toolchain and the pinned cargo-fuzz (scripts/install-tools.sh fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"frame request_header request_body response_rewrite"}
work=.cache/fuzz
# The fuzz builds' target dir; scripts/test.sh points it outside the clone so a fresh clone builds warm.
target_dir=${FUZZ_TARGET_DIR:-$work/target}
# Coverage-guided without a sanitizer by default: the sidecar forbids unsafe code, so the bugs to find are panics,
# aborts, overflows (debug assertions are on), hangs and huge allocations. FUZZ_SANITIZER=address adds ASan.
flags=(--fuzz-dir fuzz --target-dir "$target_dir" -s "${FUZZ_SANITIZER:-none}" --debug-assertions)

scripts/install-tools.sh fuzz

# The fuzz crate has its own workspace and lock file: it must build exactly what is locked, and it must decode
# with the patched kafka-protocol the sidecar ships (vendor/kafka-protocol), not the crates.io release.
cargo +nightly fetch --locked --manifest-path fuzz/Cargo.toml
if ! cargo +nightly tree --locked --offline --manifest-path fuzz/Cargo.toml -i kafka-protocol --depth 0 \
  | grep -q "vendor/kafka-protocol"; then
  echo "fuzz/Cargo.toml does not resolve kafka-protocol to vendor/kafka-protocol ([patch.crates-io] missing?)"
  exit 1
fi

start=$(date +%s)
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz build: $(( $(date +%s) - start ))s"

# FUZZ_SECONDS=0 only replays the committed inputs (libFuzzer would read -max_total_time=0 as "no limit").
if [ "$seconds" = 0 ]; then bound=(-runs=0); else bound=(-max_total_time="$seconds"); fi

# The binaries are run directly: `cargo fuzz run` would build again first, for nothing.
bin="$target_dir/x86_64-unknown-linux-gnu/release"
failed=()
for target in $targets; do
  mkdir -p "$work/corpus/$target" "$work/artifacts/$target"
  rm -f "$work/artifacts/$target"/*
  inputs=("$work/corpus/$target" "fuzz/corpus/$target")
  [ -d "fuzz/regressions/$target" ] && inputs+=("fuzz/regressions/$target")
  echo "== fuzz $target for ${seconds}s"
  if "$bin/$target" "${bound[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$work/artifacts/$target/" "${inputs[@]}" >"$work/$target.log" 2>&1; then
    status="^#[0-9]+"$'\t'"(INITED|NEW|REDUCE|pulse|DONE) +cov"
    grep -E "$status" "$work/$target.log" | tail -1 | sed 's/ lim:.*//' || true
    grep -E "^Done [0-9]+ runs" "$work/$target.log" || true
  else
    echo "CRASH in $target; input(s): $(ls "$work/artifacts/$target"/* 2>/dev/null | tr '\n' ' ')"
    grep -vE "^#[0-9]+"$'\t'"(NEW|REDUCE|pulse|RELOAD) " "$work/$target.log" | tail -40
    failed+=("$target")
  fi
done
echo "fuzz: ${targets// /, } ran ${seconds}s each"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (full logs: $work/<target>.log; replay an input with $bin/<target> <input>)"
  exit 1
fi
