"""Completeness at the default quadrature, beside Gauss–Legendre at 16 and 64 steps, on CNNs and LayerNorm models.

For each model, concepts are extracted with the library's defaults from 16 images, then on 4 of them every consecutive pair
of default layers (and the last layer → logits) is attributed with ``gig.attribute`` at the defaults
(``method="auto"``: ``loglegendre`` where the segment holds a LayerNorm-like normalisation, else
``gausslegendre``; the rule's own steps) and with ``method="gausslegendre"`` at 16 and 64 steps. It prints, per
pair, the dataset-level completeness delta ``Σ|Σ_q GIG − Δg| / Σ|Δg|`` of each, the rule and steps used and the
seconds, then a summary line per model. Random weights (with BatchNorm statistics calibrated on the images).

    python benchmarks/bench_completeness.py                       # vit_b_16, convnext_tiny, resnet18, partsnet
    python benchmarks/bench_completeness.py --models vit_b_16 --images 3
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torchvision
from torch import nn

import gig
from gig.attribution import dataset_delta
from gig.layers import LOGITS
from gig.synthetic import load_parts_net

MODELS = ("vit_b_16", "convnext_tiny", "resnet18", "partsnet")


def build(name: str, images: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    if name == "partsnet":
        return load_parts_net()[0]
    if name == "vit_b_16":
        model = torchvision.models.vit_b_16(image_size=images.shape[-1], num_classes=10)
        nn.init.normal_(model.heads.head.weight, std=0.05)  # torchvision zero-initialises the head
    else:
        model = getattr(torchvision.models, name)(num_classes=10)
    calibrate_batch_norm(model, images)
    return model.eval()


def calibrate_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Running statistics from the images themselves, so that random-weight activations are not degenerate."""
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        with torch.no_grad():
            model(images)
    model.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--images", type=int, default=4, help="images attributed (concepts come from 16)")
    parser.add_argument("--size", type=int, default=64, help="image side (PartsNet: always 32)")
    parser.add_argument("--top-t", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.models:
        size = 32 if name == "partsnet" else args.size
        pool = torch.rand(16, 3, size, size, generator=torch.Generator().manual_seed(1))
        model = build(name, pool)
        layers = gig.default_layers(model)
        concepts = gig.extract_concepts(model, [pool[:8], pool[8:]], layers, n_exemplars=0)
        images = pool[:args.images]
        rows = []
        for source, target in zip(layers, layers[1:] + [LOGITS]):
            row = {"model": name, "pair": f"{source}->{target}"}
            for label, options in (("default", {}), ("gausslegendre_16", {"method": "gausslegendre", "steps": 16}),
                                   ("gausslegendre_64", {"method": "gausslegendre", "steps": 64})):
                start = time.perf_counter()
                result = gig.attribute(model, images, concepts, source, target, top_t=args.top_t, **options)
                row[label] = {"delta": dataset_delta(result.attributions, result.target_difference),
                              "method": result.method, "steps": result.steps,
                              "seconds": round(time.perf_counter() - start, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        print(json.dumps({"summary": name, "pairs": len(rows), "images": args.images, "size": size,
                          **{f"max_delta_{label}": max(r[label]["delta"] for r in rows)
                             for label in ("default", "gausslegendre_16", "gausslegendre_64")},
                          "default_seconds": round(sum(r["default"]["seconds"] for r in rows), 2),
                          "gausslegendre_16_seconds": round(sum(r["gausslegendre_16"]["seconds"] for r in rows), 2)}),
              flush=True)


if __name__ == "__main__":
    main()
