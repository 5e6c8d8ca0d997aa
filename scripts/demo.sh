#!/usr/bin/env bash
# Sets up a fresh machine and runs the main job: a complete audit of the bundled demo model on the embedded
# service (embedded Redis, in-process worker; nothing else to run), gated by examples/policy.yaml.
# Writes out/report/index.html (open it in a browser), out/report/graph.json and out/report/policy.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[server]"
python3 scripts/make_demo_data.py --out out/demo-data --n "${DEMO_IMAGES:-120}"
mapfile -t CLASSES < <(python3 -c "from gig.synthetic import CLASS_NAMES; print('\n'.join(CLASS_NAMES))")
exec gigaudit audit \
  --model service/gig/assets/partsnet.safetensors --arch partsnet --num-classes 6 --class-names "${CLASSES[@]}" \
  --input-size 32 --mean 0 0 0 --std 1 1 1 \
  --dataset out/demo-data \
  --policy examples/policy.yaml --out out/report "$@"
