#!/usr/bin/env bash
# Runs prometheus-operator (built from its Go module by install.sh) against the test API server, with its CRDs
# applied: a Prometheus object in any namespace becomes a StatefulSet of Prometheus pods on the node, running
# the locally built Prometheus and config-reloader images, scraping what ServiceMonitors and PodMonitors select.
#
#   monitoring.sh up       apply the CRDs, start the operator, wait until it answers
#   monitoring.sh down     stop it
#   monitoring.sh status   one line
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

DIR="$ENV_DIR/monitoring"
PKI="$ENV_DIR/kube/pki"
PIDFILE="$DIR/prometheus-operator.pid"
PATTERN="$BIN_DIR/prometheus-operator"

image_ref() { awk -v n="$1" '$1 == n {print $2}' "$CACHE_DIR/images/images.list"; }

healthy() { curl -sf --max-time 2 "http://$(cat "$DIR/address")/healthz" >/dev/null; }

up() {
  is_running "$PIDFILE" "$PATTERN" && return 0
  [ -x "$BIN_DIR/prometheus-operator" ] || die "$BIN_DIR/prometheus-operator is missing; run scripts/env/install.sh prometheus"
  local reloader prometheus port apiserver
  reloader=$(image_ref prometheus-config-reloader)
  prometheus=$(image_ref prometheus)
  [ -n "$reloader" ] && [ -n "$prometheus" ] || die "no Prometheus images in $CACHE_DIR/images/images.list (scripts/images.sh)"
  mkdir -p "$DIR"
  # Server-side: the Prometheus CRD is too large for client-side apply's annotation.
  kubectl --kubeconfig "$ENV_DIR/kubeconfig" apply --server-side --force-conflicts --field-manager=kproxy-env \
    -f "$CACHE_DIR/crds" >"$LOG_DIR/monitoring-crds.log" 2>&1 || die "applying the monitoring CRDs failed; see $LOG_DIR/monitoring-crds.log"
  kubectl --kubeconfig "$ENV_DIR/kubeconfig" wait --for condition=Established --timeout=60s \
    crd/prometheuses.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com crd/servicemonitors.monitoring.coreos.com \
    >>"$LOG_DIR/monitoring-crds.log" 2>&1 || die "the monitoring CRDs were not established; see $LOG_DIR/monitoring-crds.log"
  port=$(free_ports 1)
  echo "127.0.0.1:$port" >"$DIR/address"
  apiserver=$(sed -n 's/^ *server: *//p' "$ENV_DIR/kubeconfig" | head -n 1)
  log "starting prometheus-operator (metrics on 127.0.0.1:$port)"
  spawn "$PIDFILE" "$LOG_DIR/prometheus-operator.log" "$BIN_DIR/prometheus-operator" \
    --apiserver "$apiserver" --ca-file "$PKI/ca.pem" --cert-file "$PKI/admin.pem" --key-file "$PKI/admin.key" \
    --web.listen-address "127.0.0.1:$port" \
    --prometheus-default-base-image "${prometheus%:*}" --prometheus-config-reloader "$reloader" \
    --log-level info
  wait_for prometheus-operator 60 "$LOG_DIR/prometheus-operator.log" "$PIDFILE" "$PATTERN" healthy
}

case ${1:-} in
  up) up ;;
  down) stop_pid prometheus-operator "$PIDFILE" "$PATTERN" ;;
  status)
    if is_running "$PIDFILE" "$PATTERN"; then
      echo "prometheus-operator: running, pid $(cat "$PIDFILE"), http://$(cat "$DIR/address")"
    else
      echo "prometheus-operator: stopped"
    fi
    ;;
  *) die "usage: monitoring.sh up|down|status" ;;
esac
