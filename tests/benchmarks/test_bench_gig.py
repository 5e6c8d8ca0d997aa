"""The GIG benchmark runs end to end on its smallest configuration and both sides agree."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gig.py"


@pytest.mark.slow
def test_smallest_benchmark_runs_and_both_sides_agree():
    command = [sys.executable, str(BENCH), "--config", "B", "--pairs", "1", "--images", "1", "--steps", "2",
               "--size", "32", "--concepts", "8", "--top-t", "2",
               "--dtype", "float64"]  # float64: the two sides agree to rounding, not to float32's conditioning
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pairs"] == ["layer2.1->layer3.0"]
    assert report["max_abs_attribution"] > 0 and report["max_diff_relative_to_scale"] < 1e-10
    for side in ("ours", "naive"):
        assert report[side]["seconds"] > 0 and report[side]["peak_memory_growth_mb"] >= 0
    assert report["speedup"] == pytest.approx(report["naive"]["seconds"] / report["ours"]["seconds"])
