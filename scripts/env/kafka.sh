#!/usr/bin/env bash
# Runs the test environment's three independent single-node KRaft Kafka clusters: "east" and "west" (4.x) and
# "legacy" (3.9.x), each with PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and CONTROLLER listeners on loopback, and a POD
# listener (PLAINTEXT, on loopback too) advertised at the node bridge's address, which pods reach through a DNAT
# rule (node.sh): a client in a pod must be handed broker addresses it can dial.
# Legacy's SASL_SSL sessions expire after LEGACY_REAUTH_MS (KIP-368), so clients must re-authenticate there.
#
#   kafka.sh up                  install if needed, start every cluster that is not running, wait until ready
#   kafka.sh launch              the same without waiting (up.sh overlaps the JVM start-ups with other work)
#   kafka.sh down                stop every cluster (data and ports are kept for the next start)
#   kafka.sh start NAME          start one cluster on its recorded ports with its data (e.g. after `stop`)
#   kafka.sh stop NAME           graceful stop (SIGTERM, controlled shutdown)
#   kafka.sh kill NAME           crash it (SIGKILL), for fault tests
#   kafka.sh status              one line per cluster
#
# State lives in .cache/env/kafka/NAME/ (cluster.env with ports and cluster id, server.properties, data/,
# kafka.pid); broker logs go to .cache/logs/kafka-NAME.log (log4j) and kafka-NAME.out (stdout/stderr).
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

KAFKA_DIR="$ENV_DIR/kafka"
TLS_DIR="$ENV_DIR/tls"
CREDENTIALS="$KAFKA_DIR/credentials.env"
KAFKA_HEAP=${KPROXY_KAFKA_HEAP:-384m}
READY_TIMEOUT=${KPROXY_KAFKA_READY_TIMEOUT:-120}
# Short enough for a test to outlive several sessions, long enough for any client's handshake on a busy machine.
LEGACY_REAUTH_MS=12000

cluster_version() {
  case $1 in
    east | west) echo "$KAFKA4_VERSION" ;;
    legacy) echo "$KAFKA39_VERSION" ;;
    *) die "unknown Kafka cluster '$1' (east|west|legacy)" ;;
  esac
}

cluster_dir() { echo "$KAFKA_DIR/$1"; }
pid_file() { echo "$KAFKA_DIR/$1/kafka.pid"; }
# What identifies this cluster's JVM on its command line.
pid_pattern() { echo "$KAFKA_DIR/$1/server.properties"; }
cluster_running() { is_running "$(pid_file "$1")" "$(pid_pattern "$1")"; }

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

# Picks the cluster's ports and id once; they stay fixed so a restarted broker comes back where clients expect it.
ensure_cluster_state() {
  local name=$1 dir ports
  dir=$(cluster_dir "$name")
  mkdir -p "$dir"
  if [ ! -f "$dir/cluster.env" ]; then
    read -r -a ports <<<"$(free_ports 4)"
    {
      echo "PLAINTEXT_PORT=${ports[0]}"
      echo "SASL_PORT=${ports[1]}"
      echo "CONTROLLER_PORT=${ports[2]}"
      echo "POD_PORT=${ports[3]}"
      # A Kafka cluster id is 16 random bytes in URL-safe base64 without padding.
      echo "CLUSTER_ID=$(openssl rand -base64 16 | tr '+/' '-_' | tr -d '=')"
      echo "VERSION=$(cluster_version "$name")"
    } >"$dir/cluster.env.tmp"
    mv "$dir/cluster.env.tmp" "$dir/cluster.env"
  fi
}

load_cluster_state() {
  local env
  env="$(cluster_dir "$1")/cluster.env"
  unset POD_PORT
  # shellcheck source=/dev/null
  source "$env"
  # A cluster.env from before the POD listener gets a port for it.
  if [ -z "${POD_PORT:-}" ]; then
    POD_PORT=$(free_ports 1)
    echo "POD_PORT=$POD_PORT" >>"$env"
  fi
}

write_server_properties() {
  local name=$1 dir quorum
  dir=$(cluster_dir "$name")
  if [ "${VERSION%%.*}" -ge 4 ]; then
    # Dynamic quorum, formatted with --standalone.
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT"
  else
    quorum="controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by scripts/env/kafka.sh for the "$name" test cluster (Kafka $VERSION); regenerated on every start.
process.roles=broker,controller
node.id=1
$quorum
listeners=PLAINTEXT://127.0.0.1:$PLAINTEXT_PORT,SASL_SSL://127.0.0.1:$SASL_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,POD://127.0.0.1:$POD_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PLAINTEXT_PORT,SASL_SSL://127.0.0.1:$SASL_PORT,POD://$BRIDGE_IP:$POD_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,POD:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$(cat "$TLS_DIR/store.password")
ssl.key.password=$(cat "$TLS_DIR/store.password")
ssl.client.auth=none

log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
min.insync.replicas=1
log.segment.bytes=67108864
log.retention.hours=24
EOF
  if [ "${VERSION%%.*}" -ge 4 ]; then
    cat >>"$dir/server.properties" <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  fi
  if [ "$name" = legacy ]; then
    echo "listener.name.sasl_ssl.scram-sha-512.connections.max.reauth.ms=$LEGACY_REAUTH_MS" >>"$dir/server.properties"
  fi
}

# java_cmd VERSION NAME CLASS ARGS...: sets JAVA_CMD to the JVM command line for one of Kafka's main classes.
java_cmd() {
  local version=$1 name=$2 lib
  shift 2
  lib="$CACHE_DIR/kafka/$version/lib"
  local logging=("-Dlog4j2.configurationFile=$TOOLS_DIR/kafka-4/log4j2.properties")
  if [ "${version%%.*}" -lt 4 ]; then
    logging=("-Dlog4j.configuration=file:$TOOLS_DIR/kafka-3.9/log4j.properties")
  fi
  JAVA_CMD=(java "-Xmx$KAFKA_HEAP" -Xms64m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true "-Dkafka.logs.dir=$LOG_DIR" "-Dkafka.cluster.name=$name" "${logging[@]}" \
    -cp "$lib/*" "$@")
}

format_storage() {
  local name=$1 dir
  dir=$(cluster_dir "$name")
  [ -f "$dir/data/meta.properties" ] && return 0
  log "formatting storage of $name (Kafka $VERSION, cluster id $CLUSTER_ID)"
  local args=(format -t "$CLUSTER_ID" -c "$dir/server.properties"
    --add-scram "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_PASSWORD]")
  [ "${VERSION%%.*}" -ge 4 ] && args+=(--standalone)
  java_cmd "$VERSION" "$name-format" kafka.tools.StorageTool
  if ! "${JAVA_CMD[@]}" "${args[@]}" >>"$LOG_DIR/kafka-$name-format.log" 2>&1; then
    die "formatting $name's storage failed; see $LOG_DIR/kafka-$name-format.log"
  fi
}

ports_free() {
  port_free "$PLAINTEXT_PORT" && port_free "$SASL_PORT" && port_free "$CONTROLLER_PORT" && port_free "$POD_PORT"
}

kcat_metadata() {
  kcat -L -m 5 -b "$@" | grep -q '1 brokers:'
}

kcat_sasl_args() {
  KCAT_SASL=(-X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512 -X "sasl.username=$KAFKA_USER" \
    -X "sasl.password=$KAFKA_PASSWORD" -X "ssl.ca.location=$TLS_DIR/ca.pem")
}

wait_ready() {
  local name=$1 out="$LOG_DIR/kafka-$1.out"
  command -v kcat >/dev/null || die "kcat is missing (scripts/env/install.sh apt installs it)"
  wait_for "Kafka $name (PLAINTEXT 127.0.0.1:$PLAINTEXT_PORT)" "$READY_TIMEOUT" "$out" "$(pid_file "$name")" \
    "$(pid_pattern "$name")" kcat_metadata "127.0.0.1:$PLAINTEXT_PORT"
  kcat_sasl_args
  wait_for "Kafka $name (SASL_SSL 127.0.0.1:$SASL_PORT)" 30 "$LOG_DIR/kafka-$name.log" "$(pid_file "$name")" \
    "$(pid_pattern "$name")" kcat_metadata "127.0.0.1:$SASL_PORT" "${KCAT_SASL[@]}"
}

# start_cluster NAME [wait|nowait]: starts NAME unless it runs; "wait" (a single restart) keeps its ports and
# returns once it answers metadata; "nowait" (part of `up`) recreates it on new ports if another process took one.
start_cluster() {
  local name=$1 wait=${2:-wait} dir
  dir=$(cluster_dir "$name")
  ensure_credentials
  ensure_tls
  ensure_cluster_state "$name"
  load_cluster_state "$name"
  if ! cluster_running "$name"; then
    [ -f "$CACHE_DIR/kafka/$VERSION/lib/kafka_2.13-$VERSION.jar" ] ||
      die "Kafka $VERSION is not installed; run scripts/env/install.sh kafka"
    if ! ports_free; then
      # A single restart must come back where clients expect it; only a whole `up` may move (env.sh follows).
      [ "$wait" = wait ] && die "a port of $name ($PLAINTEXT_PORT/$SASL_PORT/$CONTROLLER_PORT) is taken by" \
        "another process; not restarting it elsewhere"
      log "a port of $name ($PLAINTEXT_PORT/$SASL_PORT/$CONTROLLER_PORT) is taken; recreating $name on new ports"
      rm -rf "$dir"
      ensure_cluster_state "$name"
      load_cluster_state "$name"
    fi
    write_server_properties "$name"
    write_client_config
    format_storage "$name"
    java_cmd "$VERSION" "$name" kafka.Kafka "$dir/server.properties"
    log "starting Kafka $name ($VERSION) on 127.0.0.1:$PLAINTEXT_PORT (PLAINTEXT), :$SASL_PORT (SASL_SSL)"
    spawn "$(pid_file "$name")" "$LOG_DIR/kafka-$name.out" "${JAVA_CMD[@]}"
  fi
  if [ "$wait" = wait ]; then
    wait_ready "$name"
  fi
}

status() {
  local name
  for name in "${KAFKA_CLUSTERS[@]}"; do
    if [ -f "$(cluster_dir "$name")/cluster.env" ]; then
      load_cluster_state "$name"
      if cluster_running "$name"; then
        echo "kafka $name ($VERSION): running, pid $(cat "$(pid_file "$name")"), PLAINTEXT 127.0.0.1:$PLAINTEXT_PORT, SASL_SSL 127.0.0.1:$SASL_PORT, pods $BRIDGE_IP:$POD_PORT"
      else
        echo "kafka $name ($VERSION): stopped (ports $PLAINTEXT_PORT/$SASL_PORT/$CONTROLLER_PORT kept)"
      fi
    else
      echo "kafka $name: never started"
    fi
  done
}

main() {
  local cmd=${1:-}
  mkdir -p "$KAFKA_DIR" "$LOG_DIR"
  case $cmd in
    launch | up)
      "$(dirname "$0")/install.sh" apt rdkafka kafka
      local name
      # Start all three JVMs first so their start-ups overlap, then wait for each.
      for name in "${KAFKA_CLUSTERS[@]}"; do start_cluster "$name" nowait; done
      [ "$cmd" = launch ] && return 0
      for name in "${KAFKA_CLUSTERS[@]}"; do
        load_cluster_state "$name"
        wait_ready "$name"
      done
      ;;
    down)
      for name in "${KAFKA_CLUSTERS[@]}"; do stop_pid "kafka $name" "$(pid_file "$name")" "$(pid_pattern "$name")"; done
      ;;
    start)
      [ $# -eq 2 ] || die "usage: kafka.sh start NAME"
      cluster_version "$2" >/dev/null
      start_cluster "$2"
      ;;
    stop | kill)
      [ $# -eq 2 ] || die "usage: kafka.sh $cmd NAME"
      cluster_version "$2" >/dev/null
      local signal=TERM
      [ "$cmd" = kill ] && signal=KILL
      stop_pid "kafka $2" "$(pid_file "$2")" "$(pid_pattern "$2")" "$signal"
      ;;
    status) status ;;
    *) die "usage: kafka.sh up|launch|down|status|start NAME|stop NAME|kill NAME" ;;
  esac
}

main "$@"
