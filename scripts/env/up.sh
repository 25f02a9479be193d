#!/usr/bin/env bash
# `make env-up`: installs what is missing, starts every service of the test environment that is not already running
# (Kafka east with three brokers, west and legacy; etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# the node: containerd, kubelet, kube-proxy; prometheus-operator), waits until each answers, and writes
# .cache/env.sh for tests and shells (`source .cache/env.sh`). Running it again is harmless.
# KPROXY_ENV_SKIP_KUBE=1 starts Kafka only.
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

here=$(dirname "$0")
start=$(date +%s)
mkdir -p "$LOG_DIR" "$ENV_DIR"
# One env-up/env-down at a time: two concurrent runs would start the same service twice on the same ports.
exec 9>"$ENV_DIR/.lock"
flock 9
claim_machine

kube=0
[ "${KPROXY_ENV_SKIP_KUBE:-0}" = 1 ] || kube=1
# Cold Go builds first, alone on the cores; then the JVMs start while the control plane comes up.
if [ "$kube" = 1 ]; then
  "$here/install.sh" node etcd kube helm crds prometheus
  # The bridge first: the API server listens on its address and the brokers advertise it to pods.
  "$here/node.sh" net
fi
"$here/install.sh" apt rdkafka python kafka
"$here/kafka.sh" launch
if [ "$kube" = 1 ]; then
  "$here/k8s.sh" up
fi
"$here/kafka.sh" up
if [ "$kube" = 1 ]; then
  "$here/node.sh" up
  "$here/monitoring.sh" up
fi

# env.sh is written last, and atomically, so its presence means the environment answered.
write_env() {
  local out="$CACHE_DIR/env.sh" kafka
  # shellcheck source=/dev/null
  source "$ENV_DIR/kafka/credentials.env"
  kafka=$("$here/kafka.sh" exports)
  {
    echo "# Written by scripts/env/up.sh: the running test environment. Source it: . .cache/env.sh"
    echo "$kafka"
    echo "export KPROXY_KAFKA_CA=\"$ENV_DIR/tls/ca.pem\""
    echo "export KPROXY_KAFKA_USER=\"$KAFKA_USER\""
    echo "export KPROXY_KAFKA_PASSWORD=\"$KAFKA_PASSWORD\""
    echo "export KPROXY_KAFKA_SASL_PROPERTIES=\"$ENV_DIR/kafka/client-sasl.properties\""
    echo "export KPROXY_KAFKA_LIBS=\"$CACHE_DIR/kafka/$KAFKA4_VERSION/lib\""
    echo "export KPROXY_KAFKA_LIBS_LEGACY=\"$CACHE_DIR/kafka/$KAFKA39_VERSION/lib\""
    echo "export KPROXY_KAFKA_SCRIPT=\"$KPROXY_ROOT/scripts/env/kafka.sh\""
    if [ "$kube" = 1 ]; then
      echo "export KUBECONFIG=\"$ENV_DIR/kubeconfig\""
      echo "export KPROXY_PROM_CRDS=\"$CACHE_DIR/crds\""
      echo "export KPROXY_NODE=\"$NODE_NAME\""
      echo "export KPROXY_IMAGES=\"$CACHE_DIR/images/images.list\""
      echo "export KPROXY_PROMETHEUS_OPERATOR=\"$(cat "$ENV_DIR/monitoring/address")\""
    fi
    echo "export KPROXY_PYTHON=\"$CACHE_DIR/venv/bin/python\""
    echo "export KPROXY_LOG_DIR=\"$LOG_DIR\""
    echo "export KPROXY_ENV_DIR=\"$ENV_DIR\""
    echo "export PATH=\"$BIN_DIR:\$PATH\""
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}
write_env

echo
echo "test environment up in $(($(date +%s) - start))s (logs: $LOG_DIR)"
"$here/kafka.sh" status
if [ "$kube" = 1 ]; then
  "$here/k8s.sh" status
  "$here/node.sh" status
  "$here/monitoring.sh" status
fi
echo "environment: source $CACHE_DIR/env.sh"
