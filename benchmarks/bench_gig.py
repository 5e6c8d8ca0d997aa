"""GIG speed and memory: gig's segment integrator against a naive Captum reference, same answers.

Ours: one prefix forward for all analysed layers, then per layer pair one forward of the segment ``a → b`` over
(images × steps) rows and one backward per target (``gig.attribution.integrate``). Naive: Captum
``IntegratedGradients`` once per (pair, target) on the WHOLE model, with a forward hook at ``a`` that replaces its
output by ``from_pfvs(U V)`` built from Captum's input ``U`` and a hook at ``b`` that reads ``X^b`` for ``g_r``.
Both start from the same decomposition (least squares, ``lam = 0``, random concept vectors) and the same targets.

Each side runs in its own subprocess so that its peak memory can be measured (CPU: ``ru_maxrss`` growth over
the process's peak after setup; CUDA: ``torch.cuda.max_memory_allocated`` growth); the parent compares the
attributions and prints one JSON object. The two sides are the same computation (in float64 they agree to
~1e-14); in float32 they round differently (row order, ``α(UV)`` against ``(αU)V``), and concepts whose terms
cancel over positions can then differ by ~1e-3 of the largest attribution, about as much as either differs from
float64. Wall and CPU seconds are both reported: on a shared machine the CPU
time of each process (all its threads) is the steadier measure of the work done.

    python benchmarks/bench_gig.py --config A            # ResNet-50, 96 px, 15 block pairs + layer4.2 → logits
    python benchmarks/bench_gig.py --config B --pairs 1  # smoke run: ResNet-18, one block pair
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torchvision
from captum.attr import IntegratedGradients
from safetensors.torch import load_file, save_file

from gig.attribution import class_targets, concept_targets, integrate
from gig.concepts import ConceptSet
from gig.layers import LOGITS, default_layers, traced
from gig.pfv import from_pfvs, to_pfvs

CONFIGS = {
    # name: (builder, layers: slice of the default layers, the last one paired with the logits when included)
    "A": ("resnet50", slice(None), True),
    "B": ("resnet18", slice(3, 6), False),  # layer2.1 → layer3.0 → layer3.1: two block pairs
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=CONFIGS, default="A")
    parser.add_argument("--pairs", type=int, default=None, help="keep only the first N layer pairs")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--concepts", type=int, default=64, help="random concept vectors per layer")
    parser.add_argument("--top-t", type=int, default=5)
    parser.add_argument("--method", default="gausslegendre")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--side", choices=["ours", "naive"], help=argparse.SUPPRESS)  # internal: one side only
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def setup(args):
    """The seeded model, images, layer pairs and concepts both sides share."""
    arch, layer_slice, with_logits = CONFIGS[args.config]
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = getattr(torchvision.models, arch)().eval().to(args.device, dtype)
    layers = default_layers(model)[layer_slice]
    pairs = list(zip(layers, layers[1:] + ([LOGITS] if with_logits else [])))
    if args.pairs is not None:
        pairs = pairs[: args.pairs]
    images = torch.randn(args.images, 3, args.size, args.size, device=args.device, dtype=dtype)
    used = sorted({n for pair in pairs for n in pair if n != LOGITS}, key=layers.index)
    with torch.no_grad():  # also warms up the kernels of both sides (untimed)
        channels = {n: to_pfvs(a).shape[-1] for n, a in traced(model).prefix(used)(images).items() if n != LOGITS}
        model(images)
    generator = torch.Generator().manual_seed(1)
    vectors = {n: torch.randn(args.concepts, channels[n], generator=generator, dtype=dtype) for n in used}
    return model, images, pairs, used, ConceptSet.from_vectors(vectors, lam=0.0)


def prepare(model, images, pairs, used, concepts, top_t):
    """Prefix forward, decompositions and targets: ``{pair: (U, V, like_shape, targets, weights, X^a)}``."""
    with torch.no_grad():
        acts = traced(model).prefix(used)(images)
    coefficients = {n: concepts.decompose(n, to_pfvs(acts[n])) for n in used}
    prepared = {}
    for a, b in pairs:
        if b == LOGITS:
            targets, weights = class_targets(acts[LOGITS])
        else:
            targets, weights = concept_targets(coefficients[b], concepts.vectors(b).to(images.device),
                                               acts[b].shape, top_t=top_t)
        prepared[a, b] = (coefficients[a], concepts.vectors(a).to(images.device), acts[a].shape, targets, weights)
    return prepared


def run_ours(model, images, pairs, used, concepts, args):
    prepared = prepare(model, images, pairs, used, concepts, args.top_t)
    t = traced(model)
    return {f"{a}->{b}": integrate(t.segment(a, b), u, v, shape, w, args.steps, args.method)[0]
            for (a, b), (u, v, shape, _, w) in prepared.items()}


def run_naive(model, images, pairs, used, concepts, args):
    prepared = prepare(model, images, pairs, used, concepts, args.top_t)
    results = {}
    for (a, b), (u, v, shape, targets, weights) in prepared.items():
        per_target = [_captum_on_whole_model(model, images, a, b, u, v, shape, weights[:, t], args)
                      for t in range(targets.shape[1])]
        results[f"{a}->{b}"] = torch.stack(per_target, dim=2)
    return results


def _captum_on_whole_model(model, images, a, b, u, v, shape, weight, args):
    """Captum IG of ``u -> g(X^b)`` with the whole model run per call; hooks swap in ``U V`` and read ``X^b``."""
    state = {}

    def forward(coefficients, target_weight):
        state["replacement"] = from_pfvs(coefficients @ v, (coefficients.shape[0],) + tuple(shape[1:]))
        logits = model(images.repeat(coefficients.shape[0] // images.shape[0], 1, 1, 1))
        out = logits if b == LOGITS else state["target"]
        return (target_weight * out).flatten(1).sum(1)

    def replace(module, inputs, output):
        return state["replacement"]

    def read(module, inputs, output):
        state["target"] = output

    handles = [model.get_submodule(a).register_forward_hook(replace)]
    if b != LOGITS:
        handles.append(model.get_submodule(b).register_forward_hook(read))
    try:
        ig = IntegratedGradients(forward)
        attributions = ig.attribute(u, baselines=0.0, additional_forward_args=(weight,), n_steps=args.steps,
                                    method=args.method)
    finally:
        for handle in handles:
            handle.remove()
    return attributions.sum(1)  # (B, K): summed over positions


def measure_side(args):
    """Child process: run one side, write its attributions, print its time and memory as JSON."""
    model, images, pairs, used, concepts = setup(args)
    run = run_ours if args.side == "ours" else run_naive
    cuda = images.is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_memory = torch.cuda.memory_allocated()
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start, start_cpu = time.perf_counter(), time.process_time()
    with torch.enable_grad():
        results = run(model, images, pairs, used, concepts, args)
    if cuda:
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - start_memory) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss) / 1024
    save_file({k: r.detach().cpu().contiguous() for k, r in results.items()}, args.out)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_memory_growth_mb": peak_mb, "pairs": [f"{a}->{b}" for a, b in pairs]}))


def main(argv=None):
    args = parse_args(argv)
    if args.side:
        measure_side(args)
        return
    report = {"config": args.config, "model": CONFIGS[args.config][0], "device": args.device, "dtype": args.dtype,
              "images": args.images,
              "size": args.size, "steps": args.steps, "method": args.method, "top_t": args.top_t,
              "concepts_per_layer": args.concepts, "lam": 0.0, "torch_threads": torch.get_num_threads(),
              "memory": "CUDA max_memory_allocated growth" if args.device.startswith("cuda")
              else "growth of the process's max RSS over its peak after setup"}
    attributions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("ours", "naive"):
            out = os.path.join(tmp, f"{side}.safetensors")
            command = [sys.executable, os.path.abspath(__file__), *(argv if argv is not None else sys.argv[1:]),
                       "--side", side, "--out", out]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{side} side failed:\n{done.stderr}")
            report[side] = json.loads(done.stdout.strip().splitlines()[-1])
            attributions[side] = load_file(out)
    report["pairs"] = report["ours"].pop("pairs")
    report["naive"].pop("pairs")
    diffs = [(attributions["ours"][k] - attributions["naive"][k]).abs().max() for k in attributions["ours"]]
    scale = max(float(r.abs().max()) for r in attributions["naive"].values())
    report["max_abs_diff"] = float(max(diffs))
    report["max_abs_attribution"] = scale
    report["max_diff_relative_to_scale"] = report["max_abs_diff"] / scale
    report["agree_to_1e-4"] = report["max_diff_relative_to_scale"] <= 1e-4
    report["speedup"] = report["naive"]["seconds"] / report["ours"]["seconds"]
    report["speedup_cpu_time"] = report["naive"]["cpu_seconds"] / report["ours"]["cpu_seconds"]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
