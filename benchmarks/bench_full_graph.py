"""Full concept-graph throughput: ResNet-50, every bottleneck block, decomposition + GIG for every layer pair.

The concepts are ``n`` PFVs drawn from the model's own activations on the first batch (scaled rows of real
activations, so the Lasso has the structure it meets in practice); ``--concepts 8x`` gives the paper's ``8 × C``.
The decomposition alone is timed first (same solver ``build_graph`` uses), then ``gig.build_graph`` end to end.
Prints one JSON object: images per second, the split between decomposition and GIG, peak memory and the
completeness delta of every pair.

    python benchmarks/bench_full_graph.py --device cuda --size 224 --batch 32 --batches 2
    python benchmarks/bench_full_graph.py --size 64 --batch 2 --batches 1 --concepts 32   # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torchvision

import gig
from gig.layers import traced
from gig.pfv import to_pfvs


def concept_vectors(model, images, layers, spec: str, seed: int) -> dict[str, torch.Tensor]:
    """``K`` PFVs per layer sampled from real activations (``spec``: an int or ``"8x"`` for ``8 × C``)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        acts = traced(model).prefix(layers)(images)
    vectors = {}
    for layer in layers:
        pfvs = to_pfvs(acts[layer]).flatten(0, 1).float().cpu()
        k = 8 * pfvs.shape[1] if spec == "8x" else int(spec)
        rows = torch.randint(pfvs.shape[0], (k,), generator=generator)
        noise = 0.05 * torch.randn(k, pfvs.shape[1], generator=generator) * pfvs.std()
        vectors[layer] = (pfvs[rows] + noise).to(images.device)
    return vectors


def randomize_batchnorm(model, seed: int = 0) -> None:
    """Give BatchNorm layers random statistics and biases, as trained ones have. With the defaults (zero mean, unit
    variance, no bias) every block is positively homogeneous, the integrand is constant along the path and the
    completeness delta would be trivially zero."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(c, generator=generator))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--concepts", default="64", help="concepts per layer: an int, or 8x for 8 × channels")
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--top-t", type=int, default=5)
    parser.add_argument("--max-batch-rows", type=int, default=None, help="(image × step) rows per segment chunk")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions on CUDA")
    args = parser.parse_args(argv)

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=100)
    randomize_batchnorm(model)
    model = model.to(device).eval()
    layers = gig.default_layers(model)
    data = [torch.rand(args.batch, 3, args.size, args.size, device=device) for _ in range(args.batches)]
    concepts = gig.ConceptSet.from_vectors(concept_vectors(model, data[0], layers, args.concepts, 0), lam=args.lam)
    n_images = args.batch * args.batches

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Decomposition alone (what build_graph does per layer and batch).
    prefix = traced(model).prefix(layers)
    sync()
    start = time.perf_counter()
    l0 = {}
    for images in data:
        with torch.no_grad():
            acts = prefix(images)
        for layer in layers:
            coefficients = concepts.decompose(layer, to_pfvs(acts[layer]))
            l0[layer] = float((coefficients != 0).float().mean())
    sync()
    decompose_s = time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sync()
    start = time.perf_counter()
    graph = gig.build_graph(model, data, concepts, layers, steps=args.steps, top_t=args.top_t,
                            max_batch_rows=args.max_batch_rows)
    sync()
    graph_s = time.perf_counter() - start
    completeness = graph.to_dict()["evidence"].get("completeness", {})

    result = {
        "benchmark": "full_graph",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "resnet50 (random weights)",
        "size": args.size,
        "layers": len(layers),
        "pairs": len(layers),
        "concepts_per_layer": {layer: concepts.vectors(layer).shape[0] for layer in (layers[0], layers[-1])},
        "lam": args.lam,
        "steps": args.steps,
        "top_t": args.top_t,
        "images": n_images,
        "tf32": args.tf32,
        "max_batch_rows": args.max_batch_rows,
        "build_graph_s": round(graph_s, 3),
        "images_per_s": round(n_images / graph_s, 3),
        "decompose_only_s": round(decompose_s, 3),
        "decompose_share_of_graph": round(decompose_s / graph_s, 3),
        "mean_l0": round(sum(l0.values()) / len(l0), 4),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "peak_rss_growth_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1),
        "completeness_dataset_delta": {pair: round(entry["dataset_delta"], 6) for pair, entry in completeness.items()},
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
