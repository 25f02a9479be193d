#!/usr/bin/env bash
# `make images`: builds kproxy's container images without a Docker engine or a registry, from the release binaries
# and Debian packages, as docker-archive tars (what `docker load`, `kind load image-archive` and
# `ctr images import` read), and imports them into the test node's containerd when it runs.
#
#   kproxy-sidecar, kproxy-operator   the release binaries on the files a distroless `cc` image holds (libc, libgcc,
#                                     libssl, CA certificates, tzdata, /etc/passwd with nonroot 65532); run as
#                                     65532:65532 like the Dockerfiles' images, fine with a read-only root
#   pause                             the pod sandbox process (tools/images/pause.c, static)
#   kafka-client                      the demo application: Python 3.11 + confluent-kafka (librdkafka) and kcat
#   prometheus, config-reloader       Prometheus and prometheus-operator's reloader (when install.sh built them)
#
# Results are cached under $KPROXY_CACHE/images (default ~/.cache/kproxy/images), keyed by their inputs, so a warm
# run only re-packs what changed. .cache/images/images.list names every image for the scripts and tests.
# KPROXY_IMAGES_NO_CARGO=1 skips the cargo build (the caller just ran it).
set -euo pipefail
# A failure inside $(...) (a download, an unpack) stops the build instead of yielding an empty path.
shopt -s inherit_errexit
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/env/lib.sh"

IMAGES="$KPROXY_CACHE/images"
DEBS="$KPROXY_CACHE/debs"
OUT="$CACHE_DIR/images"
ARCHIVE="$TOOLS_DIR/images/archive.py"
APP_VERSION=$(sed -n 's/^appVersion: *"*\([^"]*\)"*$/\1/p' "$KPROXY_ROOT/charts/kproxy/Chart.yaml")
IMAGE_REPO=${IMAGE_REPO:-ghcr.io/kproxy-dev}
# What gcr.io/distroless/cc-debian12 holds.
CC_PACKAGES=(base-files netbase tzdata ca-certificates libc6 libgcc-s1 gcc-12-base libssl3)
# The demo application's interpreter and kcat, with what they load; dpkg/perl/tar come in only through package
# scripts and tools an image never runs.
APP_PACKAGES=(python3.11-minimal libpython3.11-stdlib kcat dash)
APP_EXCLUDE=" dpkg perl perl-base perl-modules-5.36 libperl5.36 tar install-info debianutils mailcap mime-support
  libgdbm6 libgdbm-compat4 libacl1 libselinux1 libpcre2-8-0 libmd0 debconf "
CONFLUENT_KAFKA_VERSION=2.16.1

hash_of() { sha256sum | cut -c1-16; }

# closure PACKAGE...: the packages PACKAGE... need at run time (Depends and Pre-Depends, transitively), minus
# APP_EXCLUDE; alternatives resolve to the first one. Kept until the package lists change.
closure() {
  local key file
  key=$( (echo "$* $APP_EXCLUDE"; ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null) | hash_of)
  file="$IMAGES/closure-$key"
  if [ ! -s "$file" ]; then
    closure_of "$@" >"$file.tmp"
    mv "$file.tmp" "$file"
  fi
  cat "$file"
}

closure_of() {
  local -A seen=()
  local queue=("$@") p deps d
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    [ -n "${seen[$p]:-}" ] && continue
    seen[$p]=1
    deps=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances \
      "$p" 2>/dev/null | sed -n 's/^ *|\?\(Pre\)\?Depends: \([^<][^ ]*\)$/\2/p' | sed 's/:any$//')
    for d in $deps; do
      [[ $APP_EXCLUDE == *" $d "* ]] && continue
      [ -n "${seen[$d]:-}" ] || queue+=("$d")
    done
  done
  printf '%s\n' "${!seen[@]}" | sort
}

# debs PACKAGE...: prints the cached .deb paths of exactly these packages (downloaded once from Debian).
debs() {
  mkdir -p "$DEBS"
  local p f missing=()
  for p in "$@"; do
    f=$(ls "$DEBS/${p}_"*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$f" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "downloading ${#missing[@]} Debian packages for the images"
    (cd "$DEBS" && apt-get download -qq "${missing[@]}" >"$LOG_DIR/images-apt.log" 2>&1) || {
      apt-get update -qq >>"$LOG_DIR/images-apt.log" 2>&1
      (cd "$DEBS" && apt-get download -qq "${missing[@]}" >>"$LOG_DIR/images-apt.log" 2>&1)
    } || die "apt-get download failed; see $LOG_DIR/images-apt.log"
  fi
  for p in "$@"; do ls "$DEBS/${p}_"*.deb | head -n 1; done
}

# rootfs NAME PACKAGE...: a merged-/usr root filesystem of these packages plus users, /tmp and the CA bundle, in
# $IMAGES/rootfs/NAME-<key>; prints its path.
rootfs() {
  local name=$1 files key dir f
  shift
  files=$(debs "$@")
  key=$( (echo v2; for f in $files; do basename "$f"; done) | hash_of)
  dir="$IMAGES/rootfs/$name-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp/usr/bin" "$dir.tmp/usr/sbin" "$dir.tmp/usr/lib" "$dir.tmp/usr/lib64" "$dir.tmp/etc"
    ln -s usr/bin "$dir.tmp/bin"
    ln -s usr/sbin "$dir.tmp/sbin"
    ln -s usr/lib "$dir.tmp/lib"
    ln -s usr/lib64 "$dir.tmp/lib64"
    for f in $files; do
      # Plain `dpkg-deb -x` would replace the /bin -> usr/bin links with directories.
      dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink -C "$dir.tmp" ||
        die "unpacking $f failed"
    done
    rm -rf "$dir.tmp/usr/share/doc" "$dir.tmp/usr/share/man" "$dir.tmp/usr/share/info" "$dir.tmp/usr/share/lintian"
    if [ -d "$dir.tmp/usr/share/ca-certificates/mozilla" ]; then
      # What ca-certificates' install script would generate.
      mkdir -p "$dir.tmp/etc/ssl/certs"
      cat "$dir.tmp"/usr/share/ca-certificates/mozilla/*.crt >"$dir.tmp/etc/ssl/certs/ca-certificates.crt"
    fi
    printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin" \
      "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >"$dir.tmp/etc/passwd"
    printf '%s\n' "root:x:0:" "nobody:x:65534:" "nonroot:x:65532:" >"$dir.tmp/etc/group"
    mkdir -p "$dir.tmp/tmp" "$dir.tmp/home/nonroot" "$dir.tmp/root"
    chmod 1777 "$dir.tmp/tmp"
    echo "home/nonroot 65532 65532" >"$dir.tmp/.owners"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# image NAME REF CONFIG_JSON LAYER_DIR...: packs the layers (cached by their content and the config) and links
# the archive as .cache/images/NAME.tar; records REF in images.env.
image() {
  local name=$1 ref=$2 config=$3 key tar cfg
  shift 3
  # Every layer folder is named by a key of its own content (rootfs, binary_layer), so the names stand for it.
  key=$( (echo "$ref $config"; cat "$ARCHIVE"; for d in "$@"; do basename "$d"; done) | hash_of)
  tar="$IMAGES/$name-$key.tar"
  if [ ! -f "$tar" ]; then
    cfg=$(mktemp)
    echo "$config" >"$cfg"
    python3 "$ARCHIVE" "$tar" --tag "$ref" --config "$cfg" "$@" >&2 || die "packing $name failed"
    rm -f "$cfg"
  fi
  ln -sfn "$tar" "$OUT/$name.tar"
  # Only the current archive of each image is kept.
  find "$IMAGES" -maxdepth 1 -name "$name-????????????????.tar" ! -name "$(basename "$tar")" -delete
  echo "$name $ref" >>"$OUT/images.list.tmp"
}

# binary_layer NAME FILE DEST: a one-file layer (DEST inside the image, mode 0555), in a folder named by content.
binary_layer() {
  local name=$1 file=$2 dest=$3 key dir
  key=$( (echo "$dest"; cat "$file") | hash_of)
  dir="$IMAGES/layers/$name-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir.tmp"
    install -D -m 0555 "$file" "$dir.tmp/$dest"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    find "$IMAGES/layers" -maxdepth 1 -name "$name-????????????????" ! -name "$(basename "$dir")" -exec rm -rf {} +
  fi
  echo "$dir"
}

config_json() {
  # config_json USER ENTRYPOINT_JSON [WORKDIR]
  printf '{"User":"%s","Entrypoint":%s,"Env":["PATH=/usr/local/bin:/usr/bin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"WorkingDir":"%s","Labels":{"org.opencontainers.image.source":"https://github.com/kproxy-dev/kproxy"}}' \
    "$1" "$2" "${3:-/}"
}

build_kproxy() {
  local cc=$1 bin target
  target=${CARGO_TARGET_DIR:-$KPROXY_ROOT/target}
  for bin in kproxy-sidecar kproxy-operator; do
    if [ ! -x "$target/release/$bin" ]; then
      [ "${KPROXY_IMAGES_NO_CARGO:-0}" = 1 ] || die "$target/release/$bin is missing (cargo build --release failed?)"
      log "no $target/release/$bin yet (make images builds it); skipping its image"
      continue
    fi
    image "$bin" "$IMAGE_REPO/$bin:$APP_VERSION" "$(config_json 65532:65532 "[\"/usr/local/bin/$bin\"]")" \
      "$cc" "$(binary_layer "$bin" "$target/release/$bin" "usr/local/bin/$bin")"
  done
}

build_pause() {
  local dir="$IMAGES/layers/pause-$(hash_of <"$TOOLS_DIR/images/pause.c")"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    gcc -Os -static -o "$dir.tmp/pause" "$TOOLS_DIR/images/pause.c" || die "compiling pause.c failed"
    strip "$dir.tmp/pause"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  image pause kproxy.local/pause:3.10 "$(config_json 65535:65535 '["/pause"]')" "$dir"
}

build_app() {
  local base whl dir key
  # shellcheck disable=SC2046
  base=$(rootfs app $(closure "${APP_PACKAGES[@]}"))
  whl=$(ls "$CACHE_DIR/pip/confluent_kafka-$CONFLUENT_KAFKA_VERSION-"*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$whl" ]; then
    mkdir -p "$CACHE_DIR/pip"
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
      --implementation cp --abi cp311 -d "$CACHE_DIR/pip" "confluent-kafka==$CONFLUENT_KAFKA_VERSION" >&2 ||
      die "downloading confluent-kafka from PyPI failed"
    whl=$(ls "$CACHE_DIR/pip/confluent_kafka-$CONFLUENT_KAFKA_VERSION-"*.whl | head -n 1)
  fi
  key=$( (basename "$whl"; cat "$TOOLS_DIR/images/app/kafka_app.py") | hash_of)
  dir="$IMAGES/layers/app-$key"
  if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/usr/local/lib/python3.11/dist-packages" "$dir.tmp/usr/local/bin"
    python3 -m zipfile -e "$whl" "$dir.tmp/usr/local/lib/python3.11/dist-packages" || die "unpacking $whl failed"
    install -m 0555 "$TOOLS_DIR/images/app/kafka_app.py" "$dir.tmp/usr/local/bin/kafka_app.py"
    ln -s /usr/bin/python3.11 "$dir.tmp/usr/local/bin/python3"
    touch "$dir.tmp/.complete"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  image kafka-client kproxy.local/kafka-client:1 \
    "$(config_json 65532:65532 '["/usr/local/bin/python3","/usr/local/bin/kafka_app.py"]')" "$base" "$dir"
}

build_prometheus() {
  local cc=$1 v
  [ -x "$BIN_DIR/prometheus" ] && [ -x "$BIN_DIR/prometheus-config-reloader" ] || {
    log "no Prometheus binaries in $BIN_DIR (scripts/env/install.sh prometheus); skipping their images"
    return 0
  }
  v=$("$BIN_DIR/prometheus" --version 2>&1 | sed -n 's/^prometheus, version \([^ ]*\).*/\1/p')
  image prometheus "kproxy.local/prometheus:v$v" "$(config_json 65534:65534 '["/bin/prometheus"]' /prometheus)" \
    "$cc" "$(binary_layer prometheus "$BIN_DIR/prometheus" usr/bin/prometheus)"
  v=$("$BIN_DIR/prometheus-config-reloader" --version 2>&1 | sed -n 's/^prometheus-config-reloader, version \([^ ]*\).*/\1/p')
  image prometheus-config-reloader "kproxy.local/prometheus-config-reloader:v$v" \
    "$(config_json 65534:65534 '["/bin/prometheus-config-reloader"]')" \
    "$cc" "$(binary_layer prometheus-config-reloader "$BIN_DIR/prometheus-config-reloader" usr/bin/prometheus-config-reloader)"
}

# import: loads every archive into the node's containerd (namespace k8s.io) when it runs.
import_images() {
  local sock=${KPROXY_CONTAINERD_SOCK:-$NODE_RUN/containerd/containerd.sock} name ref key have n=0
  [ -S "$sock" ] || return 0
  # What this containerd already holds (its root goes with env-down): an unchanged archive is not imported again.
  mkdir -p "$NODE_LIB/imported"
  have=$(ctr --address "$sock" -n k8s.io images ls -q)
  while read -r name ref; do
    key=$(basename "$(readlink -f "$OUT/$name.tar")")
    if [ "$(cat "$NODE_LIB/imported/$name" 2>/dev/null)" = "$key" ] && grep -qxF "$ref" <<<"$have"; then
      continue
    fi
    ctr --address "$sock" -n k8s.io images import "$OUT/$name.tar" >/dev/null ||
      die "importing $name into containerd failed"
    echo "$key" >"$NODE_LIB/imported/$name"
    n=$((n + 1))
  done <"$OUT/images.list"
  log "imported $n changed images into the node's containerd"
}

# The commit the binaries report in kproxy_build_info; "unknown" outside a git checkout.
git_commit() {
  git -C "$KPROXY_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown
}

main() {
  local start cc
  start=$(date +%s)
  mkdir -p "$IMAGES" "$OUT" "$LOG_DIR"
  if [ "${KPROXY_IMAGES_NO_CARGO:-0}" != 1 ]; then
    # kproxy_build_info{commit} of both binaries (make test's release build sets the same).
    KPROXY_GIT_COMMIT=$(git_commit) cargo build --release --locked -p kproxy-sidecar -p kproxy-operator
  fi
  rm -f "$OUT/images.list.tmp"
  cc=$(rootfs cc "${CC_PACKAGES[@]}")
  build_kproxy "$cc"
  build_pause
  build_app
  build_prometheus "$cc"
  mv "$OUT/images.list.tmp" "$OUT/images.list"
  import_images
  log "images ready in $(($(date +%s) - start))s (archives: $OUT)"
  while read -r name ref; do
    printf '  %-28s %-55s %s\n' "$name" "$ref" "$(du -shL "$OUT/$name.tar" | cut -f1)"
  done <"$OUT/images.list"
}

main "$@"
