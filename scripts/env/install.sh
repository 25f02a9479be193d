#!/usr/bin/env bash
# Installs the test environment's programs from the package registries, once, into .cache/ (idempotent: each
# step is skipped when its result is already there). Usage: install.sh [all|kafka|apt|rdkafka|kube|etcd|helm|crds]...
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

PROM_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
PROM_OPERATOR_VERSION=v0.85.0
CONFLUENT_KAFKA_VERSION=2.16.1

# Go builds share one module and build cache under .cache/go so CI can keep them between runs.
go_env() {
  export GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/cache"
  export GOFLAGS="-modcacherw -buildvcs=false -trimpath"
  export GOTOOLCHAIN=local CGO_ENABLED=0
}

# timed NAME CMD...: runs CMD and reports how long it took (cold-install figures).
timed() {
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    die "installing $name failed (exit $rc); see $LOG_DIR/install-$name.log"
  fi
  log "installed $name in $(($(date +%s) - start))s"
}

kafka_fetch() {
  local pomdir=$1 version=$2 dest="$CACHE_DIR/kafka/$2/lib"
  mkdir -p "$LOG_DIR"
  rm -rf "$dest.tmp"
  mvn -q -B -f "$TOOLS_DIR/$pomdir/pom.xml" dependency:copy-dependencies -DoutputDirectory="$dest.tmp" \
    >"$LOG_DIR/install-kafka-$version.log" 2>&1 || return 1
  ls "$dest.tmp"/kafka_2.13-"$version".jar "$dest.tmp"/kafka-tools-"$version".jar >/dev/null || return 1
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
}

install_kafka() {
  local pair pomdir version
  for pair in "kafka-4:$KAFKA4_VERSION" "kafka-3.9:$KAFKA39_VERSION"; do
    pomdir=${pair%%:*}
    version=${pair##*:}
    if [ -f "$CACHE_DIR/kafka/$version/lib/kafka_2.13-$version.jar" ]; then
      continue
    fi
    command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apache Kafka from Maven Central"
    log "fetching Apache Kafka $version and its tools from Maven Central"
    timed "kafka-$version" kafka_fetch "$pomdir" "$version"
  done
}

install_apt() {
  local need=()
  command -v kcat >/dev/null || need+=(kcat)
  dpkg -s librdkafka-dev >/dev/null 2>&1 || need+=(librdkafka-dev)
  command -v openssl >/dev/null || need+=(openssl)
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing Debian packages: ${need[*]}"
  mkdir -p "$LOG_DIR"
  apt_run() {
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
  } >"$LOG_DIR/install-apt.log" 2>&1
  timed apt apt_run
}

# Debian's librdkafka 2.0.2 fails SCRAM against Kafka 4.x brokers (its client-final nonce is rejected; fixed in
# librdkafka 2.6.1), so kcat runs on the librdkafka that PyPI's confluent-kafka wheel ships, through a wrapper.
install_rdkafka() {
  local lib="$CACHE_DIR/lib/librdkafka.so.1" wrapper="$BIN_DIR/kcat" wheel_dir="$CACHE_DIR/pip"
  if [ ! -f "$lib" ]; then
    mkdir -p "$wheel_dir" "$CACHE_DIR/lib" "$LOG_DIR"
    log "fetching librdkafka from PyPI (confluent-kafka==$CONFLUENT_KAFKA_VERSION wheel)"
    fetch() {
      local whl tmp
      python3 -m pip download --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
        --python-version 3.11 --implementation cp --abi cp311 -d "$wheel_dir" \
        "confluent-kafka==$CONFLUENT_KAFKA_VERSION" || return 1
      whl=$(ls "$wheel_dir"/confluent_kafka-"$CONFLUENT_KAFKA_VERSION"-*.whl | head -n 1)
      tmp=$(mktemp -d)
      python3 -m zipfile -e "$whl" "$tmp" || return 1
      cp "$tmp"/confluent_kafka.libs/librdkafka-*.so.1 "$lib.tmp" && mv "$lib.tmp" "$lib"
      rm -rf "$tmp"
    } >"$LOG_DIR/install-rdkafka.log" 2>&1
    timed rdkafka fetch
  fi
  if ! grep -qs 'kproxy-kcat-wrapper v2' "$wrapper"; then
    mkdir -p "$BIN_DIR"
    cat >"$wrapper.tmp" <<EOF
#!/bin/sh
# kproxy-kcat-wrapper v2: Debian's kcat on a librdkafka new enough for SCRAM against Kafka 4.x.
lib=\$(cd "\$(dirname "\$0")/../lib" && pwd)
LD_LIBRARY_PATH="\$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec /usr/bin/kcat "\$@"
EOF
    chmod +x "$wrapper.tmp"
    mv "$wrapper.tmp" "$wrapper"
  fi
}

# go_build NAME MODULE_DIR PACKAGE: builds one binary into .cache/bin unless it is there.
go_build() {
  local name=$1 moddir=$2 pkg=$3
  [ -x "$BIN_DIR/$name" ] && return 0
  command -v go >/dev/null || die "Go is needed to build $name from the Go module proxy"
  go_env
  mkdir -p "$BIN_DIR" "$LOG_DIR"
  log "building $name ($pkg) — the first build takes minutes"
  build() {
    (cd "$TOOLS_DIR/$moddir" && go build -ldflags="-s -w" -o "$BIN_DIR/$name.tmp" "$pkg") &&
      mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
  } >"$LOG_DIR/install-$name.log" 2>&1
  timed "$name" build
}

install_kube() {
  go_build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver
  go_build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager
  go_build kubectl k8s k8s.io/kubernetes/cmd/kubectl
}

install_etcd() { go_build etcd etcd go.etcd.io/etcd/server/v3; }

install_helm() { go_build helm helm helm.sh/helm/v3/cmd/helm; }

# The ServiceMonitor/PodMonitor CRDs as the prometheus-operator module ships them.
install_crds() {
  local dest="$CACHE_DIR/crds" dir f
  [ -f "$dest/monitoring.coreos.com_servicemonitors.yaml" ] && [ -f "$dest/monitoring.coreos.com_podmonitors.yaml" ] &&
    return 0
  go_env
  mkdir -p "$dest" "$LOG_DIR"
  log "fetching $PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION for its CRDs"
  dir=$(cd "$CACHE_DIR" && go mod download -json "$PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION" \
    2>"$LOG_DIR/install-crds.log" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') ||
    die "go mod download failed; see $LOG_DIR/install-crds.log"
  [ -n "$dir" ] || die "go mod download gave no module folder; see $LOG_DIR/install-crds.log"
  for f in servicemonitors podmonitors; do
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml" "$dest/" ||
      die "the module has no example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml"
  done
}

main() {
  local steps=("$@")
  [ ${#steps[@]} -gt 0 ] || steps=(all)
  local s
  for s in "${steps[@]}"; do
    case $s in
      all) install_apt && install_rdkafka && install_kafka && install_etcd && install_kube && install_helm && install_crds ;;
      kafka | apt | rdkafka | kube | etcd | helm | crds) "install_$s" ;;
      *) die "unknown install step '$s' (all|kafka|apt|rdkafka|kube|etcd|helm|crds)" ;;
    esac
  done
}

main "$@"
