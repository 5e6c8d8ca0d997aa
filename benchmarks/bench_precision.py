"""Completeness delta and agreement of GIG under reduced precision (float32, TF32, bfloat16) on one device.

ResNet-18 with BatchNorm statistics randomised (see bench_full_graph), two block pairs and the last block → logits,
64 concept vectors drawn from the layer's own PFVs, λ = 0.1. Prints one JSON object: per precision the dataset-level
completeness delta of every pair and the largest difference to float32 relative to the largest attribution.

    python benchmarks/bench_precision.py --device cuda
"""
from __future__ import annotations

import argparse
import json

import torch
import torchvision

import gig
from gig.attribution import dataset_delta

from bench_full_graph import concept_vectors, randomize_batchnorm

PAIRS = [("layer3.0", "layer3.1"), ("layer3.1", "layer4.0"), ("layer4.1", "logits")]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=100)
    randomize_batchnorm(base)
    base = base.to(args.device).eval()
    images = torch.rand(args.images, 3, args.size, args.size, device=args.device)
    layers = sorted({n for pair in PAIRS for n in pair if n != "logits"}, key=gig.default_layers(base).index)
    vectors = concept_vectors(base, images, layers, "64", 0)
    precisions = {"float32": torch.float32, "tf32": torch.float32}
    if torch.device(args.device).type == "cuda":
        precisions["bfloat16"] = torch.bfloat16
    result, reference = {"device": args.device, "steps": args.steps, "pairs": {}}, {}
    for name, dtype in precisions.items():
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
        model = base if dtype == torch.float32 else torchvision.models.resnet18(num_classes=100).to(args.device)
        if model is not base:
            model.load_state_dict(base.state_dict())
            model = model.to(dtype).eval()
        concepts = gig.ConceptSet.from_vectors({k: v.to(dtype) for k, v in vectors.items()}, lam=0.1)
        for source, target in PAIRS:
            out = gig.attribute(model, images.to(dtype), concepts, source, target, steps=args.steps,
                                targets=reference.get((source, target), (None,))[0], return_delta=True)
            a = out.attributions.float()
            entry = {"dataset_delta": round(dataset_delta(out.attributions.float(), out.target_difference.float()), 6)}
            if (source, target) in reference:
                ref = reference[(source, target)][1]
                entry["max_diff_vs_float32"] = round(float((a - ref).abs().max() / ref.abs().max()), 6)
            else:
                reference[(source, target)] = (out.targets, a)
            result["pairs"].setdefault(f"{source}->{target}", {})[name] = entry
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
