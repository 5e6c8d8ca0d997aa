"""How often an audit job reports progress: the longest gap between two progress updates, per stage.

Drives the worker's real handler, ``Tasks.audit`` (extraction, graph, exemplars, evaluation), on a real
``ArtifactStore`` with a random-weight, BatchNorm-calibrated torchvision model (``bench_audit.calibrated_model``) and
planted-parts images packed as the CLI packs them. Every ``JobContext.progress`` call is timed; a gap is the time
from one update to the next, attributed to the stage of the update that ends it (the first one also counts the
model load and the dataset's opening). The goal (issue 12): every gap at most ~5 s on 2 CPU cores.

    OMP_NUM_THREADS=1 python benchmarks/bench_progress.py --threads 1                # resnet18, 40 images of 96 px
    OMP_NUM_THREADS=1 python benchmarks/bench_progress.py --metrics all --threads 1  # with stability and sanity

Prints one JSON object: per stage the longest gap, the number of updates and whether every update named a total;
the longest gap overall (with the updates around it); the job's seconds per stage.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


class ProgressLog:
    """The job's progress callback: every update with its time."""

    def __init__(self, verbose: bool):
        self.verbose, self.start, self.updates = verbose, time.perf_counter(), []

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter() - self.start
        if self.verbose and (not self.updates or self.updates[-1][1] != stage):
            print(f"[{now:8.1f} s] {stage} {done}/{total}", file=sys.stderr, flush=True)
        self.updates.append((now, stage, done, total))

    def summary(self) -> dict:
        stages, previous, worst = {}, (0.0, "start", 0, None), None
        for update in self.updates:
            gap = update[0] - previous[0]
            entry = stages.setdefault(update[1], {"max_gap_s": 0.0, "updates": 0, "total_known": True})
            entry["max_gap_s"] = round(max(entry["max_gap_s"], gap), 3)
            entry["updates"] += 1
            entry["total_known"] = entry["total_known"] and update[3] is not None
            if worst is None or gap > worst["gap_s"]:
                worst = {"gap_s": round(gap, 3), "after": list(previous[1:]), "before": list(update[1:])}
            previous = update
        return {"stages": stages, "longest": worst, "updates": len(self.updates)}


class _Context:
    """What ``Tasks.audit`` reads of its ``JobContext``, without a queue: no checkpoints are due."""

    shard_index, shard_count, checkpoint = 0, 1, None

    def __init__(self, job, progress):
        self.job, self.progress = job, progress

    def checkpoint_due(self) -> bool:
        return False

    def save_checkpoint(self, checkpoint: dict) -> None:
        pass


def run(architecture: str, n_images: int, size: int, metrics, seed: int, verbose: bool) -> dict:
    import safetensors.torch
    import torch

    from bench_audit import MEAN, STD, calibrated_model, write_images
    from gig.synthetic import CLASS_NAMES
    from gigaudit.client import _archive
    from gigaudit_server.queue.jobs import Job
    from gigaudit_server.storage.datasets.archives import inspect_archive
    from gigaudit_server.storage.artifacts import ArtifactStore
    from gigaudit_server.worker.images import load_images
    from gigaudit_server.worker.tasks import Tasks

    with tempfile.TemporaryDirectory(prefix="bench-progress-") as tmp:
        root = Path(tmp)
        store = ArtifactStore(f"file://{root}/store")
        write_images(root / "images", n_images, size, seed)
        with _archive(root / "images") as (archive, fmt):
            data = Path(archive).read_bytes()
        described = inspect_archive(io.BytesIO(data))
        dataset = {"name": "datasets/bench", "sha256": store.put_bytes("datasets", data), "format": fmt,
                   "n_images": described.n_images, "class_names": described.class_names}
        pictures, _, _ = load_images(store.local_path("datasets", dataset["sha256"]), size, MEAN, STD)
        model = calibrated_model(architecture, len(CLASS_NAMES), pictures, seed)
        record = {"name": "models/bench", "architecture": architecture, "num_classes": len(CLASS_NAMES),
                  "class_names": sorted(CLASS_NAMES), "input_size": size, "mean": MEAN, "std": STD,
                  "weights_sha256": store.put_bytes("weights", safetensors.torch.save(model.state_dict()))}
        params = {"model": record, "dataset": dataset, "concept_set": "models/bench/conceptSets/a",
                  "concept_graph": "models/bench/conceptGraphs/a"}
        if metrics:
            params["metrics"] = list(metrics)
        log = ProgressLog(verbose)
        started = time.perf_counter()
        result = Tasks(store, "cpu", batch_size=32).audit(_Context(Job(id="bench", kind="audit", params=params), log))
        seconds = time.perf_counter() - started
    return {"benchmark": "bench_progress", "architecture": architecture, "images": n_images, "size": size,
            "threads": torch.get_num_threads(), "metrics": list(metrics) if metrics else "default",
            "total_s": round(seconds, 3), "stages_s": result["seconds"], **log.summary()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--metrics", default="", help="comma-separated gig.evaluate metrics, or 'all' "
                                                      "(default: gig's default metrics)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no stage log on stderr")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.metrics == "all":
        from gig.evaluation import METRICS as metrics
    else:
        metrics = tuple(m for m in args.metrics.split(",") if m)
    out = run(args.architecture, args.images, args.size, metrics, args.seed, not args.quiet)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
