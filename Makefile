# kproxy: the two commands a newcomer runs are `make demo` and `make test`; the rest are their parts.
.PHONY: test demo env-up env-down tools crds bench images docker-images chart-crds fuzz

## The whole suite: fmt, clippy, unit tests, 20 s of fuzzing per target, release build, e2e against a fresh real environment.
test:
	scripts/test.sh

## A narrated local demo: real broker, operator, sidecar, a policy applied and changed live.
demo:
	scripts/demo.sh

## Fuzzes the sidecar's decoders and rewriters (fuzz/): FUZZ_SECONDS per target (default 60), nightly + cargo-fuzz.
fuzz:
	scripts/fuzz.sh

## Regenerates crds/*.yaml (and the chart's copy) from the Rust types.
crds:
	cargo run -q -p kproxy-api --bin crdgen > crds/kafkaproxypolicies.yaml
	cp crds/kafkaproxypolicies.yaml charts/kproxy/crds/kafkaproxypolicies.yaml
	$(MAKE) --no-print-directory chart-crds

## Benchmarks: direct vs through the sidecar, written to BENCHMARKS.md.
bench:
	scripts/bench.sh

# --- test environment (scripts/env) ---
## Installs (first time) and starts the real services: Kafka east/west/legacy, etcd, kube-apiserver, the
## controller manager and scheduler, a node (containerd, kubelet, kube-proxy) and prometheus-operator.
env-up:
	scripts/env/up.sh

## Stops exactly what env-up started and removes what the node created (bridge, pods, mounts, iptables chains).
env-down:
	scripts/env/down.sh

## Installs the environment's programs without starting anything (Kafka jars, kcat, containerd, etcd, kube, helm,
## prometheus-operator, Prometheus); Go builds are cached in $$KPROXY_CACHE (default ~/.cache/kproxy).
tools:
	scripts/env/install.sh all
# --- end test environment ---

# --- container images and chart (Dockerfile.*, charts/kproxy) ---
IMAGE_REPO ?= ghcr.io/kproxy-dev
GIT_COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE_TAG ?= $(shell sed -n 's/^appVersion: *"*\([^"]*\)"*$$/\1/p' charts/kproxy/Chart.yaml)

## Builds the images without a Docker engine or registry (release binaries + Debian packages, docker-archive tars
## in .cache/images, imported into the test node's containerd when it runs): sidecar, operator, pause, demo app.
images:
	scripts/images.sh

## The same two images with a Docker engine, from Dockerfile.sidecar and Dockerfile.operator.
docker-images:
	@if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then \
	  echo "make docker-images: no Docker engine is reachable here (docker info failed); make images needs none."; \
	  exit 1; \
	fi
	DOCKER_BUILDKIT=1 docker build --build-arg KPROXY_GIT_COMMIT=$(GIT_COMMIT) -f Dockerfile.sidecar -t $(IMAGE_REPO)/kproxy-sidecar:$(IMAGE_TAG) .
	DOCKER_BUILDKIT=1 docker build --build-arg KPROXY_GIT_COMMIT=$(GIT_COMMIT) -f Dockerfile.operator -t $(IMAGE_REPO)/kproxy-operator:$(IMAGE_TAG) .

## Copies the generated CRD into the chart (e2e/tests/chart.rs fails while the two differ).
chart-crds:
	cp crds/kafkaproxypolicies.yaml charts/kproxy/crds/kafkaproxypolicies.yaml
# --- end container images and chart ---
