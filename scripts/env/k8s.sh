#!/usr/bin/env bash
# Runs the test environment's Kubernetes control plane: etcd on loopback, kube-apiserver on the node bridge's
# address (client-certificate admin auth, Node+RBAC authorization; see node.sh), kube-controller-manager with the
# controllers a one-node cluster uses, and kube-scheduler. The node itself (containerd, kubelet, kube-proxy) is
# node.sh's.
#
#   k8s.sh up        start whatever is not running and wait for /readyz; writes .cache/env/kubeconfig
#   k8s.sh down      stop all four
#   k8s.sh status    one line per process
#   k8s.sh kubeconfig USER FILE   a kubeconfig for one of the environment's identities (node, kube-proxy, ...)
#
# etcd starts from an empty data dir whenever it was not running, so every `make env-up` gets a clean cluster.
# State lives in .cache/env/kube/; logs go to .cache/logs/{etcd,kube-apiserver,kube-controller-manager}.log.
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

KUBE_DIR="$ENV_DIR/kube"
PKI="$KUBE_DIR/pki"
KUBECONFIG_FILE="$ENV_DIR/kubeconfig"
READY_TIMEOUT=${KPROXY_KUBE_READY_TIMEOUT:-120}
# Owner-reference garbage collection, namespace deletion, default service accounts and their tokens, the
# kube-root-ca.crt ConfigMap that token volumes reference, aggregated ClusterRoles, Deployments/ReplicaSets and
# StatefulSets (Prometheus) making Pods, Endpoints/EndpointSlices for Services (kube-proxy, Prometheus discovery),
# node lifecycle (clears the not-ready taint a node registers with) and pod garbage collection.
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,serviceaccount-controller
KCM_CONTROLLERS+=,serviceaccount-token-controller,root-ca-certificate-publisher-controller
KCM_CONTROLLERS+=,clusterrole-aggregation-controller,deployment-controller,replicaset-controller
KCM_CONTROLLERS+=,statefulset-controller,endpoints-controller,endpointslice-controller
KCM_CONTROLLERS+=,node-lifecycle-controller,pod-garbage-collector-controller
# Bumped when the set of certificates changes, so an older .cache/env is regenerated.
PKI_VERSION=2

pidfile() { echo "$KUBE_DIR/$1.pid"; }
# Each process is recognised by its binary path under .cache/bin plus a flag unique to this environment.
pattern() { echo "$BIN_DIR/$1"; }
running() { is_running "$(pidfile "$1")" "$(pattern "$1")"; }

ensure_ports() {
  if [ ! -f "$KUBE_DIR/ports.env" ]; then
    local p
    read -r -a p <<<"$(free_ports 5)"
    mkdir -p "$KUBE_DIR"
    printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\nKCM_PORT=%s\nSCHEDULER_PORT=%s\n' "${p[@]}" \
      >"$KUBE_DIR/ports.env.tmp"
    mv "$KUBE_DIR/ports.env.tmp" "$KUBE_DIR/ports.env"
  fi
  # shellcheck source=/dev/null
  source "$KUBE_DIR/ports.env"
  if [ -z "${SCHEDULER_PORT:-}" ]; then
    SCHEDULER_PORT=$(free_ports 1)
    echo "SCHEDULER_PORT=$SCHEDULER_PORT" >>"$KUBE_DIR/ports.env"
  fi
}

# sign NAME SUBJECT EXTENSIONS...: a key and a certificate signed by the environment's Kubernetes CA.
sign() {
  local name=$1 subject=$2
  shift 2
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "$subject" -keyout "$PKI/$name.key" -out "$PKI/$name.csr"
  printf '%s\n' "$@" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >"$PKI/$name.ext"
  openssl x509 -req -sha256 -days 3650 -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
    -CAcreateserial -extfile "$PKI/$name.ext" -out "$PKI/$name.pem"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

ensure_pki() {
  [ "$(cat "$PKI/.complete" 2>/dev/null)" = "$PKI_VERSION" ] && return 0
  rm -rf "$PKI"
  mkdir -p "$PKI"
  log "generating the Kubernetes CA, serving, client and service-account keys"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=kproxy test kubernetes CA" \
      -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
    sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:$BRIDGE_IP,IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # system:masters: the admin the tests act as, and the controller manager (which then needs no per-controller
    # service-account credentials).
    sign admin "/O=system:masters/CN=kproxy-admin" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    sign controller-manager "/O=system:masters/CN=system:kube-controller-manager" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    # The node: kubelet's client identity (the Node authorizer scopes it to its own node and pods), the API
    # server's identity towards kubelets, kubelet's serving certificate (verified by the API server), and the
    # scheduler and kube-proxy (as privileged as the controller manager, like the admin).
    sign node "/O=system:nodes/CN=system:node:$NODE_NAME" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    sign kubelet "/CN=$NODE_NAME" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:$BRIDGE_IP,DNS:$NODE_NAME"
    sign scheduler "/O=system:masters/CN=system:kube-scheduler" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    sign kube-proxy "/O=system:masters/CN=system:kube-proxy" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
    openssl genrsa -out "$PKI/sa.key" 2048
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  } >"$LOG_DIR/kube-pki.log" 2>&1 || die "generating Kubernetes certificates failed; see $LOG_DIR/kube-pki.log"
  echo "$PKI_VERSION" >"$PKI/.complete"
}

# write_kubeconfig FILE USER: a kubeconfig with embedded certificates for one of the client identities.
write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kproxy-test
  cluster:
    server: https://$BRIDGE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.pem")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$user.pem")
    client-key-data: $(base64 -w0 "$PKI/$user.key")
contexts:
- name: kproxy-test
  context:
    cluster: kproxy-test
    user: $user
current-context: kproxy-test
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

need_binary() {
  [ -x "$BIN_DIR/$1" ] || die "$BIN_DIR/$1 is missing; run scripts/env/install.sh $2"
}

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'; }

start_etcd() {
  running etcd && return 0
  need_binary etcd etcd
  port_free "$ETCD_PORT" && port_free "$ETCD_PEER_PORT" ||
    die "etcd's ports $ETCD_PORT/$ETCD_PEER_PORT are taken; remove $KUBE_DIR/ports.env to pick new ones"
  rm -rf "$KUBE_DIR/etcd-data"
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  spawn "$(pidfile etcd)" "$LOG_DIR/etcd.log" "$BIN_DIR/etcd" --name kproxy-test \
    --data-dir "$KUBE_DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "kproxy-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_for etcd "$READY_TIMEOUT" "$LOG_DIR/etcd.log" "$(pidfile etcd)" "$(pattern etcd)" etcd_healthy
}

apiserver_ready() { kubectl --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz --request-timeout=3s; }

start_apiserver() {
  running kube-apiserver && return 0
  need_binary kube-apiserver kube
  port_free "$APISERVER_PORT" ||
    die "kube-apiserver's port $APISERVER_PORT is taken; run k8s.sh down, remove $KUBE_DIR/ports.env and retry"
  ip -4 addr show dev "$BRIDGE" 2>/dev/null | grep -qF "inet $BRIDGE_IP/" ||
    die "the node bridge $BRIDGE ($BRIDGE_IP) is missing; node.sh net creates it"
  log "starting kube-apiserver on https://$BRIDGE_IP:$APISERVER_PORT"
  spawn "$(pidfile kube-apiserver)" "$LOG_DIR/kube-apiserver.log" "$BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$BRIDGE_IP" --advertise-address "$BRIDGE_IP" --secure-port "$APISERVER_PORT" \
    --cert-dir "$KUBE_DIR/serving" --tls-cert-file "$PKI/apiserver.pem" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.pem" \
    --requestheader-client-ca-file "$PKI/ca.pem" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.pem" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" --kubelet-certificate-authority "$PKI/ca.pem" \
    --kubelet-preferred-address-types InternalIP --enable-aggregator-routing=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true --profiling=false --v=1
  wait_for kube-apiserver "$READY_TIMEOUT" "$LOG_DIR/kube-apiserver.log" "$(pidfile kube-apiserver)" \
    "$(pattern kube-apiserver)" apiserver_ready
}

controller_manager_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" | grep -q ok; }

start_controller_manager() {
  running kube-controller-manager && return 0
  need_binary kube-controller-manager kube
  port_free "$KCM_PORT" || die "kube-controller-manager's port $KCM_PORT is taken; remove $KUBE_DIR/ports.env"
  local kc="$KUBE_DIR/controller-manager.kubeconfig"
  write_kubeconfig "$kc" controller-manager
  log "starting kube-controller-manager"
  spawn "$(pidfile kube-controller-manager)" "$LOG_DIR/kube-controller-manager.log" \
    "$BIN_DIR/kube-controller-manager" \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$KUBE_DIR/kcm-serving" \
    --leader-elect=false \
    --controllers "$KCM_CONTROLLERS" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.pem" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1
  wait_for kube-controller-manager "$READY_TIMEOUT" "$LOG_DIR/kube-controller-manager.log" \
    "$(pidfile kube-controller-manager)" "$(pattern kube-controller-manager)" controller_manager_healthy
}

scheduler_healthy() { curl -skf --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" | grep -q ok; }

start_scheduler() {
  running kube-scheduler && return 0
  need_binary kube-scheduler kube
  port_free "$SCHEDULER_PORT" || die "kube-scheduler's port $SCHEDULER_PORT is taken; remove $KUBE_DIR/ports.env"
  local kc="$KUBE_DIR/scheduler.kubeconfig"
  write_kubeconfig "$kc" scheduler
  log "starting kube-scheduler"
  spawn "$(pidfile kube-scheduler)" "$LOG_DIR/kube-scheduler.log" "$BIN_DIR/kube-scheduler" \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false --v=1
  wait_for kube-scheduler "$READY_TIMEOUT" "$LOG_DIR/kube-scheduler.log" "$(pidfile kube-scheduler)" \
    "$(pattern kube-scheduler)" scheduler_healthy
}

status() {
  local p
  for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    if running "$p"; then echo "$p: running, pid $(cat "$(pidfile "$p")")"; else echo "$p: stopped"; fi
  done
  [ -f "$KUBE_DIR/ports.env" ] && echo "kube-apiserver: https://$BRIDGE_IP:$APISERVER_PORT (KUBECONFIG=$KUBECONFIG_FILE)"
  return 0
}

main() {
  mkdir -p "$KUBE_DIR" "$LOG_DIR"
  ensure_ports
  case ${1:-} in
    up)
      ensure_pki
      write_kubeconfig "$KUBECONFIG_FILE" admin
      start_etcd
      start_apiserver
      start_controller_manager
      start_scheduler
      ;;
    down)
      # Reverse order: nothing is left talking to a stopped dependency.
      stop_pid kube-scheduler "$(pidfile kube-scheduler)" "$(pattern kube-scheduler)"
      stop_pid kube-controller-manager "$(pidfile kube-controller-manager)" "$(pattern kube-controller-manager)"
      stop_pid kube-apiserver "$(pidfile kube-apiserver)" "$(pattern kube-apiserver)"
      stop_pid etcd "$(pidfile etcd)" "$(pattern etcd)"
      ;;
    status) status ;;
    # For node.sh: a kubeconfig for one of the identities ensure_pki signed.
    kubeconfig)
      [ $# -eq 3 ] || die "usage: k8s.sh kubeconfig USER FILE"
      ensure_pki
      write_kubeconfig "$3" "$2"
      ;;
    *) die "usage: k8s.sh up|down|status|kubeconfig USER FILE" ;;
  esac
}

main "$@"
