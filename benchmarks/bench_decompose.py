"""Lasso decomposition of PFVs: gig's batched torch FISTA against scikit-learn ``sparse_encode`` (lasso_cd, Gram
precomputed), on the same problem: time, objective ``Σ ½‖x − Vᵀu‖² + λ‖u‖₁`` (equal within 1%) and ℓ0.

Data: ``K`` unit-norm atoms (ReLU'd Gaussian directions) and ``N`` PFVs that are sparse non-negative mixtures of a
few atoms plus noise. scikit-learn runs on the first ``--reference-rows`` rows only when that is set (it is slow at
the full size); the objectives are then compared on those rows, and each side's time is reported with its row count.

    python benchmarks/bench_decompose.py --config quick                  # 2k PFVs, C = 64, K = 512
    python benchmarks/bench_decompose.py --config full --reference-rows 2000 [--device cuda]   # 20k, 256, 2048
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from sklearn.decomposition import sparse_encode

from gig.concepts.decompose import Dictionary, LassoSettings, fista, lasso_objective

CONFIGS = {"quick": (2_000, 64, 512), "full": (20_000, 256, 2048)}  # N, C, K


def make_problem(n: int, c: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(k, c, generator=g).relu() + 0.01
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    which = torch.randint(0, k, (n, 4), generator=g)
    weights = torch.rand(n, 4, generator=g) * 2
    pfvs = torch.zeros(n, c).index_add_(0, torch.arange(n).repeat_interleave(4), (weights.reshape(-1, 1)
                                                                                  * atoms[which.reshape(-1)]))
    return pfvs + 0.05 * torch.randn(n, c, generator=g), atoms


def run_ours(x, atoms, lam, nonneg, device, settings):
    x, atoms = x.to(device), atoms.to(device)
    fista(x[:64], Dictionary(atoms), lam, nonneg, settings)  # warm-up (kernels, allocator)
    _sync(device)
    start = time.perf_counter()
    coef = fista(x, Dictionary(atoms), lam, nonneg, settings)
    _sync(device)
    return coef.cpu(), time.perf_counter() - start


def run_sklearn(x, atoms, lam, nonneg):
    a = atoms.double().numpy()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lasso_cd's duality-gap warnings
        code = sparse_encode(x.double().numpy(), a, gram=a @ a.T, algorithm="lasso_cd", alpha=lam, positive=nonneg)
    return torch.from_numpy(code), time.perf_counter() - start


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--nonneg", action="store_true")
    parser.add_argument("--reference-rows", type=int, default=None, help="rows given to scikit-learn (default: all)")
    parser.add_argument("--max-iter", type=int, default=LassoSettings.max_iter)
    parser.add_argument("--tol", type=float, default=LassoSettings.tol)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    n, c, k = CONFIGS[args.config]
    x, atoms = make_problem(n, c, k)
    settings = LassoSettings(max_iter=args.max_iter, tol=args.tol)
    coef, ours_seconds = run_ours(x, atoms, args.lam, args.nonneg, args.device, settings)
    print(f"ours: {ours_seconds:.2f} s for {n} rows", file=sys.stderr, flush=True)
    rows = min(args.reference_rows or n, n)
    ref, ref_seconds = run_sklearn(x[:rows], atoms, args.lam, args.nonneg)
    objective = float(lasso_objective(x[:rows].double(), atoms.double(), coef[:rows].double(), args.lam).sum())
    ref_objective = float(lasso_objective(x[:rows].double(), atoms.double(), ref, args.lam).sum())
    result = {
        "config": args.config, "n": n, "channels": c, "atoms": k, "lam": args.lam, "nonneg": args.nonneg,
        "device": args.device, "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(), "max_iter": settings.max_iter, "tol": settings.tol,
        "ours": {"rows": n, "seconds": round(ours_seconds, 3), "rows_per_second": round(n / ours_seconds, 1),
                 "l0": round(float((coef != 0).float().mean()), 5)},
        "sklearn": {"rows": rows, "seconds": round(ref_seconds, 3), "rows_per_second": round(rows / ref_seconds, 1),
                    "l0": round(float((ref != 0).double().mean()), 5)},
        "compared_rows": rows,
        "objective": {"ours": round(objective, 4), "sklearn": round(ref_objective, 4),
                      "relative_difference": (objective - ref_objective) / ref_objective},
        "relative_error": {"ours": _relative_error(x[:rows], atoms, coef[:rows]),
                           "sklearn": _relative_error(x[:rows], atoms, ref.float())},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return result


def _relative_error(x, atoms, coef) -> float:
    return round(float((x - coef @ atoms).norm() / x.norm()), 5)


if __name__ == "__main__":
    main()
