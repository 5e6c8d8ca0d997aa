"""Clustering sampled PFVs into concept vectors: scikit-learn BisectingKMeans, KMeans and NMF side by side.

Data: ``N`` non-negative PFVs (ReLU of a Gaussian mixture with ``4·K`` modes, so NMF applies too), ``C`` channels.
Reported per method: wall time of :func:`gig.concepts.cluster` and its quality: the k-means inertia (sum of squared
distances to the nearest centroid, also given per sample) for the k-means family; for NMF, whose atoms are not
centroids, the relative reconstruction error ``‖X − WH‖/‖X‖``. One JSON object on stdout (and ``--out``).

    python benchmarks/bench_clustering.py --config quick      # 2k × 64, K = 128
    python benchmarks/bench_clustering.py --config full       # 20k × 256, K = 512 (DESIGN §1.2)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from sklearn.decomposition import NMF

from gig.concepts.clustering import cluster

CONFIGS = {"quick": (2_000, 64, 128), "full": (20_000, 256, 512)}  # N, C, K


def make_pfvs(n: int, c: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    modes = torch.randn(4 * k, c, generator=g)
    which = torch.randint(0, 4 * k, (n,), generator=g)
    return (modes[which] + 0.3 * torch.randn(n, c, generator=g)).relu()


def inertia(x: torch.Tensor, centroids: torch.Tensor) -> float:
    return float(torch.cdist(x.double(), centroids.double()).min(dim=1).values.pow(2).sum())


def nmf_error(x: torch.Tensor, k: int, seed: int) -> float:
    """Relative reconstruction error of the same NMF fit that ``cluster(..., "nmf")`` makes."""
    model = NMF(n_components=k, max_iter=400, random_state=seed)
    weights = model.fit_transform(x.double().numpy())
    recon = torch.from_numpy(weights @ model.components_)
    return float((recon - x.double()).norm() / x.double().norm())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="quick")
    parser.add_argument("--methods", nargs="+", default=["bisecting_kmeans", "kmeans", "nmf"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    n, c, k = CONFIGS[args.config]
    x = make_pfvs(n, c, k, args.seed)
    result = {"config": args.config, "n": n, "channels": c, "k": k, "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "methods": {}}
    for method in args.methods:
        start = time.perf_counter()
        centroids = cluster(x, k, method, args.seed)
        seconds = time.perf_counter() - start
        entry = {"seconds": round(seconds, 3)}
        if method == "nmf":
            entry["relative_reconstruction_error"] = round(nmf_error(x, k, args.seed), 5)
        else:
            total = inertia(x, centroids)
            entry.update(inertia=round(total, 2), inertia_per_sample=round(total / n, 5))
        result["methods"][method] = entry
        print(method, entry, file=sys.stderr, flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return result


if __name__ == "__main__":
    main()
