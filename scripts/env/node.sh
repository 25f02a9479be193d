#!/usr/bin/env bash
# Runs the test environment's one Kubernetes node on this machine: containerd (Debian's, with its own config,
# state and socket), kubelet and kube-proxy (iptables mode) from tools/k8s, pods on a CNI bridge whose subnet exists
# only here (no masquerade, no forwarding: ip_forward stays as it was). Pods reach the brokers and the API server
# at the bridge address, which is DNATed to the loopback ports they listen on.
#
#   node.sh net       the bridge, its addresses and the iptables rules (before the API server binds to it)
#   node.sh up        containerd, the images, kubelet, kube-proxy; waits until the node is Ready
#   node.sh stop      stops kubelet, kube-proxy, the pods' containers and containerd
#   node.sh down      stops all of it and removes what it created: pods' containers and network namespaces,
#                     mounts, cgroups, iptables chains, the bridge; checks the machine's sysctls are unchanged
#   node.sh status    one line per process
#
# kubelet and kube-proxy write a few machine-wide sysctls when they start (vm.overcommit_memory, kernel.panic,
# conntrack limits...). They run in their own mount namespace where those /proc/sys files are plain files, so
# the machine keeps its values; everything they mount for pods is under a shared mount and reaches containerd.
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

here=$(dirname "$0")
NODE_DIR="$ENV_DIR/node"
KUBE_DIR="$ENV_DIR/kube"
PKI="$KUBE_DIR/pki"
CONTAINERD_SOCK="$NODE_RUN/containerd/containerd.sock"
KUBELET_ROOT="$NODE_LIB/kubelet"
POD_LOGS="$NODE_LIB/pod-logs"
READY_TIMEOUT=${KPROXY_NODE_READY_TIMEOUT:-120}
# The sysctls kubelet and kube-proxy would set, hidden from them; and the ones env-down checks.
HIDDEN_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys
  kernel/keys/root_maxbytes net/ipv4/conf/all/route_localnet net/netfilter/nf_conntrack_max
  net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait
  net/bridge/bridge-nf-call-iptables net/ipv4/ip_forward)
CHECKED_SYSCTLS=("${HIDDEN_SYSCTLS[@]}" net/ipv4/conf/all/forwarding net/ipv4/conf/default/forwarding
  net/ipv4/conf/default/route_localnet net/ipv6/conf/all/forwarding net/bridge/bridge-nf-call-ip6tables)

pidfile() { echo "$NODE_DIR/$1.pid"; }
running() { is_running "$(pidfile "$1")" "$2"; }

# --- network ---------------------------------------------------------------------------------------------------

snapshot_sysctls() {
  [ -f "$NODE_DIR/sysctl.before" ] && return 0
  local k
  for k in "${CHECKED_SYSCTLS[@]}"; do
    [ -f "/proc/sys/$k" ] && echo "$k $(tr '\t' ' ' <"/proc/sys/$k")"
  done >"$NODE_DIR/sysctl.before.tmp"
  mv "$NODE_DIR/sysctl.before.tmp" "$NODE_DIR/sysctl.before"
}

# ipt TABLE ARGS...: iptables (ip6tables with IPT=ip6tables), waiting for the xtables lock kube-proxy and kubelet
# also take.
ipt() { "${IPT:-iptables}" -w 5 -t "$@"; }

# hook TABLE CHAIN TARGET MATCH...: jumps from CHAIN to TARGET (a chain of ours) first, once.
hook() {
  local table=$1 chain=$2 target=$3
  shift 3
  ipt "$table" -N "$target" 2>/dev/null || true
  ipt "$table" -C "$chain" "$@" -j "$target" 2>/dev/null || ipt "$table" -I "$chain" 1 "$@" -j "$target"
}

net_up() {
  mkdir -p "$NODE_DIR"
  snapshot_sysctls
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($BRIDGE_IP, pods $POD_CIDR)"
    ip link add "$BRIDGE" type bridge
  fi
  ip -4 addr show dev "$BRIDGE" | grep -qF "inet $BRIDGE_IP/" || ip addr add "$BRIDGE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Only on this interface: packets from pods may be DNATed to 127.0.0.1 (the machine-wide value is untouched).
  echo 1 >"/proc/sys/net/ipv4/conf/$BRIDGE/route_localnet"
  # What pods may reach on the machine: the ports DNATed below (dnat_rules), nothing else on 127/8. Nothing
  # outside the machine reaches the bridge address (the API server listens there) or the pods.
  hook filter INPUT KPROXY-NODE-INPUT
  ipt filter -F KPROXY-NODE-INPUT
  ipt filter -A KPROXY-NODE-INPUT -i "$BRIDGE" -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT -j DROP
  ipt filter -A KPROXY-NODE-INPUT -i "$BRIDGE" -j RETURN
  ipt filter -A KPROXY-NODE-INPUT -i lo -j RETURN
  ipt filter -A KPROXY-NODE-INPUT -d "$POD_CIDR" -j DROP
  hook nat PREROUTING KPROXY-POD-DNAT -i "$BRIDGE" -d "$BRIDGE_IP"
}

# dnat_rules PORT...: the bridge address's ports that lead to the same port on 127.0.0.1.
dnat_rules() {
  local p
  ipt nat -F KPROXY-POD-DNAT
  for p in "$@"; do
    ipt nat -A KPROXY-POD-DNAT -p tcp --dport "$p" -j DNAT --to-destination "127.0.0.1:$p"
  done
}

# The Kafka brokers' pod listeners (kafka.sh writes POD_PORT, and POD_PORT_<id> for a cluster's other brokers,
# into each cluster.env).
kafka_pod_ports() {
  local name
  for name in "${KAFKA_CLUSTERS[@]}"; do
    sed -n 's/^POD_PORT\(_[0-9]*\)\{0,1\}=\([0-9]*\)$/\2/p' "$ENV_DIR/kafka/$name/cluster.env" 2>/dev/null || true
  done
}

# --- containerd -------------------------------------------------------------------------------------------------

write_containerd_config() {
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/certs.d/_default"
  cat >"$NODE_DIR/containerd.toml" <<EOF
# Written by scripts/env/node.sh: the test node's containerd (CRI for kubelet), separate from any other.
version = 2
root = "$NODE_LIB/containerd"
state = "$NODE_RUN/containerd"
oom_score = 0
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = "$NODE_RUN/containerd/debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "kproxy.local/pause:3.10"
  # runc cannot write a negative oom_score_adj here; without this every sandbox fails to start.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # Every image is imported locally; a pull goes to a closed loopback port instead of off the machine.
    config_path = "$NODE_DIR/certs.d"
EOF
  cat >"$NODE_DIR/certs.d/_default/hosts.toml" <<EOF
# No registry: images are imported (scripts/images.sh); a pull fails here at once.
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
EOF
  # isGateway false: with true the bridge plugin turns on net.ipv4.ip_forward for the whole machine. Pods get
  # routes to the pod subnet and, through the bridge address, to the Service range; nothing else.
  cat >"$NODE_DIR/cni/net.d/10-kproxy.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kproxy",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_LIB/cni-ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "${BRIDGE_IP%.*}.10", "gateway": "$BRIDGE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR", "gw": "$BRIDGE_IP"}]
      }
    }
  ]
}
EOF
}

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version; }

start_containerd() {
  running containerd "$NODE_DIR/containerd.toml" && return 0
  write_containerd_config
  mkdir -p "$NODE_RUN" "$NODE_LIB"
  log "starting containerd ($CONTAINERD_SOCK)"
  spawn "$(pidfile containerd)" "$LOG_DIR/containerd.log" containerd --config "$NODE_DIR/containerd.toml"
  wait_for containerd 60 "$LOG_DIR/containerd.log" "$(pidfile containerd)" "$NODE_DIR/containerd.toml" \
    containerd_ready
}

# --- kubelet and kube-proxy -------------------------------------------------------------------------------------

# sandboxed PIDFILE LOG CMD...: starts CMD in its own mount namespace in which the HIDDEN_SYSCTLS are plain
# files holding the machine's values (writes land there). Mounts under shared mounts still reach the machine.
sandboxed() {
  local pidfile=$1 logfile=$2 dir="$NODE_DIR/sysctl-$(basename "$1" .pid)" k binds=""
  shift 2
  rm -rf "$dir"
  mkdir -p "$dir"
  for k in "${HIDDEN_SYSCTLS[@]}"; do
    [ -f "/proc/sys/$k" ] || continue
    cat "/proc/sys/$k" >"$dir/${k//\//.}"
    binds+="mount --bind $dir/${k//\//.} /proc/sys/$k && "
  done
  spawn "$pidfile" "$logfile" unshare --mount --propagation unchanged -- bash -c "${binds}exec \"\$@\"" sandboxed "$@"
}

write_kubelet_config() {
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
# Written by scripts/env/node.sh. kubelet's defaults (syncFrequency 1m and the rest) except what this machine
# needs: cgroup v1 with cgroupfs, swap allowed, no cluster DNS, the API authenticated both ways, eviction and
# image GC thresholds that never remove the locally imported images.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
resolvConf: ""
address: $BRIDGE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: $POD_LOGS
tlsCertFile: $PKI/kubelet.pem
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.pem}
authorization:
  mode: Webhook
clusterDomain: cluster.local
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

kubelet_healthy() { curl -sf --max-time 2 http://127.0.0.1:10248/healthz | grep -q ok; }

start_kubelet() {
  running kubelet "$BIN_DIR/kubelet" && return 0
  mkdir -p "$KUBELET_ROOT" "$POD_LOGS"
  # kubelet's volume mounts happen in its own mount namespace; a shared mount carries them to containerd's.
  if ! grep -q " $KUBELET_ROOT " /proc/self/mountinfo; then
    mount --bind "$KUBELET_ROOT" "$KUBELET_ROOT"
  fi
  mount --make-shared "$KUBELET_ROOT"
  "$here/k8s.sh" kubeconfig node "$NODE_DIR/kubelet.kubeconfig"
  write_kubelet_config
  log "starting kubelet (node $NODE_NAME at $BRIDGE_IP)"
  sandboxed "$(pidfile kubelet)" "$LOG_DIR/kubelet.log" "$BIN_DIR/kubelet" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$NODE_DIR/kubelet.kubeconfig" --root-dir "$KUBELET_ROOT" --node-ip "$BRIDGE_IP" \
    --hostname-override "$NODE_NAME" --v=1
  wait_for kubelet "$READY_TIMEOUT" "$LOG_DIR/kubelet.log" "$(pidfile kubelet)" "$BIN_DIR/kubelet" kubelet_healthy
}

kube_proxy_healthy() { curl -sf --max-time 2 http://127.0.0.1:10256/healthz >/dev/null; }

start_kube_proxy() {
  running kube-proxy "$BIN_DIR/kube-proxy" && return 0
  "$here/k8s.sh" kubeconfig kube-proxy "$NODE_DIR/kube-proxy.kubeconfig"
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
# Written by scripts/env/node.sh: iptables mode; it leaves route_localnet and the conntrack sysctls alone.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$BRIDGE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
EOF
  log "starting kube-proxy (iptables)"
  sandboxed "$(pidfile kube-proxy)" "$LOG_DIR/kube-proxy.log" "$BIN_DIR/kube-proxy" \
    --config "$NODE_DIR/kube-proxy.yaml" --v=1
  wait_for kube-proxy "$READY_TIMEOUT" "$LOG_DIR/kube-proxy.log" "$(pidfile kube-proxy)" "$BIN_DIR/kube-proxy" \
    kube_proxy_healthy
}

node_ready() {
  [ "$(kubectl --kubeconfig "$ENV_DIR/kubeconfig" get node "$NODE_NAME" --request-timeout=3s \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.spec.taints}')" = "True " ]
}

up() {
  local start apiserver_port
  start=$(date +%s)
  net_up
  # shellcheck source=/dev/null
  apiserver_port=$(source "$KUBE_DIR/ports.env" && echo "$APISERVER_PORT")
  # shellcheck disable=SC2046
  dnat_rules $(kafka_pod_ports)
  start_containerd
  KPROXY_IMAGES_NO_CARGO=1 "$KPROXY_ROOT/scripts/images.sh" import
  start_kubelet
  start_kube_proxy
  wait_for "node $NODE_NAME Ready and untainted" "$READY_TIMEOUT" "$LOG_DIR/kubelet.log" "$(pidfile kubelet)" \
    "$BIN_DIR/kubelet" node_ready
  log "node $NODE_NAME Ready in $(($(date +%s) - start))s (API server for pods: kubernetes Service -> $BRIDGE_IP:$apiserver_port)"
}

# --- down -------------------------------------------------------------------------------------------------------

# Every container task in containerd's k8s.io namespace (pods' sandboxes and containers), then the containers.
remove_containers() {
  containerd_ready >/dev/null 2>&1 || return 0
  local c
  for c in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
  done
  sleep 1
  for c in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
    ctr --address "$CONTAINERD_SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
  done
}

# Shims of our containerd outlive it; found by the socket they were given.
stop_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_under() {
  local dir=$1 m
  # Deepest first.
  for m in $(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# What kube-proxy --cleanup leaves (kubelet's canary chains) and ours, in both address families.
remove_chains() {
  IPT=iptables remove_chains_of
  IPT=ip6tables remove_chains_of
}

remove_chains_of() {
  local table chain
  for table in filter nat mangle; do
    for chain in $(ipt "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^KPROXY-/) {print $2}'); do
      # Drop every jump to it from the built-in chains first, then the chain.
      ipt "$table" -S 2>/dev/null | awk -v c="$chain" '$1 == "-A" && / -j / && $NF == c' |
        while read -r rule; do
          # shellcheck disable=SC2086
          ipt "$table" ${rule/-A/-D} 2>/dev/null || true
        done
    done
    for chain in $(ipt "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^KPROXY-/) {print $2}'); do
      ipt "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(ipt "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^KPROXY-/) {print $2}'); do
      ipt "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

check_sysctls() {
  [ -f "$NODE_DIR/sysctl.before" ] || return 0
  local k v now changed=0
  while read -r k v; do
    now=$(tr '\t' ' ' <"/proc/sys/$k" 2>/dev/null) || continue
    if [ "$now" != "$v" ]; then
      log "sysctl $k changed ($v -> $now); restoring it"
      echo "$v" >"/proc/sys/$k" || true
      changed=1
    fi
  done <"$NODE_DIR/sysctl.before"
  [ $changed = 0 ] && log "the machine's sysctls are as they were"
  rm -f "$NODE_DIR/sysctl.before"
}

# The node's processes and pods. Before the API server stops: its shutdown waits for the connections of its
# clients still watching (kubelet, kube-proxy, the operator's pods) until they go.
stop() {
  stop_pid kubelet "$(pidfile kubelet)" "$BIN_DIR/kubelet"
  stop_pid kube-proxy "$(pidfile kube-proxy)" "$BIN_DIR/kube-proxy"
  if [ -x "$BIN_DIR/kube-proxy" ] && [ -f "$NODE_DIR/kube-proxy.yaml" ]; then
    "$BIN_DIR/kube-proxy" --cleanup >>"$LOG_DIR/kube-proxy.log" 2>&1 || true
  fi
  remove_containers
  stop_pid containerd "$(pidfile containerd)" "$NODE_DIR/containerd.toml"
  stop_shims
}

down() {
  local start ns
  start=$(date +%s)
  stop
  for ns in /run/netns/cni-*; do
    [ -e "$ns" ] && ip netns delete "$(basename "$ns")" 2>/dev/null || true
  done
  unmount_under "$NODE_RUN"
  unmount_under "$NODE_LIB"
  unmount_under /run/netns
  rm -rf "$NODE_RUN" "$NODE_LIB" /var/lib/cni/results
  find /var/log/containers -maxdepth 1 -type l -lname "$POD_LOGS/*" -delete 2>/dev/null || true
  remove_cgroups
  remove_chains
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  check_sysctls
  log "node removed in $(($(date +%s) - start))s"
}

status() {
  local p pattern
  for p in containerd kubelet kube-proxy; do
    pattern="$BIN_DIR/$p"
    [ "$p" = containerd ] && pattern="$NODE_DIR/containerd.toml"
    if running "$p" "$pattern"; then echo "$p: running, pid $(cat "$(pidfile "$p")")"; else echo "$p: stopped"; fi
  done
  ip -br addr show dev "$BRIDGE" 2>/dev/null || echo "bridge $BRIDGE: absent"
}

main() {
  mkdir -p "$NODE_DIR" "$LOG_DIR"
  case ${1:-} in
    net) net_up ;;
    up) up ;;
    stop) stop ;;
    down) down ;;
    status) status ;;
    *) die "usage: node.sh net|up|stop|down|status" ;;
  esac
}

main "$@"
