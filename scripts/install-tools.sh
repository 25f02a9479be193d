#!/usr/bin/env bash
# Installs the machine packages kproxy's tests use (idempotent): rustfmt/clippy components and kcat/librdkafka.
set -euo pipefail

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

need=()
command -v kcat >/dev/null 2>&1 || need+=(kafkacat)
dpkg -s librdkafka-dev >/dev/null 2>&1 || need+=(librdkafka-dev)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
# Debian names the binary kafkacat; everything here calls it kcat.
if ! command -v kcat >/dev/null 2>&1 && command -v kafkacat >/dev/null 2>&1; then
  mkdir -p .cache/bin
  ln -sf "$(command -v kafkacat)" .cache/bin/kcat
fi
