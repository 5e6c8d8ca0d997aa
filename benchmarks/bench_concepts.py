"""Concept quality at given extraction settings, on planted datasets: how the defaults were chosen, and checked.

For each planted kind (``gig.planted``: ``parts``, ``textures``, ``glyphs`` choose; ``marks`` is held out), a small
CNN is trained (cached under ``~/.cache/gigaudit-bench``), concepts are extracted from 120 images with
``gig.extract_concepts`` at the settings given (default: the library's defaults), and on 120 fresh images every
analysed layer is scored:

- ``nmi``: NMI between the concept that names each PFV (``ConceptSet.assign``, nearest concept vector) and the
  planted part under it (ambiguous cells left out); ``nmi_coefficient``: the same when a PFV is named by its largest
  Lasso coefficient instead;
- the references at the same PFVs: ``random``, the mean NMI of 3 draws of K random directions (non-negative for
  non-negative activations) naming each PFV by its largest projection; ``kmeans16``, the mean NMI of plain k-means
  with K = 16 (3 seeds) fitted on the same sampled PFVs, naming by nearest centroid;
- ``relative_error`` and ``l0`` of the decomposition, and ``spliced_agreement``: top-1 agreement of the network run
  on the reconstruction instead of the activation.

    python benchmarks/bench_concepts.py                                   # defaults, all kinds
    python benchmarks/bench_concepts.py --kinds parts textures --n-concepts 32 --lam 0.05 --method kmeans
    python benchmarks/bench_concepts.py --paper                           # the paper's preset, for comparison

Prints one JSON line per (kind, layer) and a summary line with the smallest ratios over all layers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import gig
from gig.concepts import PAPER_PRESET
from gig.concepts.clustering import DEFAULT, DEFAULT_N_CONCEPTS
from gig.concepts.extract import DEFAULT_LAM, DEFAULT_PFVS_PER_IMAGE, sample_pfvs
from gig.planted import CHOOSING, HELD_OUT, PlantedNet, concept_agreement, kind, make_planted, train_planted
from gig.synthetic import PartsNet

CACHE = Path(os.environ.get("GIGAUDIT_BENCH_CACHE", Path.home() / ".cache" / "gigaudit-bench"))


def trained_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The network of kind ``name``, trained once and cached (safetensors)."""
    from safetensors.torch import load_file, save_file

    path = CACHE / f"planted-{name}-{seed}.safetensors"
    spec = kind(name)
    model = PartsNet(6) if spec is None else PlantedNet(len(spec.class_parts), spec.stages, spec.residual)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    model, info = train_planted(name, seed=seed)
    print(json.dumps({"trained": name, **{k: info[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")}}),
          file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def score(name: str, settings: dict, n_images: int = 120, seed: int = 0) -> list[dict]:
    """One row per analysed layer of kind ``name`` (see the module docstring)."""
    model = trained_model(name)
    layers = gig.default_layers(model)
    images, labels, _ = make_planted(name, n_images, seed=7 + seed)
    data = [(images[i:i + 40], labels[i:i + 40]) for i in range(0, n_images, 40)]
    start = time.perf_counter()
    concepts = gig.extract_concepts(model, data, layers, seed=seed, **settings)
    seconds = time.perf_counter() - start
    samples, _ = sample_pfvs(model, data, layers, concepts.params["sampling"], concepts.params["pfvs_per_image"], seed)
    rows = []
    for row in concept_agreement(model, concepts, name, samples, n_images, seed=1000 + seed):
        row.update(held_out=name in HELD_OUT, extract_seconds=seconds, vs_random=row["nmi"] / max(row["random"], 1e-12),
                   vs_kmeans16=row["nmi"] / max(row["kmeans16"], 1e-12),
                   kmeans16_vs_random=row["kmeans16"] / max(row["random"], 1e-12))
        rows.append({key: round(v, 4) if isinstance(v, float) else v for key, v in row.items()})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=[*CHOOSING, *HELD_OUT])
    parser.add_argument("--n-concepts", type=int, default=None, help=f"default: gig's ({DEFAULT_N_CONCEPTS})")
    parser.add_argument("--pfvs-per-image", type=int, default=DEFAULT_PFVS_PER_IMAGE)
    parser.add_argument("--method", default=DEFAULT)
    parser.add_argument("--lam", type=float, default=DEFAULT_LAM, help="relative to each layer's scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper", action="store_true", help="the paper's preset (gig.concepts.PAPER_PRESET) instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = {"n_concepts": args.n_concepts, "pfvs_per_image": args.pfvs_per_image, "method": args.method,
                "lam": args.lam}
    if args.paper:
        settings = {**settings, **PAPER_PRESET}
    rows = []
    for name in args.kinds:
        for row in score(name, settings, seed=args.seed):
            rows.append(row)
            print(json.dumps({**row, "settings": settings}), flush=True)
    print(json.dumps({"summary": True, "settings": settings, "layers": len(rows),
                      **{f"min_{key}": min(r[key] for r in rows) for key in
                         ("vs_random", "vs_kmeans16", "kmeans16_vs_random", "spliced_agreement")},
                      "max_relative_error": max(r["relative_error"] for r in rows)}))


if __name__ == "__main__":
    main()
