#!/usr/bin/env bash
# Installs what the Rust checks need (idempotent): the rustfmt and clippy components. The test environment's
# programs (Kafka, kcat, etcd, kube-apiserver, helm) are installed by scripts/env/install.sh.
set -euo pipefail

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
