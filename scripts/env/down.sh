#!/usr/bin/env bash
# `make env-down`: stops exactly the services up.sh started (found by their pid files) and nothing else. Data,
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
if [ -x "$here/k8s.sh" ]; then
  "$here/k8s.sh" down
fi
"$here/kafka.sh" down
log "test environment stopped"
