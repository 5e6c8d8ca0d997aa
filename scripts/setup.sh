#!/usr/bin/env bash
# Installs everything gigaudit's server, tests and demo need on a fresh Debian machine with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
# GIGAUDIT_CPU_TORCH=1: the CPU-only torch build first, when the registry serves one for the pinned version
# (README, "Running the service"); otherwise the default build stays and this says so.
if [ "${GIGAUDIT_CPU_TORCH:-}" = "1" ]; then
  python3 -m pip install -q "torch==2.14.1+cpu" "torchvision==0.29.1+cpu" \
    || echo "setup: no CPU-only build of torch 2.14.1 is served here; installing the default (CUDA) build" >&2
fi
python3 -m pip install -q -e ".[server,dev]"
# the example architecture plugin (examples/gigaudit-example-plugin): the plugin family's tests use it
python3 -m pip install -q -e examples/gigaudit-example-plugin
# Headless Chromium renders the HTML report in the tests; Node.js runs the non-Python gRPC client test.
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium could not be installed; the report's browser test will be skipped" >&2
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
    || echo "setup: Node.js/npm could not be installed; the Node client test fails in CI and skips elsewhere" >&2
fi
if command -v npm >/dev/null 2>&1 && [ -f tests/e2e/node/package-lock.json ]; then
  (cd tests/e2e/node && npm ci --silent --no-audit --no-fund)
fi
