#!/usr/bin/env bash
# A narrated local demo of kproxy: a real Kafka broker and kube-apiserver, the operator, a sidecar fed the
# policy's ConfigMap the way kubelet mounts it, a real client, and a policy edit that takes effect live.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo_dir="$root/.cache/demo"
ns=kproxy-demo
topic="demo.orders.$(date +%s)"  # fresh each run, so earlier runs' records never show up
pids=()
started_env=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  say "Cleaning up"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KUBECONFIG:-}" ]; then kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; fi
  if [ "$started_env" = 1 ]; then scripts/env/down.sh || true; fi
  echo "done (logs: $demo_dir)"
}
trap cleanup EXIT

say "Building kproxy (operator and sidecar)"
scripts/install-tools.sh
cargo build -q -p kproxy-operator -p kproxy-sidecar
cargo build -q -p kproxy-api --bin crdgen

if [ ! -f .cache/env.sh ] || ! (. .cache/env.sh && kubectl get --raw /readyz >/dev/null 2>&1); then
  say "Starting the local environment (Kafka brokers, etcd, kube-apiserver) — first run installs them"
  scripts/env/up.sh
  started_env=1
fi
# shellcheck disable=SC1091
. .cache/env.sh
rm -rf "$demo_dir" && mkdir -p "$demo_dir/config" "$demo_dir/secrets"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
op_admin=$(free_port); sc_listen=$(free_port); sc_admin=$(free_port)

say "Installing the KafkaProxyPolicy CRD and a namespace"
kubectl apply --server-side -f crds/kafkaproxypolicies.yaml
# Polled: `kubectl wait` fails outright while a just-created CRD has no conditions yet.
for _ in $(seq 1 150); do
  [ "$(kubectl get crd kafkaproxypolicies.kproxy.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] && break
  sleep 0.2
done
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -

say "Starting the operator (out of cluster, with the admin kubeconfig; metrics on 127.0.0.1:$op_admin)"
target/debug/kproxy-operator --admin-addr "127.0.0.1:$op_admin" --lease-namespace "$ns" \
  --lease-name kproxy-demo >"$demo_dir/operator.log" 2>&1 &
pids+=($!)

policy() { # $1 = effect for the demo topic
  cat <<YAML
apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {name: payments, namespace: $ns}
spec:
  podSelector: {matchLabels: {app: payments}}
  clusters:
    - name: dc-east
      bootstrapServers: ["$KPROXY_KAFKA_EAST"]
  acls:
    defaultAction: Allow
    rules:
      - resource: {type: Topic, name: $topic}
        operations: [Write]
        effect: $1
YAML
}

say "Applying a policy that allows writes to $topic"
policy Allow | tee "$demo_dir/policy.yaml"
kubectl apply -f "$demo_dir/policy.yaml"

wait_ready() {
  for _ in $(seq 1 100); do
    gen=$(kubectl get kpp payments -n "$ns" -o jsonpath='{.metadata.generation}')
    obs=$(kubectl get kpp payments -n "$ns" -o jsonpath='{.status.observedGeneration}' 2>/dev/null || true)
    ready=$(kubectl get kpp payments -n "$ns" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    if [ "$gen" = "$obs" ] && [ "$ready" = True ]; then return 0; fi
    sleep 0.2
  done
  echo "the policy did not become Ready; see $demo_dir/operator.log" >&2
  return 1
}
wait_ready
say "The operator rendered it into ConfigMap payments-kproxy; the policy's status:"
kubectl get kpp payments -n "$ns"
kubectl get kpp payments -n "$ns" -o jsonpath='{.status}' && echo
kubectl get configmap payments-kproxy -n "$ns" -o jsonpath='{.data.config\.yaml}'

# Plays kubelet: a new timestamped folder, then the ..data symlink swapped atomically.
project() {
  local stamp="..$(date +%Y_%m_%d_%H_%M_%S.%N)"
  mkdir "$demo_dir/config/$stamp"
  kubectl get configmap payments-kproxy -n "$ns" -o jsonpath='{.data.config\.yaml}' >"$demo_dir/config/$stamp/config.yaml"
  local old; old=$(readlink "$demo_dir/config/..data" 2>/dev/null || true)
  ln -sfn "$stamp" "$demo_dir/config/..data_tmp"
  mv -T "$demo_dir/config/..data_tmp" "$demo_dir/config/..data"
  [ -L "$demo_dir/config/config.yaml" ] || ln -s ..data/config.yaml "$demo_dir/config/config.yaml"
  if [ -n "$old" ]; then rm -rf "${demo_dir:?}/config/$old"; fi
}
kubelet_loop() {
  local last=""
  while true; do
    rv=$(kubectl get configmap payments-kproxy -n "$ns" -o jsonpath='{.metadata.resourceVersion}' 2>/dev/null || true)
    if [ -n "$rv" ] && [ "$rv" != "$last" ]; then project; last=$rv; fi
    sleep 1
  done
}
project
kubelet_loop >"$demo_dir/kubelet.log" 2>&1 &
pids+=($!)

say "Starting the sidecar: the app's Kafka client will talk to 127.0.0.1:$sc_listen (admin on $sc_admin)"
target/debug/kproxy-sidecar --config "$demo_dir/config" --listen "127.0.0.1:$sc_listen" \
  --admin "127.0.0.1:$sc_admin" --secrets-dir "$demo_dir/secrets" >"$demo_dir/sidecar.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$sc_admin/readyz" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$sc_admin/readyz" && echo " (sidecar ready)"

say "A client (librdkafka) keeps ONE connection open and produces a record every second through the sidecar"
mkfifo "$demo_dir/producer.in"
"$KPROXY_PYTHON" e2e/clients/line_producer.py "127.0.0.1:$sc_listen" "$topic" \
  <"$demo_dir/producer.in" >"$demo_dir/producer.out" 2>"$demo_dir/producer.err" &
pids+=($!)
exec 7>"$demo_dir/producer.in"
for i in 1 2 3; do echo "order-$i" >&7; sleep 1; done
sleep 1
echo "the client's delivery reports:"
cat "$demo_dir/producer.out"
echo "consumed back through the sidecar:"
kcat -b "127.0.0.1:$sc_listen" -t "$topic" -C -o beginning -e -q

say "Editing the policy live: writes to $topic are now denied"
policy Deny >"$demo_dir/policy.yaml"
kubectl apply -f "$demo_dir/policy.yaml"
wait_ready
hash=$(kubectl get kpp payments -n "$ns" -o jsonpath='{.status.configHash}')
echo "new configHash in the policy's status: $hash"
for _ in $(seq 1 50); do
  curl -fs "http://127.0.0.1:$sc_admin/metrics" | grep -q "$hash" && break
  sleep 0.2
done
echo "the sidecar now serves it:"
curl -fs "http://127.0.0.1:$sc_admin/metrics" | grep -E '^kproxy_config_(info|generation)'

say "The same client connection produces again"
for i in 4 5; do echo "order-$i" >&7; sleep 1; done
sleep 2
echo "the client's delivery reports (same connection, no reconnect):"
cat "$demo_dir/producer.out"
echo "client connections accepted by the sidecar over the whole demo:"
curl -fs "http://127.0.0.1:$sc_admin/metrics" | grep -E '^kproxy_client_connections_accepted_total'

say "Where to look"
echo "sidecar metrics:  curl http://127.0.0.1:$sc_admin/metrics   (kproxy_requests_total, kproxy_acl_denied_total, ...)"
echo "operator metrics: curl http://127.0.0.1:$op_admin/metrics   (kproxy_operator_reconciles_total, ...)"
echo "logs:             $demo_dir/{operator.log,sidecar.log,producer.out}"
exec 7>&-
