#!/usr/bin/env bash
# The GPU checks, run once on a lent device machine (python3 there has torch; captum and redis travel as wheels in
# .whl/): the CUDA tests, GIG vs the naive Captum reference, the Lasso solvers, and the full ResNet-50 graph at
# 224 px. Each result is a JSON file in $OUT.
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
run bench_decompose 60 python3 benchmarks/bench_decompose.py --config full --device cuda --reference-rows 500
run full_graph_64 130 python3 benchmarks/bench_full_graph.py --device cuda --size 224 --batch 32 --batches 2 --concepts 64 --max-batch-rows 256
run full_graph_8x 130 python3 benchmarks/bench_full_graph.py --device cuda --size 224 --batch 16 --batches 1 --concepts 8x --max-batch-rows 256
