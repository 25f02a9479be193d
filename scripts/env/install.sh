#!/usr/bin/env bash
# Installs the test environment's programs from the package registries, once, into .cache/ (idempotent: each
# step is skipped when its result is already there).
# Usage: install.sh [all|kafka|apt|rdkafka|python|kube|etcd|helm|crds|node|prometheus]...
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

PROM_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator
PROM_OPERATOR_VERSION=v0.85.0
CONFLUENT_KAFKA_VERSION=2.16.1

# Go builds share one module and build cache under $KPROXY_CACHE/go (outside the clone, so a fresh clone on the
# same machine builds warm); KPROXY_GO_CACHE_DIR moves just that.
go_env() {
  local dir=${KPROXY_GO_CACHE_DIR:-$KPROXY_CACHE/go}
  export GOMODCACHE="$dir/mod" GOCACHE="$dir/cache"
  export GOFLAGS="-modcacherw -buildvcs=false -trimpath"
}

# timed NAME CMD...: runs CMD and reports how long it took (cold-install figures).
timed() {
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" || rc=$?
  if [ $rc -ne 0 ]; then
    # The log's end goes to the suite's output too: a CI run keeps only what was printed.
    [ -f "$LOG_DIR/install-$name.log" ] && tail -n 30 "$LOG_DIR/install-$name.log" >&2
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

# The tools' logging config, packed as a jar into the lib folder so `java -cp "lib/*" <tool>` finds it on the
# classpath (brokers name their own config with a system property, which wins).
tools_logging_jar() {
  local pomdir=$1 version=$2 name=log4j2.properties tmp
  [ "$pomdir" = kafka-4 ] || name=log4j.properties
  tmp=$(mktemp -d)
  cp "$TOOLS_DIR/$pomdir/tools-$name" "$tmp/$name"
  (cd "$tmp" && jar cf "$CACHE_DIR/kafka/$version/lib/zz-kproxy-tools-logging.jar" "$name") ||
    die "packing the tools' logging config failed (is the JDK's jar tool installed?)"
  rm -rf "$tmp"
}

install_kafka() {
  local pair pomdir version
  for pair in "kafka-4:$KAFKA4_VERSION" "kafka-3.9:$KAFKA39_VERSION"; do
    pomdir=${pair%%:*}
    version=${pair##*:}
    if [ ! -f "$CACHE_DIR/kafka/$version/lib/kafka_2.13-$version.jar" ]; then
      command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Apache Kafka from Maven Central"
      log "fetching Apache Kafka $version and its tools from Maven Central"
      timed "kafka-$version" kafka_fetch "$pomdir" "$version"
    fi
    [ -f "$CACHE_DIR/kafka/$version/lib/zz-kproxy-tools-logging.jar" ] || tools_logging_jar "$pomdir" "$version"
  done
}

install_apt() {
  local need=()
  command -v kcat >/dev/null || need+=(kcat)
  dpkg -s librdkafka-dev >/dev/null 2>&1 || need+=(librdkafka-dev)
  command -v openssl >/dev/null || need+=(openssl)
  [ ${#need[@]} -eq 0 ] && return 0
  apt_install apt "${need[@]}"
}

# apt_install NAME PACKAGE...: installs Debian packages (apt-get update first), logged to install-NAME.log.
apt_install() {
  local name=$1 sudo=""
  shift
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing Debian packages: $*"
  mkdir -p "$LOG_DIR"
  apt_run() {
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
  } >"$LOG_DIR/install-$name.log" 2>&1
  timed "$name" apt_run "$@"
}

# The node's runtime and network from Debian: containerd, runc, the CNI plugins, iptables, conntrack.
install_node() {
  local need=() p
  for p in containerd runc containernetworking-plugins iptables conntrack; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  apt_install node "${need[@]}"
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

# Python's confluent-kafka (same librdkafka) in a venv, for e2e clients that script consumer groups or
# transactions.
install_python() {
  local venv="$CACHE_DIR/venv"
  "$venv/bin/python" -c "import confluent_kafka" >/dev/null 2>&1 && return 0
  mkdir -p "$LOG_DIR"
  log "installing confluent-kafka==$CONFLUENT_KAFKA_VERSION into $venv"
  venv() {
    python3 -m venv "$venv" &&
      "$venv/bin/pip" install -q --find-links "$CACHE_DIR/pip" "confluent-kafka==$CONFLUENT_KAFKA_VERSION"
  } >"$LOG_DIR/install-python.log" 2>&1
  timed python venv
}

# go_binary PACKAGE: the file name `go build -o DIR/` gives PACKAGE's program: its last path element, or the one
# before a major-version suffix (go.etcd.io/etcd/server/v3 builds "server", not "v3").
go_binary() {
  local base=${1##*/}
  if [[ $base =~ ^v[0-9]+$ ]]; then
    base=${1%/*}
    base=${base##*/}
  fi
  echo "$base"
}

# go_build MODULE_DIR LDFLAGS NAME=PACKAGE...: builds every program of one tools module with ONE `go build` (the
# packages they share compile and link-prepare once) into .cache/bin. The result is kept in
# $KPROXY_CACHE/gobin/<key>, keyed by go.mod, go.sum, the packages and the flags, so a warm machine (or a fresh
# clone on it) copies the binaries instead of linking them again, and a version bump rebuilds.
go_build() {
  local moddir=$1 ldflags="-s -w $2" key spec name pkg missing=0 names=() pkgs=()
  shift 2
  for spec in "$@"; do
    names+=("${spec%%=*}")
    pkgs+=("${spec#*=}")
  done
  # GO_BUILD_PATCH (optional), "MODULE FILE SOURCE": the dependency MODULE is built from a copy whose FILE is this
  # tools module's SOURCE (Go refuses overlays of files in the module cache).
  local patch_src=""
  [ -n "${GO_BUILD_PATCH:-}" ] && patch_src="$TOOLS_DIR/$moddir/${GO_BUILD_PATCH##* }"
  key=$(cat "$TOOLS_DIR/$moddir/go.mod" "$TOOLS_DIR/$moddir/go.sum" ${patch_src:+"$patch_src"} \
    <(echo "${pkgs[*]} $ldflags${GO_BUILD_PATCH:+ $GO_BUILD_PATCH}") | sha256sum | cut -c1-16)
  for name in "${names[@]}"; do
    [ -x "$BIN_DIR/$name" ] && [ "$(cat "$BIN_DIR/.$name.stamp" 2>/dev/null)" = "$key" ] || missing=1
  done
  [ $missing = 0 ] && return 0
  local cached="$KPROXY_CACHE/gobin/$moddir-$key"
  mkdir -p "$BIN_DIR" "$LOG_DIR"
  if [ ! -f "$cached/.complete" ]; then
    command -v go >/dev/null || die "Go is needed to build ${names[*]} from the Go module proxy"
    go_env
    log "building ${names[*]} (tools/$moddir, one go build); a cold build takes minutes"
    local flags=()
    if [ -n "$patch_src" ]; then
      local mod file dir copy modfile="$KPROXY_CACHE/gobin/$moddir-$key.mod"
      read -r mod file _ <<<"$GO_BUILD_PATCH"
      # Downloaded first: with a cold module cache `go list -m` names no folder.
      dir=$(cd "$TOOLS_DIR/$moddir" && go mod download "$mod" && go list -m -f '{{.Dir}}' "$mod") ||
        die "go mod download $mod failed"
      [ -d "$dir" ] || die "go list -m $mod named no module folder ('$dir')"
      copy="$KPROXY_CACHE/src/$(basename "$dir")-$key"
      if [ ! -f "$copy/.complete" ]; then
        rm -rf "$copy.tmp" && mkdir -p "$(dirname "$copy")" && cp -r "$dir" "$copy.tmp" && chmod -R u+w "$copy.tmp" &&
          cp "$patch_src" "$copy.tmp/$file" && touch "$copy.tmp/.complete" && rm -rf "$copy" && mv "$copy.tmp" "$copy" ||
          die "copying $mod to $copy failed"
      fi
      mkdir -p "$modfile"
      cp "$TOOLS_DIR/$moddir/go.sum" "$modfile/go.sum"
      { cat "$TOOLS_DIR/$moddir/go.mod"; echo "replace $mod => $copy"; } >"$modfile/go.mod"
      flags=(-modfile "$modfile/go.mod")
    fi
    build() {
      rm -rf "$cached.tmp" && mkdir -p "$cached.tmp" &&
        (cd "$TOOLS_DIR/$moddir" && go build "${flags[@]}" -ldflags="$ldflags" -o "$cached.tmp/" "${pkgs[@]}") &&
        for pkg in "${pkgs[@]}"; do [ -x "$cached.tmp/$(go_binary "$pkg")" ] || return 1; done &&
        touch "$cached.tmp/.complete" && rm -rf "$cached" && mv "$cached.tmp" "$cached"
    } >"$LOG_DIR/install-$moddir.log" 2>&1
    timed "$moddir" build
  fi
  for spec in "$@"; do
    name=${spec%%=*}
    pkg=${spec#*=}
    cp "$cached/$(go_binary "$pkg")" "$BIN_DIR/$name.tmp" && mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name" &&
      echo "$key" >"$BIN_DIR/.$name.stamp" || die "copying $name from $cached failed"
  done
}

# module_version MODULE_DIR MODULE: the version of MODULE that tools/MODULE_DIR/go.mod selects.
module_version() {
  go_env
  (cd "$TOOLS_DIR/$1" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$2")
}

install_kube() {
  local v x minor
  v=$(module_version k8s k8s.io/kubernetes)
  minor=${v#v1.}
  minor=${minor%%.*}
  # What `make` in the Kubernetes tree stamps in; without it the binaries report v0.0.0-master, which clients
  # such as helm cannot compare against a chart's kubeVersion.
  x="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1"
  x+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  x+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  # The control plane, kubectl and the node's programs, from one module at one version.
  local p specs=()
  for p in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    specs+=("$p=k8s.io/kubernetes/cmd/$p")
  done
  go_build k8s "$x" "${specs[@]}"
}

install_etcd() { go_build etcd "" etcd=go.etcd.io/etcd/server/v3; }

install_helm() {
  local v client minor x
  v=$(module_version helm helm.sh/helm/v3)
  client=$(module_version helm k8s.io/client-go)
  minor=${client#v0.}
  minor=${minor%%.*}
  # As helm's own Makefile does: its version, and the Kubernetes version `helm template`/`lint` assume offline.
  x="-X helm.sh/helm/v3/internal/version.version=$v -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  x+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  x+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  go_build helm "$x" helm=helm.sh/helm/v3/cmd/helm
}

# prometheus-operator (cmd/operator and the config reloader its Prometheus pods run) and Prometheus 3 (cmd/prometheus, cmd/promtool), each module in one go build.
install_prometheus() {
  local v x
  v=$(module_version prometheus-operator "$PROM_OPERATOR_MODULE")
  [ "$v" = "$PROM_OPERATOR_VERSION" ] || die "tools/prometheus-operator pins $v, the CRDs come from $PROM_OPERATOR_VERSION"
  go_build prometheus-operator "-X github.com/prometheus/common/version.Version=${v#v}" \
    prometheus-operator=$PROM_OPERATOR_MODULE/cmd/operator \
    prometheus-config-reloader=$PROM_OPERATOR_MODULE/cmd/prometheus-config-reloader
  v=$(module_version prometheus github.com/prometheus/prometheus)
  # Module v0.3XX.Y is Prometheus 3.XX.Y.
  x=${v#v0.3}
  x="3.$((10#${x%%.*})).${x#*.}"
  # Only the Kubernetes service discovery (what prometheus-operator generates), as Prometheus's plugins.yml allows:
  # the cloud SDKs would more than double the build.
  GO_BUILD_PATCH="github.com/prometheus/prometheus plugins/plugins.go plugins.go" \
    go_build prometheus "-X github.com/prometheus/common/version.Version=$x" \
    prometheus=github.com/prometheus/prometheus/cmd/prometheus promtool=github.com/prometheus/prometheus/cmd/promtool
}

# prometheus-operator's CRDs (ServiceMonitor, PodMonitor, Prometheus, ...) as its module ships them.
install_crds() {
  local dest="$CACHE_DIR/crds" dir f
  [ -f "$dest/monitoring.coreos.com_servicemonitors.yaml" ] && [ -f "$dest/monitoring.coreos.com_prometheuses.yaml" ] &&
    return 0
  go_env
  mkdir -p "$dest" "$LOG_DIR"
  log "fetching $PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION for its CRDs"
  dir=$(cd "$CACHE_DIR" && go mod download -json "$PROM_OPERATOR_MODULE@$PROM_OPERATOR_VERSION" \
    2>"$LOG_DIR/install-crds.log" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p') ||
    die "go mod download failed; see $LOG_DIR/install-crds.log"
  [ -n "$dir" ] || die "go mod download gave no module folder; see $LOG_DIR/install-crds.log"
  for f in "$dir"/example/prometheus-operator-crd/monitoring.coreos.com_*.yaml; do
    cp "$f" "$dest/" || die "copying $f failed"
    chmod u+w "$dest/$(basename "$f")"
  done
}

main() {
  local steps=("$@")
  [ ${#steps[@]} -gt 0 ] || steps=(all)
  local s
  for s in "${steps[@]}"; do
    case $s in
      all)
        install_apt && install_node && install_rdkafka && install_python && install_kafka && install_etcd &&
          install_kube && install_helm && install_crds && install_prometheus
        ;;
      kafka | apt | rdkafka | python | kube | etcd | helm | crds | node | prometheus) "install_$s" ;;
      *) die "unknown install step '$s' (all|kafka|apt|rdkafka|python|kube|etcd|helm|crds|node|prometheus)" ;;
    esac
  done
}

main "$@"
