#!/usr/bin/env bash
# Installs everything gigaudit's server, tests and demo need on a fresh Debian machine with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[server,dev]"
# Headless Chromium renders the HTML report in the tests; Node.js runs the non-Python gRPC client test.
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: chromium could not be installed; the report's browser test will be skipped" >&2
fi
if command -v npm >/dev/null 2>&1 && [ -f tests/e2e/node/package-lock.json ]; then
  (cd tests/e2e/node && npm ci --silent --no-audit --no-fund)
fi
