#!/usr/bin/env bash
# Installs what the Rust checks need (idempotent): the rustfmt and clippy components; with the argument `fuzz`,
# what scripts/fuzz.sh needs instead: a nightly toolchain and cargo-fuzz at the pinned version. The test
# environment's programs (Kafka, kcat, etcd, kube-apiserver, helm) are installed by scripts/env/install.sh.
set -euo pipefail

# cargo-fuzz, pinned: its command line and build flags are part of how fuzz/ is built.
CARGO_FUZZ_VERSION=0.13.2

if [ "${1:-}" = fuzz ]; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
  fi
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    start=$(date +%s)
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
    echo "cargo-fuzz $CARGO_FUZZ_VERSION installed in $(( $(date +%s) - start ))s"
  fi
  exit 0
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
