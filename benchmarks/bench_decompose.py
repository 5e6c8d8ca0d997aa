"""Lasso decomposition of real concept sets: gig's default solver against scikit-learn's ``sparse_encode``
(``lasso_cd``, Gram precomputed) and celer's ``Lasso``, on the same problems: seconds, objective
``Σ ½‖x − Vᵀu‖² + λ‖u‖₁`` (equal within 0.5 %), relative duality gap, ℓ0 and peak memory.

Problems come from two trained models: the bundled PartsNet (32-px images, C = 16 … 64) and torchvision ResNets
briefly trained on 64-px planted-parts images (C = 64 … 2048; weights cached under ``~/.cache/gigaudit-bench/``
or ``$GIGAUDIT_BENCH_CACHE``, so only the first run trains). Concept vectors are made as ``extract_concepts`` makes
them: contribution-sampled PFVs (``sample_pfvs``, up to 16 per image) clustered by bisecting k-means into ``K``
concepts; the rows to decode are the PFVs of held-out images. ``λ = lam_rel · s`` with ``s`` the mean over the
rows of ``λ_max(x) = max_k ⟨v_k, x⟩`` (``|·|`` when signed), for ``lam_rel`` in {0.05, 0.1, 0.3}, signed and
non-negative.

The references are slow, so they may decode only the first rows: scikit-learn as many as it does in the config's
time budget (at least ``--reference-rows``; ``"subset": true`` in the JSON when not all), celer ``--celer-rows``
(it fits one row per call). Ours decodes all rows (timed) and, alternating with each reference, the same rows
(best of 3 for short cases): ``ratio`` is the reference's seconds over ours on the same rows, and objectives are
compared on those rows. Single-threaded by default (``--threads``). One JSON line per case, then a summary line.

    python benchmarks/bench_decompose.py --quick               # a few minutes on 2 cores (after the first run)
    python benchmarks/bench_decompose.py --config full [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gig.concepts import cluster
from gig.concepts.active_set import GRAM_ATOMS
from gig.concepts.decompose import Dictionary, LassoSettings, lasso, lasso_objective
from gig.concepts.extract import sample_pfvs
from gig.layers import traced
from gig.pfv import to_pfvs
from gig.synthetic import CLASS_NAMES, accuracy, load_parts_net, make_parts_dataset, train_classifier

CACHE = Path(os.environ.get("GIGAUDIT_BENCH_CACHE", "~/.cache/gigaudit-bench")).expanduser()
LAMBDAS = (0.05, 0.1, 0.3)
# (model, layer, K as ints or multiples of C written "C", "2C", "8C")
CONFIGS = {
    "quick": {
        "cases": [("partsnet", "features.1", (16, "C", "8C")), ("partsnet", "features.3", (16, "8C")),
                  ("resnet18", "layer2", (16, "8C")), ("resnet18", "layer4", ("2C",)),
                  ("resnet50", "layer4", (16, "C"))],
        "max_rows": 4096, "held_out_images": 64, "reference_rows": 400, "reference_budget_s": 1.0,
        "celer_rows": 100,
    },
    "full": {
        "cases": [("partsnet", layer, (16, "C", "8C")) for layer in ("features.0", "features.1", "features.2",
                                                                     "features.3")]
        + [("resnet18", layer, (16, "2C", "8C")) for layer in ("layer1", "layer2", "layer3", "layer4")]
        # layer4 stops at 2C: 8C = 16384 concepts need 16384 contribution-sampled PFVs of a 2 × 2 map (4096
        # images through a ResNet-50 forward and backward), out of reach of a 2-core run
        + [("resnet50", "layer3", (16, "C", "8C")), ("resnet50", "layer4", (16, "C", "2C"))],
        "max_rows": 20_000, "held_out_images": 256, "reference_rows": 200, "reference_budget_s": 20.0,
        "celer_rows": 200,
    },
}
# ResNets: images, epochs of brief training on make_parts_dataset(size=64) (about 3 min in all on 2 cores)
TRAINING = {"resnet18": (1024, 2), "resnet50": (512, 1)}


# ---------------------------------------------------------------- models and problems
def load_model(name: str):
    """``(model in eval mode, image size, info)``; a ResNet is trained once and cached as safetensors."""
    if name == "partsnet":
        model, info = load_parts_net()
        return model, info.get("size", 32), {"test_accuracy": info.get("test_accuracy")}
    import torchvision
    from safetensors.torch import load_file, save_file

    model = getattr(torchvision.models, name)(num_classes=len(CLASS_NAMES))
    weights, meta = CACHE / f"{name}-parts64.safetensors", CACHE / f"{name}-parts64.json"
    if weights.exists() and meta.exists():
        model.load_state_dict(load_file(str(weights)))
        return model.eval(), 64, json.loads(meta.read_text())
    n_train, epochs = TRAINING[name]
    images, labels, _ = make_parts_dataset(n_train, size=64, seed=0)
    print(f"training {name} on {n_train} images for {epochs} epochs (cached in {CACHE})", file=sys.stderr, flush=True)
    seconds = train_classifier(model, images, labels, epochs=epochs, seed=0)
    test_images, test_labels, _ = make_parts_dataset(300, size=64, seed=1)
    info = {"n_train": n_train, "epochs": epochs, "train_seconds": round(seconds, 1),
            "test_accuracy": accuracy(model, test_images, test_labels), "chance": 1 / len(CLASS_NAMES)}
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta.write_text(json.dumps(info))
    return model.eval(), 64, info


def _batches(images: torch.Tensor, size: int = 64) -> list[torch.Tensor]:
    return [images[i:i + size] for i in range(0, len(images), size)]


def held_out_rows(model, size: int, layers: list[str], n_images: int, max_rows: int) -> dict[str, torch.Tensor]:
    """All PFVs ``(rows, C)`` of ``n_images`` held-out images per layer, the first ``max_rows`` of them."""
    images, _, _ = make_parts_dataset(n_images, size=size, seed=2)
    prefix = traced(model).prefix(layers)
    rows = {layer: [] for layer in layers}
    with torch.no_grad():
        for batch in _batches(images):
            out = prefix(batch)
            for layer in layers:
                rows[layer].append(to_pfvs(out[layer]).reshape(-1, out[layer].shape[1]))
    return {layer: torch.cat(chunks)[:max_rows].contiguous() for layer, chunks in rows.items()}


def concept_sets(model, size: int, cases) -> dict[str, dict[int, torch.Tensor]]:
    """``{layer: {K: V (K, C)}}`` for ``cases`` ``[(layer, ks)]``: contribution-sampled PFVs (up to 16 per image;
    one sampling pass per number of PFVs per image) clustered by bisecting k-means."""
    groups: dict[int, list] = {}
    for layer, ks in cases:
        positions, channels = _shape(model, size, layer)
        groups.setdefault(min(16, positions), []).append((layer, sorted({_atoms(k, channels) for k in ks})))
    out = {}
    for per_image, layers in groups.items():
        n_images = max(64, max(math.ceil(1.25 * wanted[-1] / per_image) for _, wanted in layers))
        images, _, _ = make_parts_dataset(n_images, size=size, seed=1)
        samples, _ = sample_pfvs(model, _batches(images), [layer for layer, _ in layers], per_image=per_image, seed=0)
        for layer, wanted in layers:
            out[layer] = {k: cluster(samples[layer], k, "bisecting_kmeans", seed=0) for k in wanted}
    return out


def _atoms(k, channels: int) -> int:
    return k if isinstance(k, int) else int(k[:-1] or 1) * channels


# ---------------------------------------------------------------- solvers under test
class PeakMemory:
    """Peak extra memory of a block in MiB: CUDA allocations on a GPU, else the process's resident set (sampled)."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mib = device, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = self.peak = _rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        else:
            self.running = False
            self.thread.join()
            self.peak_mib = (max(self.peak, _rss()) - self.base) / 2**20
        return False


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_ours(x, dictionary: Dictionary, lam, nonneg, device):
    x = x.to(device)
    with PeakMemory(torch.device(device)) as memory:
        start = time.perf_counter()
        coef = lasso(x, dictionary, lam, nonneg, LassoSettings())
        _sync(device)
        seconds = time.perf_counter() - start
    return coef.cpu(), seconds, memory.peak_mib


def run_sklearn(x, atoms64: np.ndarray, gram64: np.ndarray, lam, nonneg):
    from sklearn.decomposition import sparse_encode

    with PeakMemory(torch.device("cpu")) as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lasso_cd's duality-gap warnings
        start = time.perf_counter()
        code = sparse_encode(x.double().numpy(), atoms64, gram=gram64, algorithm="lasso_cd", alpha=lam,
                             positive=nonneg)
        seconds = time.perf_counter() - start
    return torch.from_numpy(code), seconds, memory.peak_mib


def run_celer(x, atoms64: np.ndarray, lam, nonneg):
    """celer's ``Lasso`` row by row; its objective divides the squared error by C, so ``alpha = λ / C``."""
    from celer import Lasso

    design = np.asfortranarray(atoms64.T)  # (C, K)
    rows = x.double().numpy()
    code = np.zeros((rows.shape[0], atoms64.shape[0]))
    with PeakMemory(torch.device("cpu")) as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model = Lasso(alpha=lam / rows.shape[1], fit_intercept=False, positive=nonneg, warm_start=False)
        for i, row in enumerate(rows):
            code[i] = model.fit(design, row).coef_
        seconds = time.perf_counter() - start
    return torch.from_numpy(code), seconds, memory.peak_mib


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def relative_gap(x, atoms, coef, lam, nonneg) -> float:
    """``Σ (P − D) / Σ P`` over rows, with the dual point ``r · min(1, λ / max_k c_k)`` (``c = V r``)."""
    x, atoms, coef = x.double(), atoms.double(), coef.double()
    residual = x - coef @ atoms
    corr = residual @ atoms.T
    top = corr.amax(1) if nonneg else corr.abs().amax(1)
    scale = torch.where(top > lam, lam / top.clamp_min(1e-300), torch.ones_like(top))
    primal = 0.5 * residual.pow(2).sum(1) + lam * coef.abs().sum(1)
    dual = scale * (residual * x).sum(1) - 0.5 * scale.pow(2) * residual.pow(2).sum(1)
    return float((primal - dual).sum() / primal.sum().clamp_min(1e-300))


def objective(x, atoms, coef, lam) -> float:
    return float(lasso_objective(x.double(), atoms.double(), coef.double(), lam).sum())


# ---------------------------------------------------------------- one case
def timed_pair(ours, reference, repeats: int):
    """Run ``ours()`` and ``reference()`` alternately ``repeats`` times; the best seconds of each (load from other
    processes hits both alike) with their last results and peak memory."""
    best = [math.inf, math.inf]
    results = [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((ours, reference)):
            coef, seconds, peak = fn()
            if seconds < best[i]:
                best[i] = seconds
            results[i] = (coef, peak)
    return (results[0][0], best[0], results[0][1]), (results[1][0], best[1], results[1][1])


def reference_row_count(x, atoms64, gram64, lam, nonneg, floor: int, budget_s: float) -> int:
    """As many rows as scikit-learn decodes in about ``budget_s`` seconds (from a probe of 10 to 100 rows), at
    least ``floor``, at most all."""
    probe = min(x.shape[0], max(10, min(100, 2**18 // atoms64.shape[0])))
    _, seconds, _ = run_sklearn(x[:probe], atoms64, gram64, lam, nonneg)
    return int(min(x.shape[0], max(floor, budget_s * probe / max(seconds, 1e-9))))


def bench_case(case: dict, x, atoms, nonneg, lam_rel, device, reference_rows, reference_budget_s, celer_rows,
               with_celer) -> dict:
    corr = x.double() @ atoms.double().T
    scale = float((corr if nonneg else corr.abs()).amax(1).mean())
    lam = lam_rel * scale
    dictionary = Dictionary(atoms.to(device))
    if atoms.shape[0] <= GRAM_ATOMS:  # precomputed for every side (a concept set caches it), like scikit-learn's
        _ = dictionary.gram
    lasso(x[:64].to(device), dictionary, lam, nonneg)  # warm-up (kernels, allocator)
    coef, seconds, peak = run_ours(x, dictionary, lam, nonneg, device)
    atoms64 = atoms.double().numpy()
    gram64 = atoms64 @ atoms64.T
    sub = x[:reference_row_count(x, atoms64, gram64, lam, nonneg, reference_rows, reference_budget_s)]
    repeats = 3 if sub.shape[0] * atoms.shape[0] <= 2**22 else 1  # small cases are short and noisy: best of 3
    (ours_sub, ours_sub_seconds, _), (ref, ref_seconds, ref_peak) = timed_pair(
        lambda: run_ours(sub, dictionary, lam, nonneg, device), lambda: run_sklearn(sub, atoms64, gram64, lam, nonneg),
        repeats)
    result = {
        "case": {**case, "lam_rel": lam_rel, "lam_scale": round(scale, 6), "lam": round(lam, 6), "nonneg": nonneg,
                 "rows": x.shape[0]},
        "ours": {"rows": x.shape[0], "seconds": round(seconds, 4), "rows_per_second": round(x.shape[0] / seconds, 1),
                 "objective": round(objective(x, atoms, coef, lam), 6), "relative_gap":
                 relative_gap(x, atoms, coef, lam, nonneg), "l0": round(float((coef != 0).sum(1).double().mean()), 3),
                 "peak_mib": round(peak, 1)},
        "sklearn": {"rows": sub.shape[0], "subset": sub.shape[0] < x.shape[0], "repeats": repeats,
                    "seconds": round(ref_seconds, 4), "ours_seconds_same_rows": round(ours_sub_seconds, 4),
                    "objective": round(objective(sub, atoms, ref, lam), 6),
                    "ours_objective_same_rows": round(objective(sub, atoms, ours_sub, lam), 6),
                    "relative_gap": relative_gap(sub, atoms, ref, lam, nonneg),
                    "l0": round(float((ref != 0).sum(1).double().mean()), 3), "peak_mib": round(ref_peak, 1)},
    }
    sk = result["sklearn"]
    result["ratio"] = round(sk["seconds"] / max(sk["ours_seconds_same_rows"], 1e-9), 2)
    result["objective_relative_difference"] = (sk["ours_objective_same_rows"] - sk["objective"]) / sk["objective"]
    if with_celer:
        small = x[:celer_rows]
        (ours_small, ours_small_seconds, _), (other, other_seconds, other_peak) = timed_pair(
            lambda: run_ours(small, dictionary, lam, nonneg, device), lambda: run_celer(small, atoms64, lam, nonneg), 1)
        result["celer"] = {"rows": small.shape[0], "subset": small.shape[0] < x.shape[0],
                           "seconds": round(other_seconds, 4), "ours_seconds_same_rows": round(ours_small_seconds, 4),
                           "objective": round(objective(small, atoms, other, lam), 6),
                           "ours_objective_same_rows": round(objective(small, atoms, ours_small, lam), 6),
                           "l0": round(float((other != 0).sum(1).double().mean()), 3),
                           "peak_mib": round(other_peak, 1)}
        result["ratio_celer"] = round(other_seconds / max(ours_small_seconds, 1e-9), 2)
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="full")
    parser.add_argument("--quick", action="store_true", help="same as --config quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (scikit-learn's CD is one thread)")
    parser.add_argument("--reference-rows", type=int, default=None,
                        help="fewest rows given to scikit-learn (more, up to all, when it is fast)")
    parser.add_argument("--celer-rows", type=int, default=None, help="rows given to celer (0: skip celer)")
    parser.add_argument("--models", default=None, help="comma-separated subset of the config's models")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON lines here")
    args = parser.parse_args(argv)
    config = CONFIGS["quick" if args.quick else args.config]
    torch.set_num_threads(args.threads)
    reference_rows = args.reference_rows or config["reference_rows"]
    celer_rows = config["celer_rows"] if args.celer_rows is None else args.celer_rows
    with_celer = celer_rows > 0
    if with_celer:
        try:
            import celer  # noqa: F401
        except ImportError:
            print("celer is not installed (pip install -e '.[bench]'); skipping it", file=sys.stderr)
            with_celer = False
    models = args.models.split(",") if args.models else None
    lines, by_model = [], {}
    for name, layer, ks in config["cases"]:
        if models is None or name in models:
            by_model.setdefault(name, []).append((layer, ks))
    for name, cases in by_model.items():
        model, size, info = load_model(name)
        rows = held_out_rows(model, size, [layer for layer, _ in cases], config["held_out_images"], config["max_rows"])
        concepts = concept_sets(model, size, cases)
        for layer, _ in cases:
            x = rows[layer]
            channels = x.shape[1]
            for atoms in concepts[layer].values():
                case = {"model": name, "model_test_accuracy": info.get("test_accuracy"), "layer": layer,
                        "channels": channels, "atoms": atoms.shape[0]}
                for nonneg in (True, False):
                    for lam_rel in LAMBDAS:
                        result = bench_case(case, x, atoms, nonneg, lam_rel, args.device, reference_rows,
                                            config["reference_budget_s"], celer_rows, with_celer)
                        result["threads"] = args.threads
                        lines.append(result)
                        print(json.dumps(result), flush=True)
    summary = _summary(lines)
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines + [summary]))
    return summary


def _shape(model, size: int, layer: str) -> tuple[int, int]:
    """(positions per image, channels) of ``layer`` for ``size``-px images."""
    with torch.no_grad():
        out = traced(model).prefix([layer])(torch.zeros(1, 3, size, size))
    pfvs = to_pfvs(out[layer])
    return pfvs.shape[1], pfvs.shape[2]


def _summary(lines: list[dict]) -> dict:
    ratios = [line["ratio"] for line in lines]
    differences = [line["objective_relative_difference"] for line in lines]
    summary = {
        "cases": len(lines), "min_ratio": min(ratios), "median_ratio": float(np.median(ratios)),
        "max_ratio": max(ratios), "all_at_least_as_fast": all(r >= 1 for r in ratios),
        "max_objective_relative_difference": max(differences),
        "all_objectives_within_0.5%": all(d <= 0.005 for d in differences),
        "max_ours_relative_gap": max(line["ours"]["relative_gap"] for line in lines),
    }
    if any("ratio_celer" in line for line in lines):
        celer_ratios = [line["ratio_celer"] for line in lines if "ratio_celer" in line]
        summary.update({"min_ratio_celer": min(celer_ratios), "median_ratio_celer": float(np.median(celer_ratios))})
    return {"summary": summary}


if __name__ == "__main__":
    main()
