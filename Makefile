# kproxy: the two commands a newcomer runs are `make demo` and `make test`; the rest are their parts.
.PHONY: test demo env-up env-down tools crds bench images

## The whole suite: fmt, clippy, unit tests, release build, e2e against a fresh real environment.
test:
	scripts/test.sh

## A narrated local demo: real broker, operator, sidecar, a policy applied and changed live.
demo:
	scripts/demo.sh

## Regenerates crds/*.yaml (and the chart's copy) from the Rust types.
crds:
	cargo run -q -p kproxy-api --bin crdgen > crds/kafkaproxypolicies.yaml

## Benchmarks: direct vs through the sidecar, written to BENCHMARKS.md.
bench:
	scripts/bench.sh

# --- test environment (scripts/env) ---
## Installs (first time) and starts the real services: Kafka east/west/legacy, etcd, kube-apiserver.
env-up:
	scripts/env/up.sh

## Stops exactly what env-up started.
env-down:
	scripts/env/down.sh

## Installs the environment's programs into .cache/ without starting anything (Kafka jars, kcat, etcd, kube, helm).
tools:
	scripts/env/install.sh all
# --- end test environment ---
