"""The decoding benchmark runs end to end on a few images and both sides give the same tensors."""
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_decode.py"
ROOT = BENCH.parents[1]


def test_smallest_decode_benchmark_runs_and_both_sides_agree():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client")])}
    done = subprocess.run([sys.executable, str(BENCH), "--images", "8", "--width", "96", "--height", "64",
                           "--repeats", "1"], capture_output=True, text=True, timeout=300, check=False, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["same_tensors"] is True and report["images"] == 8
    for side in ("ours", "reference"):
        assert report[side]["seconds"] > 0 and report[side]["peak_memory_growth_mb"] >= 0
    assert abs(report["speedup"] - report["reference"]["seconds"] / report["ours"]["seconds"]) < 0.05 * report["speedup"]
