#!/usr/bin/env bash
# CI's container step (docs/design.md, "Container images"), after the tests:
#   1. a Docker engine: the one that answers, else Debian's dockerd started here, loopback only
#      (and stopped again at the end); Docker Compose v2 built with Go if missing
#   2. the images, built here from the package registries (cached between runs on a machine)
#   3. the compose smoke test: the whole stack with compose.local-images.yaml on free ports
#   4. testcontainers mode: the integration suite with Kafka and FerretDB as containers, and the
#      image's own promises (uid, read-only root, keys, probes, SIGTERM) against them
# Ports: free ones on 127.0.0.1, chosen by the tests, so the local infrastructure of the earlier
# steps may keep running. Each phase prints its time.
set -euo pipefail
cd "$(dirname "$0")/../.."

py=.venv/bin/python
start=$SECONDS
phase=$SECONDS
lap() { echo "ci/containers: $1 in $((SECONDS - phase)) s"; phase=$SECONDS; }

trap 'deploy/images/engine.sh down || true' EXIT
deploy/images/engine.sh up
lap "engine ready"
deploy/images/build.sh all
lap "images built"

# The services' own settings must not point the containers' tests elsewhere.
unset KAFKA_BOOTSTRAP_SERVERS MONGODB_URI QBO_TESTS_NO_DOCKER
export QBO_CONTAINER_TESTS=1 QBO_TEST_IMAGES="${QBO_TEST_IMAGES:-local}"

"$py" -m pytest -p no:cacheprovider tests/containers/test_compose_stack.py
lap "compose smoke test"

# The whole integration suite but two modules that test no service against Kafka or MongoDB:
# test_local_infra (infra.sh's own processes, covered by the earlier steps) and
# test_k8s_manifests (rendering only).
"$py" -m pytest -p no:cacheprovider tests/containers/test_image.py tests/integration \
  --ignore=tests/integration/test_local_infra.py \
  --ignore=tests/integration/test_k8s_manifests.py
lap "testcontainers mode (integration suite + image checks)"
echo "ci/containers: done in $((SECONDS - start)) s"
