# Per-broker state of the test environment's Kafka clusters for kafka.sh (sourced, never run): which brokers a
# cluster has, where each one's files, ports and pid live, and its server.properties.
# shellcheck shell=bash

KAFKA_DIR="$ENV_DIR/kafka"
TLS_DIR="$ENV_DIR/tls"
CREDENTIALS="$KAFKA_DIR/credentials.env"
KAFKA_HEAP=${KPROXY_KAFKA_HEAP:-384m}
# Brokers 2.. of a cluster serve only the multi-broker tests' small topics.
KAFKA_EXTRA_HEAP=${KPROXY_KAFKA_EXTRA_HEAP:-256m}
# Short enough for a test to outlive several sessions, long enough for any client's handshake on a busy machine.
LEGACY_REAUTH_MS=12000

cluster_version() {
  case $1 in
    east | west) echo "$KAFKA4_VERSION" ;;
    legacy) echo "$KAFKA39_VERSION" ;;
    *) die "unknown Kafka cluster '$1' (east|west|legacy)" ;;
  esac
}

# The brokers every start of a cluster runs. East has three, so leaders move, restarts roll and one broker can be
# lost without losing the cluster; broker 1 is its controller.
cluster_brokers() {
  case $1 in
    east) echo "1 2 3" ;;
    *) echo 1 ;;
  esac
}

# Every broker a cluster may run: east's broker 4 joins only when a test starts it (`kafka.sh start east 4`); its
# ports are reserved from the start, so the node's DNAT rules cover its POD listener too.
known_brokers() {
  case $1 in
    east) echo "1 2 3 4" ;;
    *) echo 1 ;;
  esac
}

cluster_dir() { echo "$KAFKA_DIR/$1"; }
# Broker 1 keeps the layout of a single-broker cluster (its files at the cluster's top level).
broker_dir() { if [ "$2" = 1 ]; then cluster_dir "$1"; else echo "$(cluster_dir "$1")/broker-$2"; fi; }
log_name() { if [ "$2" = 1 ]; then echo "$1"; else echo "$1-$2"; fi; }
broker_log() { echo "$LOG_DIR/kafka-$(log_name "$1" "$2").log"; }
broker_out() { echo "$LOG_DIR/kafka-$(log_name "$1" "$2").out"; }
pid_file() { echo "$(broker_dir "$1" "$2")/kafka.pid"; }
# What identifies a broker's JVM on its command line.
pid_pattern() { echo "$(broker_dir "$1" "$2")/server.properties"; }
broker_running() { is_running "$(pid_file "$1" "$2")" "$(pid_pattern "$1" "$2")"; }

any_broker_running() {
  local id
  for id in $(known_brokers "$1"); do
    broker_running "$1" "$id" && return 0
  done
  return 1
}

# ports_besides N FILE: N free ports none of which FILE already records.
ports_besides() {
  local n=$1 file=$2 ports p clash
  while :; do
    read -r -a ports <<<"$(free_ports "$n")"
    clash=0
    for p in "${ports[@]}"; do
      grep -qE "=$p\$" "$file" 2>/dev/null && clash=1
    done
    [ "$clash" = 0 ] && echo "${ports[*]}" && return 0
  done
}

# Picks the cluster's broker-1 ports and id once; they stay fixed so a restarted broker comes back where clients
# expect it. The other brokers' ports are added by load_cluster_state.
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
      echo "LAYOUT=$(cluster_brokers "$name" | wc -w)"
    } >"$dir/cluster.env.tmp"
    mv "$dir/cluster.env.tmp" "$dir/cluster.env"
  fi
}

load_cluster_state() {
  local env id ports
  env="$(cluster_dir "$1")/cluster.env"
  # shellcheck disable=SC2046
  unset POD_PORT LAYOUT $(compgen -v | grep -E '^(PLAINTEXT|SASL|POD)_PORT_[0-9]+$' || true)
  # shellcheck source=/dev/null
  source "$env"
  # A cluster.env from before the POD listener gets a port for it.
  if [ -z "${POD_PORT:-}" ]; then
    POD_PORT=$(ports_besides 1 "$env")
    echo "POD_PORT=$POD_PORT" >>"$env"
  fi
  # ...and one from before its cluster had more brokers, ports for them.
  for id in $(known_brokers "$1"); do
    [ "$id" = 1 ] && continue
    local var="PLAINTEXT_PORT_$id"
    [ -n "${!var:-}" ] && continue
    read -r -a ports <<<"$(ports_besides 3 "$env")"
    printf '%s\n' "PLAINTEXT_PORT_$id=${ports[0]}" "SASL_PORT_$id=${ports[1]}" "POD_PORT_$id=${ports[2]}" >>"$env"
    # shellcheck source=/dev/null
    source "$env"
  done
}

# use_broker NAME ID: BROKER_PLAINTEXT, BROKER_SASL and BROKER_POD are that broker's ports (cluster loaded).
use_broker() {
  if [ "$2" = 1 ]; then
    BROKER_PLAINTEXT=$PLAINTEXT_PORT BROKER_SASL=$SASL_PORT BROKER_POD=$POD_PORT
  else
    local p="PLAINTEXT_PORT_$2" s="SASL_PORT_$2" o="POD_PORT_$2"
    BROKER_PLAINTEXT=${!p} BROKER_SASL=${!s} BROKER_POD=${!o}
  fi
}

broker_ports_free() {
  use_broker "$1" "$2"
  port_free "$BROKER_PLAINTEXT" && port_free "$BROKER_SASL" && port_free "$BROKER_POD" &&
    { [ "$2" != 1 ] || port_free "$CONTROLLER_PORT"; }
}

cluster_ports_free() {
  local id
  for id in $(known_brokers "$1"); do
    broker_ports_free "$1" "$id" || return 1
  done
}

# migrate_layout NAME: a cluster stored with another number of brokers (east before it had three) is formatted
# anew, keeping its id and ports: its internal topics were created for the old broker count. Nothing of it runs.
migrate_layout() {
  local name=$1 want dir id
  want=$(cluster_brokers "$name" | wc -w)
  [ "${LAYOUT:-1}" = "$want" ] && return 0
  dir=$(cluster_dir "$name")
  log "$name now has $want brokers (stored with ${LAYOUT:-1}); formatting its storage anew"
  for id in $(known_brokers "$name"); do rm -rf "$(broker_dir "$name" "$id")/data"; done
  grep -v '^LAYOUT=' "$dir/cluster.env" >"$dir/cluster.env.tmp"
  echo "LAYOUT=$want" >>"$dir/cluster.env.tmp"
  mv "$dir/cluster.env.tmp" "$dir/cluster.env"
  LAYOUT=$want
}

# write_server_properties NAME ID: broker ID's config (cluster loaded), regenerated on every start.
write_server_properties() {
  local name=$1 id=$2 dir quorum roles listeners replicas min_isr
  dir=$(broker_dir "$name" "$id")
  mkdir -p "$dir"
  use_broker "$name" "$id"
  if [ "${VERSION%%.*}" -ge 4 ]; then
    # Dynamic quorum, formatted with --standalone.
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT"
  else
    quorum="controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT"
  fi
  roles=broker listeners="PLAINTEXT://127.0.0.1:$BROKER_PLAINTEXT,SASL_SSL://127.0.0.1:$BROKER_SASL"
  if [ "$id" = 1 ]; then
    roles=broker,controller listeners+=",CONTROLLER://127.0.0.1:$CONTROLLER_PORT"
  fi
  # Internal topics and topics created without a replication factor are replicated on every default broker, so
  # one broker restarting leaves them available; tests that need min.insync.replicas set it on their topics.
  replicas=$(cluster_brokers "$name" | wc -w)
  min_isr=$((replicas > 1 ? 2 : 1))
  cat >"$dir/server.properties" <<EOF
# Written by scripts/env/kafka.sh for broker $id of the "$name" test cluster (Kafka $VERSION); regenerated on every start.
process.roles=$roles
node.id=$id
$quorum
listeners=$listeners,POD://127.0.0.1:$BROKER_POD
advertised.listeners=PLAINTEXT://127.0.0.1:$BROKER_PLAINTEXT,SASL_SSL://127.0.0.1:$BROKER_SASL,POD://$BRIDGE_IP:$BROKER_POD
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
default.replication.factor=$replicas
auto.create.topics.enable=true
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
min.insync.replicas=1
log.segment.bytes=67108864
log.retention.hours=24
EOF
  if [ "${VERSION%%.*}" -ge 4 ]; then
    cat >>"$dir/server.properties" <<EOF
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
EOF
  fi
  if [ "$name" = legacy ]; then
    echo "listener.name.sasl_ssl.scram-sha-512.connections.max.reauth.ms=$LEGACY_REAUTH_MS" >>"$dir/server.properties"
  fi
}
