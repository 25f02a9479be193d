#!/usr/bin/env bash
# `make demo`: kproxy as a platform team meets it, on this machine's real one-node cluster (scripts/env): the
# images built here, `helm install` of the chart, a policy, a Deployment asking for the sidecar, its app producing
# through localhost:9092, a policy edit reaching the running pod through kubelet, and Prometheus scraping it all.
# About 3-4 minutes on a warm machine (most of it is kubelet's ConfigMap refresh, 1 minute by default). The
# environment stays up afterwards so you can look around; `make env-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
ns=kproxy-demo
sys=kproxy-system
topic="demo.orders.$(date +%s)" # fresh each run, so earlier runs' records never show up
start=$(date +%s)

say() { printf '\n\033[1m== [%3ss] %s\033[0m\n' "$(($(date +%s) - start))" "$*"; }
run() {
  printf '\033[2m$ %s\033[0m\n' "$*"
  "$@"
}

say "Building kproxy (release) and its images"
scripts/install-tools.sh
cargo build -q --release --locked -p kproxy-sidecar -p kproxy-operator
if [ ! -f .cache/env.sh ] || ! (. .cache/env.sh && kubectl get node kproxy-node >/dev/null 2>&1); then
  say "Starting the environment: Kafka, etcd, kube-apiserver, a node (containerd, kubelet, kube-proxy) — the first run installs them"
  scripts/env/up.sh
fi
KPROXY_IMAGES_NO_CARGO=1 scripts/images.sh
# shellcheck disable=SC1091
. .cache/env.sh
image() { awk -v n="$1" '$1 == n {print $2}' "$KPROXY_IMAGES"; }

say "A fresh start: the demo's namespaces and release"
helm uninstall kproxy -n "$sys" --wait >/dev/null 2>&1 || true
kubectl delete namespace "$ns" "$sys" --ignore-not-found --wait=true >/dev/null
kubectl get nodes -o wide

say "helm install the chart (operator image, webhook with its own certificates, PodMonitor and ServiceMonitor)"
kubectl create namespace "$ns"
run helm install kproxy charts/kproxy -n "$sys" --create-namespace --wait --timeout 180s \
  --set operator.replicas=1 --set operator.image.pullPolicy=Never --set sidecar.image.pullPolicy=Never \
  --set operator.watchNamespace="$ns" \
  --set podMonitor.enabled=true --set podMonitor.interval=5s --set podMonitor.scrapeTimeout=4s \
  --set serviceMonitor.enabled=true --set serviceMonitor.interval=5s --set serviceMonitor.scrapeTimeout=4s
run kubectl get pods -n "$sys" -o wide

policy() { # $1 = Allow or Deny for writes to the demo topic
  cat <<YAML
apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {name: payments, namespace: $ns}
spec:
  podSelector: {matchLabels: {app: payments}}
  clusters:
    - name: dc-east
      bootstrapServers: ["$KPROXY_KAFKA_EAST_POD"]
  acls:
    defaultAction: Allow
    rules:
      - resource: {type: Topic, name: "$topic"}
        operations: [Write]
        effect: $1
YAML
}

say "kubectl apply a policy allowing writes to $topic"
policy Allow
policy Allow | kubectl apply -f -
kubectl wait kpp/payments -n "$ns" --for=condition=Ready --timeout=60s
run kubectl get kpp -n "$ns"

say "kubectl apply a Deployment whose pods ask for the sidecar (kproxy.dev/inject: \"true\")"
kubectl apply -n "$ns" -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: payments}
spec:
  replicas: 1
  selector: {matchLabels: {app: payments}}
  template:
    metadata:
      labels: {app: payments}
      annotations: {kproxy.dev/inject: "true"}
    spec:
      containers:
        - name: app
          image: $(image kafka-client)
          imagePullPolicy: Never
          # confluent-kafka (librdkafka) producing one record per second to localhost:9092: the sidecar.
          args: ["produce", "$topic", "1"]
          env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
          securityContext: {runAsNonRoot: true, runAsUser: 65532, readOnlyRootFilesystem: true}
YAML
kubectl rollout status deployment/payments -n "$ns" --timeout=180s
run kubectl get pods -n "$ns" -o wide
pod=$(kubectl get pods -n "$ns" -l app=payments -o jsonpath='{.items[0].metadata.name}')
echo "the injected native sidecar (an init container that keeps running):"
kubectl get pod "$pod" -n "$ns" -o jsonpath='{range .spec.initContainers[*]}  {.name}: {.image} restartPolicy={.restartPolicy}{"\n"}{end}'

say "The app produces through the sidecar; reading the records back directly from the broker"
sleep 4
run kubectl logs -n "$ns" "$pod" -c app --tail=4
run kcat -b "$KPROXY_KAFKA_EAST" -t "$topic" -C -o beginning -c 4 -e -q

say "Prometheus, made by prometheus-operator from a Prometheus object, scraping the chart's PodMonitor/ServiceMonitor"
kubectl apply -n "$sys" -f - <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kproxy-demo-prometheus}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: $sys}]
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: kproxy}
spec:
  image: $(image prometheus)
  version: $(image prometheus | sed 's/.*://')
  serviceAccountName: prometheus
  podMonitorSelector: {}
  podMonitorNamespaceSelector: {}
  serviceMonitorSelector: {}
  serviceMonitorNamespaceSelector: {}
  scrapeInterval: 5s
YAML
for _ in $(seq 1 90); do
  prom=$(kubectl get pod prometheus-kproxy-0 -n "$sys" -o jsonpath='{.status.podIP}' 2>/dev/null || true)
  [ -n "$prom" ] && curl -sf "http://$prom:9090/-/ready" >/dev/null 2>&1 && break
  sleep 2
done
query() { curl -sf --get "http://$prom:9090/api/v1/query" --data-urlencode "query=$1"; }
for _ in $(seq 1 30); do
  query "sum by (namespace, pod, api) (kproxy_requests_total{namespace=\"$ns\"})" | grep -q '"pod"' && break
  sleep 2
done
echo "sum by (namespace, pod, api) (kproxy_requests_total{namespace=\"$ns\"}):"
query "sum by (namespace, pod, api) (kproxy_requests_total{namespace=\"$ns\"})" |
  python3 -c 'import json,sys; [print("  ", r["metric"], r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'

say "Editing the policy: writes to $topic are now denied (kubelet refreshes the mounted ConfigMap within ~1-2 min)"
edited=$(date +%s)
policy Deny | kubectl apply -f -
for _ in $(seq 1 150); do
  kubectl logs -n "$ns" "$pod" -c app --tail=3 | grep -q TOPIC_AUTHORIZATION_FAILED && break
  sleep 2
done
echo "enforced in the running pod $(($(date +%s) - edited))s after kubectl apply (same pod, no restart):"
run kubectl logs -n "$ns" "$pod" -c app --tail=3
run kubectl get pods -n "$ns" -o wide
echo "kproxy_acl_denied_total in Prometheus (after its next scrape):"
sleep 6
query "sum by (pod) (kproxy_acl_denied_total{namespace=\"$ns\"})" |
  python3 -c 'import json,sys; [print("  ", r["metric"], r["value"][1]) for r in json.load(sys.stdin)["data"]["result"]]'

say "Where to look (the demo keeps running; make env-down removes everything)"
cat <<EOF
  source $root/.cache/env.sh
  kubectl get pods -n $ns -o wide; kubectl get kpp -n $ns; kubectl logs -n $ns $pod -c app -f
  kubectl edit kpp payments -n $ns           # change the ACL and watch the app's log
  Prometheus:  http://$prom:9090  (from this machine; e.g. curl 'http://$prom:9090/api/v1/query?query=kproxy_requests_total')
  operator:    kubectl logs -n $sys deploy/kproxy
  node logs:   $root/.cache/logs/{kubelet,containerd,kube-proxy,kube-apiserver}.log
demo took $(($(date +%s) - start))s
EOF
