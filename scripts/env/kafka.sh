#!/usr/bin/env bash
# Runs the test environment's KRaft Kafka clusters: "east" (4.x, three brokers: broker 1 is also the cluster's
# single controller, brokers 2 and 3 are brokers only; a fourth, broker 4, has its ports reserved and joins only
# when a test starts it), "west" (4.x) and "legacy" (3.9.x), both single-node. Every broker has PLAINTEXT and
# SASL_SSL (SCRAM-SHA-512) listeners on loopback and a POD listener (PLAINTEXT, on loopback too) advertised at the
# node bridge's address, which pods reach through a DNAT rule (node.sh): a client in a pod must be handed broker
# addresses it can dial. Legacy's SASL_SSL sessions expire after LEGACY_REAUTH_MS (KIP-368).
#
#   kafka.sh up                  install if needed, start every cluster that is not running, wait until ready
#   kafka.sh launch              the same without waiting (up.sh overlaps the JVM start-ups with other work)
#   kafka.sh down                stop every cluster (data and ports are kept for the next start)
#   kafka.sh start NAME [ID]     start a cluster's brokers (or broker ID) on their recorded ports with their data
#   kafka.sh stop NAME [ID]      graceful stop (SIGTERM, controlled shutdown) of every broker of NAME, or of one
#   kafka.sh kill NAME [ID]      crash them (SIGKILL), for fault tests
#   kafka.sh status              one line per broker
#   kafka.sh exports             the environment variables up.sh writes into env.sh
#
# State lives in .cache/env/kafka/NAME/ (cluster.env with every broker's ports and the cluster id; broker 1's
# server.properties, data/ and kafka.pid; broker-N/ for the others); logs go to .cache/logs/kafka-NAME.log and
# kafka-NAME.out for broker 1, kafka-NAME-N.* for broker N.
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/env/kafka-broker.sh
source "$(dirname "$0")/kafka-broker.sh"

READY_TIMEOUT=${KPROXY_KAFKA_READY_TIMEOUT:-120}

# One SCRAM user for every cluster; the password is generated once.
ensure_credentials() {
  mkdir -p "$KAFKA_DIR"
  if [ ! -f "$CREDENTIALS" ]; then
    printf 'KAFKA_USER=kproxy\nKAFKA_PASSWORD=%s\n' "$(openssl rand -hex 16)" >"$CREDENTIALS.tmp"
    mv "$CREDENTIALS.tmp" "$CREDENTIALS"
  fi
  # shellcheck source=/dev/null
  source "$CREDENTIALS"
}

# One CA for the whole environment; the brokers share a certificate for 127.0.0.1/localhost.
ensure_tls() {
  [ -f "$TLS_DIR/broker.p12" ] && return 0
  mkdir -p "$TLS_DIR"
  local tmp
  tmp=$(mktemp -d "$TLS_DIR/.gen.XXXXXX")
  log "generating the test CA and the broker certificate"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=kproxy test CA" \
      -keyout "$tmp/ca.key" -out "$tmp/ca.pem" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" -keyout "$tmp/broker.key" -out "$tmp/broker.csr"
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth,clientAuth" \
      "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$tmp/broker.ext"
    openssl x509 -req -sha256 -days 3650 -in "$tmp/broker.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
      -CAcreateserial -extfile "$tmp/broker.ext" -out "$tmp/broker.pem"
    openssl rand -hex 12 >"$tmp/store.password"
    openssl pkcs12 -export -name broker -in "$tmp/broker.pem" -inkey "$tmp/broker.key" -certfile "$tmp/ca.pem" \
      -passout "file:$tmp/store.password" -out "$tmp/broker.p12"
  } >"$LOG_DIR/tls-gen.log" 2>&1 || die "generating certificates failed; see $LOG_DIR/tls-gen.log"
  rm -f "$tmp/broker.csr" "$tmp/broker.ext" "$tmp/ca.srl"
  mv "$tmp"/* "$TLS_DIR/"
  rmdir "$tmp"
}

# The Java client settings for the SASL_SSL listeners (for Kafka's tools: --command-config / --producer.config).
write_client_config() {
  cat >"$KAFKA_DIR/client-sasl.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_USER" password="$KAFKA_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
EOF
}

# java_cmd VERSION LOGNAME CLASS ARGS...: sets JAVA_CMD to the JVM command line for one of Kafka's main classes.
java_cmd() {
  local version=$1 name=$2 lib heap=$KAFKA_HEAP
  shift 2
  lib="$CACHE_DIR/kafka/$version/lib"
  # Brokers other than a cluster's first only carry the multi-broker tests' small topics.
  [[ $name =~ -[0-9]+$ ]] && heap=$KAFKA_EXTRA_HEAP
  local logging=("-Dlog4j2.configurationFile=$TOOLS_DIR/kafka-4/log4j2.properties")
  if [ "${version%%.*}" -lt 4 ]; then
    logging=("-Dlog4j.configuration=file:$TOOLS_DIR/kafka-3.9/log4j.properties")
  fi
  JAVA_CMD=(java "-Xmx$heap" -Xms64m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" "-Dkafka.cluster.name=$name" "${logging[@]}" \
    -cp "$lib/*" "$@")
}

# format_storage NAME ID: formats a broker's log dir once (the controller's with the SCRAM user: it lives in the
# cluster metadata, which brokers fetch from the controller).
format_storage() {
  local name=$1 id=$2 dir
  dir=$(broker_dir "$name" "$id")
  [ -f "$dir/data/meta.properties" ] && return 0
  log "formatting storage of $name broker $id (Kafka $VERSION, cluster id $CLUSTER_ID)"
  # An id may start with "-": glued to its option it is not taken for another option.
  local args=(format "--cluster-id=$CLUSTER_ID" -c "$dir/server.properties")
  if [ "$id" = 1 ]; then
    args+=(--add-scram "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]")
    [ "${VERSION%%.*}" -ge 4 ] && args+=(--standalone)
  fi
  java_cmd "$VERSION" "$(log_name "$name" "$id")-format" kafka.tools.StorageTool
  if ! "${JAVA_CMD[@]}" "${args[@]}" >>"$LOG_DIR/kafka-$(log_name "$name" "$id")-format.log" 2>&1; then
    die "formatting $name broker $id's storage failed; see $LOG_DIR/kafka-$(log_name "$name" "$id")-format.log"
  fi
}

# kcat_broker_listed BOOTSTRAP ID [KCAT OPTIONS]: the broker at BOOTSTRAP answers metadata that lists broker ID
# (a broker is listed once it registered and is unfenced).
kcat_broker_listed() {
  local bootstrap=$1 id=$2
  shift 2
  kcat -L -m 5 -b "$bootstrap" "$@" | grep -qE "^ +broker $id at "
}

kcat_sasl_args() {
  KCAT_SASL=(-X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512 -X "sasl.username=$KAFKA_USER" \
    -X "sasl.password=$KAFKA_PASSWORD" -X "ssl.ca.location=$TLS_DIR/ca.pem")
}

# wait_ready NAME ID: waits until the broker answers on both of its listeners.
wait_ready() {
  local name=$1 id=$2 what
  command -v kcat >/dev/null || die "kcat is missing (scripts/env/install.sh apt installs it)"
  use_broker "$name" "$id"
  what="Kafka $name broker $id"
  wait_for "$what (PLAINTEXT 127.0.0.1:$BROKER_PLAINTEXT)" "$READY_TIMEOUT" "$(broker_out "$name" "$id")" \
    "$(pid_file "$name" "$id")" "$(pid_pattern "$name" "$id")" kcat_broker_listed "127.0.0.1:$BROKER_PLAINTEXT" "$id"
  kcat_sasl_args
  wait_for "$what (SASL_SSL 127.0.0.1:$BROKER_SASL)" 30 "$(broker_log "$name" "$id")" "$(pid_file "$name" "$id")" \
    "$(pid_pattern "$name" "$id")" kcat_broker_listed "127.0.0.1:$BROKER_SASL" "$id" "${KCAT_SASL[@]}"
}

# spawn_broker NAME ID: starts one broker of a loaded cluster unless it runs; a taken port is an error (a broker
# must come back where clients and the other brokers expect it).
spawn_broker() {
  local name=$1 id=$2
  broker_running "$name" "$id" && return 0
  [ -f "$CACHE_DIR/kafka/$VERSION/lib/kafka_2.13-$VERSION.jar" ] ||
    die "Kafka $VERSION is not installed; run scripts/env/install.sh kafka"
  use_broker "$name" "$id"
  broker_ports_free "$name" "$id" || die "a port of $name broker $id ($BROKER_PLAINTEXT/$BROKER_SASL/$BROKER_POD)" \
    "is taken by another process; not restarting it elsewhere"
  write_server_properties "$name" "$id"
  format_storage "$name" "$id"
  java_cmd "$VERSION" "$(log_name "$name" "$id")" kafka.Kafka "$(broker_dir "$name" "$id")/server.properties"
  log "starting Kafka $name broker $id ($VERSION) on 127.0.0.1:$BROKER_PLAINTEXT (PLAINTEXT), :$BROKER_SASL (SASL_SSL)"
  spawn "$(pid_file "$name" "$id")" "$(broker_out "$name" "$id")" "${JAVA_CMD[@]}"
}

# at_once CMD ARG...: runs `CMD ARG` for every ARG at the same time (JVM start-ups and storage formats overlap);
# fails once all are done if any failed.
at_once() {
  local cmd=$1 arg pid pids=() rc=0
  shift
  for arg in "$@"; do
    "$cmd" "$arg" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  return $rc
}

# start_cluster NAME [wait|nowait] [ID]: starts NAME's brokers (or broker ID) that are not running. "nowait" (part
# of `up`) recreates a cluster none of whose brokers runs on new ports if another process took one of them.
# Credentials and certificates exist already (prepare).
start_cluster() {
  local name=$1 wait=${2:-wait} only=${3:-} id ids
  ensure_cluster_state "$name"
  load_cluster_state "$name"
  ids=${only:-$(cluster_brokers "$name")}
  if [ -z "$only" ] && ! any_broker_running "$name"; then
    if ! cluster_ports_free "$name"; then
      [ "$wait" = wait ] && die "a port of $name is taken by another process; not restarting it elsewhere"
      log "a port of $name is taken; recreating $name on new ports"
      rm -rf "$(cluster_dir "$name")"
      ensure_cluster_state "$name"
      load_cluster_state "$name"
    fi
    migrate_layout "$name"
  fi
  # shellcheck disable=SC2086
  at_once spawn_one $ids || die "starting $name failed"
  if [ "$wait" = wait ]; then
    for id in $ids; do wait_ready "$name" "$id"; done
  fi
}

# For at_once: one broker of the cluster start_cluster is starting (its `name`).
spawn_one() { spawn_broker "$name" "$1"; }
start_nowait() { start_cluster "$1" nowait; }

prepare() {
  ensure_credentials
  ensure_tls
  write_client_config
}

# stop_cluster NAME SIGNAL [ID]: stops broker ID, or every broker of NAME: the controller-less brokers together
# first (their controlled shutdown needs the controller), then broker 1.
stop_cluster() {
  local name=$1 signal=$2 only=${3:-}
  if [ -n "$only" ]; then
    stop_one "$only"
    return 0
  fi
  # shellcheck disable=SC2046
  at_once stop_one $(known_brokers "$name" | tr ' ' '\n' | grep -vx 1)
  stop_one 1
}

# For at_once: one broker of the cluster stop_cluster is stopping (its `name`, with its `signal`).
stop_one() { stop_pid "kafka $name broker $1" "$(pid_file "$name" "$1")" "$(pid_pattern "$name" "$1")" "$signal"; }

stop_all() { stop_cluster "$1" TERM; }

status() {
  local name id
  for name in "${KAFKA_CLUSTERS[@]}"; do
    if [ ! -f "$(cluster_dir "$name")/cluster.env" ]; then
      echo "kafka $name: never started"
      continue
    fi
    load_cluster_state "$name"
    for id in $(known_brokers "$name"); do
      use_broker "$name" "$id"
      if broker_running "$name" "$id"; then
        echo "kafka $name broker $id ($VERSION): running, pid $(cat "$(pid_file "$name" "$id")"), PLAINTEXT" \
          "127.0.0.1:$BROKER_PLAINTEXT, SASL_SSL 127.0.0.1:$BROKER_SASL, pods $BRIDGE_IP:$BROKER_POD"
      else
        echo "kafka $name broker $id ($VERSION): stopped (ports $BROKER_PLAINTEXT/$BROKER_SASL/$BROKER_POD kept)"
      fi
    done
  done
}

# The clusters' addresses for env.sh: KPROXY_KAFKA_<NAME>[_SASL|_POD] are broker 1's (what single-broker tests
# dial), KPROXY_KAFKA_<NAME>_BROKERS every broker a start runs, KPROXY_KAFKA_<NAME>_<ID> each known broker's.
exports() {
  local name upper id all
  for name in "${KAFKA_CLUSTERS[@]}"; do
    [ -f "$(cluster_dir "$name")/cluster.env" ] || continue
    load_cluster_state "$name"
    upper=${name^^}
    echo "export KPROXY_KAFKA_${upper}=\"127.0.0.1:$PLAINTEXT_PORT\""
    echo "export KPROXY_KAFKA_${upper}_SASL=\"127.0.0.1:$SASL_PORT\""
    # What a pod on the node dials (the POD listener, DNATed from the bridge address).
    echo "export KPROXY_KAFKA_${upper}_POD=\"$BRIDGE_IP:$POD_PORT\""
    all=""
    for id in $(known_brokers "$name"); do
      use_broker "$name" "$id"
      echo "export KPROXY_KAFKA_${upper}_${id}=\"127.0.0.1:$BROKER_PLAINTEXT\""
      [[ " $(cluster_brokers "$name") " == *" $id "* ]] && all+="${all:+,}127.0.0.1:$BROKER_PLAINTEXT"
    done
    echo "export KPROXY_KAFKA_${upper}_BROKERS=\"$all\""
  done
}

# The named cluster, and the optional broker id, of a start/stop/kill.
check_target() {
  [ $# -ge 1 ] && [ $# -le 2 ] || die "usage: kafka.sh start|stop|kill NAME [ID]"
  cluster_version "$1" >/dev/null
  [ $# -eq 1 ] || [[ " $(known_brokers "$1") " == *" $2 "* ]] || die "$1 has no broker $2 ($(known_brokers "$1"))"
}

main() {
  local cmd=${1:-} name
  mkdir -p "$KAFKA_DIR" "$LOG_DIR"
  case $cmd in
    launch | up)
      "$(dirname "$0")/install.sh" apt rdkafka kafka
      prepare
      # Start every JVM first so their start-ups overlap, then wait for each.
      at_once start_nowait "${KAFKA_CLUSTERS[@]}" || die "starting the Kafka clusters failed"
      [ "$cmd" = launch ] && return 0
      for name in "${KAFKA_CLUSTERS[@]}"; do start_cluster "$name" wait; done
      ;;
    down)
      at_once stop_all "${KAFKA_CLUSTERS[@]}"
      ;;
    start)
      shift
      check_target "$@"
      prepare
      start_cluster "$1" wait "${2:-}"
      ;;
    stop | kill)
      shift
      check_target "$@"
      local signal=TERM
      [ "$cmd" = kill ] && signal=KILL
      stop_cluster "$1" "$signal" "${2:-}"
      ;;
    status) status ;;
    exports) exports ;;
    *) die "usage: kafka.sh up|launch|down|status|exports|start NAME [ID]|stop NAME [ID]|kill NAME [ID]" ;;
  esac
}

main "$@"
