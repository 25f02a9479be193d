#!/usr/bin/env bash
# The API server's and the operator's cost of sidecar config watches: the operator (release binary) renders 100
# policies in a namespace of its own, 1,000 simulated sidecars (kproxy-bench-watches: 10 per policy, each
# following its ConfigMap as an injected sidecar does, with a ServiceAccount token through the Role the operator
# keeps) watch them, and every policy is edited once. CPU (from /proc utime+stime) and RSS of kube-apiserver and
# the operator: idle without watches, idle with them, and while the edits fan out. Run once, briefly: the API
# server is shared with everything else on the machine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=/dev/null
. "$ROOT/.cache/env.sh"
POLICIES=${POLICIES:-100}
PER=${PER:-10}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
NS=kproxy-watchbench-$RANDOM
WORK=$(mktemp -d)
APISERVER=$(cat "$ROOT/.cache/env/kube/kube-apiserver.pid")
TCK=$(getconf CLK_TCK)
OPERATOR=

cleanup() {
  [ -n "$OPERATOR" ] && kill "$OPERATOR" 2>/dev/null || true
  kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# window SECONDS LABEL: CPU of both processes over SECONDS, as a share of one core, with their RSS after.
window() {
  local a0 o0 a1 o1
  a0=$(ticks "$APISERVER"); o0=$(ticks "$OPERATOR")
  sleep "$1"
  a1=$(ticks "$APISERVER"); o1=$(ticks "$OPERATOR")
  printf '| %s | %.1f%% | %s MiB | %.1f%% | %s MiB |\n' "$2" \
    "$(echo "($a1 - $a0) * 100 / $TCK / $1" | bc -l)" "$(rss_mib "$APISERVER")" \
    "$(echo "($o1 - $o0) * 100 / $TCK / $1" | bc -l)" "$(rss_mib "$OPERATOR")" >>"$WORK/table"
}

kubectl create namespace "$NS" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/kproxy-operator" --namespace "$NS" --lease-namespace "$NS" --admin-addr "127.0.0.1:$port" \
  >"$WORK/operator.log" 2>&1 &
OPERATOR=$!
for i in $(seq 0 $((POLICIES - 1))); do
  cat <<YAML
---
apiVersion: kproxy.dev/v1alpha1
kind: KafkaProxyPolicy
metadata: {name: w$i, namespace: $NS}
spec:
  podSelector: {matchLabels: {app: w$i}}
  clusters: [{name: east, bootstrapServers: ["127.0.0.1:9093"]}]
YAML
done >"$WORK/policies.yaml"
kubectl apply -f "$WORK/policies.yaml" >/dev/null
for _ in $(seq 120); do
  n=$(kubectl get configmaps -n "$NS" -l app.kubernetes.io/managed-by=kproxy-operator -o name | wc -l)
  [ "$n" -ge "$POLICIES" ] && break
  sleep 1
done
echo "$n ConfigMaps rendered"
kubectl create serviceaccount sidecar -n "$NS" >/dev/null
kubectl create token sidecar -n "$NS" --duration=1h >"$WORK/token"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
maps=$(seq -s, -f 'w%g-kproxy' 0 $((POLICIES - 1)))

echo '| phase | kube-apiserver CPU | kube-apiserver RSS | operator CPU | operator RSS |' >"$WORK/table"
echo '| --- | --- | --- | --- | --- |' >>"$WORK/table"
window 15 "idle, no watches"
# One socket per watch, plus the program's own files.
ulimit -n 4096
"$BIN/kproxy-bench-watches" --server "${server#https://}" --ca-file "$ROOT/.cache/env/kube/pki/ca.pem" \
  --token-file "$WORK/token" --namespace "$NS" --config-maps "$maps" --per-config-map "$PER" --seconds 75 \
  >"$WORK/watches.log" 2>&1 &
WATCHES=$!
sleep 15
window 20 "$((POLICIES * PER)) watches established, idle"
started=$(date +%s.%N)
(for i in $(seq 0 $((POLICIES - 1))); do
  kubectl patch kpp "w$i" -n "$NS" --type merge -p '{"spec":{"quotas":{"requestRate":100}}}' >/dev/null
done) &
EDITS=$!
window 20 "$POLICIES policy edits (each to $PER watches)"
wait "$EDITS"
echo "edits applied in $(echo "$(date +%s.%N) - $started" | bc -l | cut -c1-5) s"
wait "$WATCHES"
grep -v '^watch failed' "$WORK/watches.log" | tail -4
echo "watch failures: $(grep -c '^watch failed' "$WORK/watches.log" || true)"
grep '^watch failed' "$WORK/watches.log" | cut -c1-100 | sort | uniq -c | sort -rn | head -5
cat "$WORK/table"
