"""The whole job of `gigaudit audit` with default settings, stage by stage: extract, graph, exemplars, evaluate, report.

Drives the worker's real handler, ``Tasks.audit``, on a real ``ArtifactStore`` (a temporary ``file://`` store), with
the model registered as the API registers it (safetensors weights, a torchvision architecture by name) and the
dataset packed by the code the CLI uses (``gigaudit.client._archive`` on an ImageFolder of PNGs). The job's params
carry no options, so every default is gig's (the API passes on only the fields a caller set). The report is built
as the CLI builds it: the exemplars of the rendered concepts (``GetConceptExemplars``' reader on the stored bundle)
and ``gigaudit.report.write_report``.

Models: torchvision ResNets with random weights whose BatchNorm running statistics are calibrated on the dataset
(one pass in train mode) and whose BatchNorm affine parameters are randomised, so activations are neither
degenerate nor exactly homogeneous. Images: planted-parts images (``gig.synthetic.make_parts_dataset``), 6 classes.

    python benchmarks/bench_audit.py --config resnet18                 # 112 px, 64 images, 2 CPU cores: goal <= 5 min
    python benchmarks/bench_audit.py --config resnet50 --device cuda   # 224 px, 1000 images, 8 x C concepts

Prints one JSON object: total seconds, seconds per stage (``report``: reading the exemplars and building the page;
``report_build_s``: the builder alone), the exemplar stage's share of the total, the report's size and what its
5 MB budget left out,
peak memory (RSS, and CUDA when used), and what was rendered; with ``--compare``, also the rendering time of the shown
concepts and of the former policy (PNGs of the 64 most frequent concepts of every layer) on the same concept set,
interleaved twice in the same process, their exemplar rows and the time ratio (the concept set keeps 6 exemplars a
concept; the former worker kept 8, so the former policy's cost is understated by up to 8/6).
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "resnet18": {"architecture": "resnet18", "size": 112, "images": 64, "concepts": None},
    "resnet50": {"architecture": "resnet50", "size": 224, "images": 1000, "concepts": "8x"},
}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
BATCH = 32


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"bench_audit: --device {device} needs a CUDA GPU, and torch.cuda.is_available() is False "
                         "on this machine; run the CPU config (--config resnet18) or use a GPU machine")


def write_images(folder: Path, n: int, size: int, seed: int) -> None:
    """An ImageFolder of PNGs: ``<class>/<i>.png``."""
    import numpy as np
    from PIL import Image

    from gig.synthetic import CLASS_NAMES, make_parts_dataset

    images, labels, _ = make_parts_dataset(n, size=size, seed=seed)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i, (picture, label) in enumerate(zip(pixels, labels.tolist())):
        target = folder / CLASS_NAMES[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target / f"{i:05d}.png")


def calibrated_model(architecture: str, num_classes: int, images, seed: int):
    """A random-weight torchvision model with BatchNorm statistics measured on ``images`` and random affine terms."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
            module.weight.data.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(module.num_features, generator=generator))
    model.train()
    with torch.no_grad():
        for start in range(0, min(len(images), 256), BATCH):
            model(images[start:start + BATCH])
    return model.eval()


def report_exemplars(store, result: dict, max_exemplars: int) -> dict:
    """What the CLI hands to the report: ``{node id: [Exemplar]}`` of the rendered concepts."""
    from gigaudit.results import Exemplar
    from gigaudit_server.storage import exemplars

    bundle = store.read("exemplars", result["exemplars_sha"])
    found = {}
    for layer, concepts in result["rendered_concepts"].items():
        for k in concepts:
            shots = exemplars.read_exemplars(bundle, layer, k, max_exemplars)
            found[f"{layer}:{k}"] = [Exemplar(f"{layer}:{k}", e["image"], e["position"], e["coefficient"],
                                              e["thumbnail_png"], e["ierf_png"] or None, e["image_name"])
                                     for e in shots if e["rendered"]]
    return found


class Recorder:
    """The progress callback of the job: the last stage and when it was reported (for the log)."""

    def __init__(self, verbose: bool):
        self.verbose, self.last, self.start = verbose, None, time.perf_counter()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if self.verbose and stage != self.last:
            print(f"[{time.perf_counter() - self.start:8.1f} s] {stage}", file=sys.stderr, flush=True)
        self.last = stage


def run(config: str, device: str, images: int | None, size: int | None, seed: int, verbose: bool,
        compare: bool = False) -> dict:
    check_device(device)
    import safetensors.torch
    import torch

    from gig.synthetic import CLASS_NAMES
    from gigaudit.client import _archive
    from gigaudit.report import report_data, write_report
    from gigaudit.results import ConceptGraph
    from gigaudit_server.storage.datasets.archives import inspect_archive
    from gigaudit_server.worker.images import load_images
    from gigaudit_server.queue.jobs import Job
    from gigaudit_server.storage.artifacts import ArtifactStore
    from gigaudit_server.worker.tasks import Tasks

    spec = dict(CONFIGS[config])
    spec["images"] = images or spec["images"]
    spec["size"] = size or spec["size"]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        root = Path(tmp)
        store = ArtifactStore(f"file://{root}/store")
        write_images(root / "images", spec["images"], spec["size"], seed)
        with _archive(root / "images") as (archive, fmt):  # the CLI's packing of a folder
            data = Path(archive).read_bytes()
        described = inspect_archive(io.BytesIO(data))
        dataset = {"name": "datasets/bench", "sha256": store.put_bytes("datasets", data), "format": fmt,
                   "n_images": described.n_images, "class_names": described.class_names}
        pictures, _, _ = load_images(store.local_path("datasets", dataset["sha256"]), spec["size"], MEAN, STD)
        model = calibrated_model(spec["architecture"], len(CLASS_NAMES), pictures, seed)
        buffer = safetensors.torch.save(model.state_dict())
        record = {"name": "models/bench", "architecture": spec["architecture"], "num_classes": len(CLASS_NAMES),
                  "class_names": sorted(CLASS_NAMES), "input_size": spec["size"], "mean": MEAN, "std": STD,
                  "weights_sha256": store.put_bytes("weights", buffer)}
        tasks = Tasks(store, device, batch_size=BATCH)
        params = {"model": record, "dataset": dataset, "concept_set": "models/bench/conceptSets/a",
                  "concept_graph": "models/bench/conceptGraphs/a"}
        if spec["concepts"] == "8x":
            import gig

            net = tasks.models.get(record, device)
            params["layers"] = gig.default_layers(net)
            params["n_concepts"] = {layer: 8 * _channels(net, layer, spec["size"], device)
                                    for layer in params["layers"]}
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        context = _Context(Job(id="bench", kind="audit", params=params), Recorder(verbose))
        start = time.perf_counter()
        result = tasks.audit(context)
        job_seconds = time.perf_counter() - start

        started = time.perf_counter()
        graph = ConceptGraph(json.loads(store.read("graphs", result["graph_sha"])))
        shots = report_exemplars(store, result, max_exemplars=6)
        built = time.perf_counter()
        path = write_report(root / "report", graph, exemplars=shots, title=f"bench: {config}")
        report_seconds, build_seconds = time.perf_counter() - started, time.perf_counter() - built
        report_bytes = path.stat().st_size
        budget = report_data(path.read_text(encoding="utf-8"))["budget"]

        if compare:  # the shown concepts against the former policy (the 64 most frequent of every layer) on the
            # same concept set and graph, interleaved twice in this process so that outside load weighs on both
            from gig.concepts import ConceptSet
            from gigaudit_server.worker.tasks import most_relevant

            concepts = ConceptSet.from_bytes(store.read("concepts", result["concept_set_sha"]))
            policies = {"shown": most_relevant(graph.data, tasks.exemplar_concepts),
                        "former": {layer: sorted(torch.argsort(lc.frequency, descending=True,
                                                               stable=True)[:64].tolist())
                                   for layer, lc in concepts.layers.items()}}
            net = tasks.models.get(record, device)
            timings = {name: [] for name in policies}
            with tasks._dataset(params) as data:
                for _ in range(2):
                    for name, shown in policies.items():
                        started = time.perf_counter()
                        tasks._render_exemplars(net, concepts, data, record, shown, lambda *a: None)
                        timings[name].append(time.perf_counter() - started)
            rows = {name: sum(len(concepts.layers[layer].exemplars[k]) for layer, ks in shown.items() for k in ks)
                    for name, shown in policies.items()}

    stages = {**result["seconds"], "report": round(report_seconds, 3)}
    total = job_seconds + report_seconds
    out = {
        "benchmark": "bench_audit", "config": config, "device": device, "threads": torch.get_num_threads(),
        "architecture": spec["architecture"], "size": spec["size"], "images": spec["images"],
        "n_concepts": {layer: v["n_concepts"] for layer, v in result["layers"].items()},
        "options_used": result.get("options"),
        "total_s": round(total, 3), "stages_s": stages,
        "other_s": round(job_seconds - sum(result["seconds"].values()), 3),
        "exemplar_share": round(stages["exemplars"] / total, 4),
        "rendered_concepts": {layer: len(v) for layer, v in result["rendered_concepts"].items()},
        "report_bytes": report_bytes, "report_build_s": round(build_seconds, 3),
        "report_budget": {k: budget[k] for k in ("max_bytes", "plan", "embedded_concepts", "left_out")},
        "report_nodes_with_thumbnails": len(shots),
        "peak_rss_mb": round(max(rss_before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1),
        "completeness_delta_mean": {pair: v.get("delta_mean") for pair, v in
                                    result["evidence"].get("completeness", {}).items()},
    }
    if compare:
        out["compare_rendering_s"] = {name: [round(t, 3) for t in ts] for name, ts in timings.items()}
        out["compare_rows"] = rows
        out["former_over_shown_time_ratio"] = round(sum(timings["former"]) / sum(timings["shown"]), 2)
    if device.startswith("cuda"):
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _channels(model, layer: str, size: int, device: str) -> int:
    import torch

    from gig.layers import traced

    with torch.no_grad():
        return traced(model).prefix([layer])(torch.zeros(1, 3, size, size, device=device))[layer].shape[1]


class _Context:
    """What a handler reads of its ``JobContext``: the job and the progress callback (no queue: its cost is not
    part of the audit)."""

    shard_index, shard_count, checkpoint = 0, 1, None

    def __init__(self, job, progress):
        self.job, self.progress = job, progress

    def checkpoint_due(self) -> bool:
        return False

    def save_checkpoint(self, state: dict) -> None:
        """Checkpoints are for resuming a job after a worker's loss; a benchmark run keeps none."""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="resnet18")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--images", type=int, default=None, help="override the config's image count")
    parser.add_argument("--size", type=int, default=None, help="override the config's image side")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no stage log on stderr")
    parser.add_argument("--compare", action="store_true", help="also time the former exemplar policy (the 64 most "
                        "frequent concepts of every layer) on the same concept set")
    args = parser.parse_args(argv)
    check_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = run(args.config, args.device, args.images, args.size, args.seed, not args.quiet, args.compare)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
