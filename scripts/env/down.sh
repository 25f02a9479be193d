#!/usr/bin/env bash
# `make env-down`: stops exactly the services up.sh started (found by their pid files) and removes what the node
# created on the machine (pods' containers and namespaces, mounts, cgroups, iptables chains, the bridge). Data,
# ports, certificates and installs stay under .cache/ for the next `make env-up`.
set -euo pipefail
# shellcheck source=scripts/env/lib.sh
source "$(dirname "$0")/lib.sh"

here=$(dirname "$0")
mkdir -p "$ENV_DIR"
# One env-up/env-down at a time: two concurrent runs would start the same service twice on the same ports.
exec 9>"$ENV_DIR/.lock"
flock 9
# The environment is no longer usable once anything stops.
rm -f "$CACHE_DIR/env.sh"
"$here/monitoring.sh" down
# The API server's clients on the node first: its shutdown waits for their watches.
"$here/node.sh" stop
"$here/k8s.sh" down
# After the API server: it listens on the bridge's address, which goes with the node.
"$here/node.sh" down
"$here/kafka.sh" down
release_machine
log "test environment stopped"
