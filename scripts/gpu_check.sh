#!/usr/bin/env bash
# The GPU checks, run once on a lent device machine (python3 there has torch; captum and redis travel as wheels in
# .whl/): the CUDA tests, GIG vs the naive Captum reference, the Lasso solver on real concept sets, and the whole
# default audit of a ResNet-50 at 224 px (1000 images, 8 × C concepts; goal ≤ 10 min with the decomposition no
# costlier than GIG). Each result is a JSON file in $OUT. Sized for one 10-minute run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD/service:$PWD/client:/tmp/site" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"; echo "rc=$?"; tail -c 1500 "$OUT/$name.json"; tail -3 "$OUT/$name.err"; }
echo "== cuda tests"; timeout 90 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu tests/gig 2>&1 | tail -4 | tee "$OUT/tests.txt"
run bench_gig_A 130 python3 benchmarks/bench_gig.py --config A --device cuda
run bench_decompose 90 python3 benchmarks/bench_decompose.py --quick --device cuda --celer-rows 0
run bench_audit_r50 300 python3 benchmarks/bench_audit.py --config resnet50 --device cuda --quiet
