"""Dataset decoding speed: the worker's threaded decoder against the same decoder on one thread, same tensors.

Ours: ``gigaudit_server.worker.images.ArchiveImages`` with ``--threads`` decoding threads (PIL decodes JPEG and
resizes outside the GIL; torch runs one intra-op thread on both sides). Reference: the same reader with one thread (what every worker did before). Both read the
same ImageFolder tar of JPEG photographs-sized images (procedural textures, ``--size`` px, quality 90) through the
model's transform (shorter side to 224, centre crop, bicubic, ImageNet normalisation), in batches of 32; the
tensors must be equal. After an untimed warm-up, the two sides run ``--repeats`` times, interleaved, and the
fastest run of each is reported. Peak memory is the growth of ``ru_maxrss`` over a run (one process, so a later
run's growth is measured over the earlier runs' peak: read it as an upper bound on the growth the run caused).

    python benchmarks/bench_decode.py                   # 256 images of 512x384 px, 2 threads
    python benchmarks/bench_decode.py --images 32 --threads 4
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import tarfile
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from gig.preprocessing import Preprocessing
from gigaudit_server.worker.images import ArchiveImages


def _archive(path: str, n: int, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            base = np.sin(xx / rng.uniform(5, 40) + rng.uniform(0, 6)) + np.cos(yy / rng.uniform(5, 40))
            pixels = np.stack([base * rng.uniform(40, 120) + rng.uniform(60, 190) for _ in range(3)], axis=-1)
            pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            info = tarfile.TarInfo(f"class{i % 4}/img{i:04d}.jpg")
            info.size = len(buffer.getvalue())
            tar.addfile(info, io.BytesIO(buffer.getvalue()))


def _run(path: str, transform: Preprocessing, threads: int) -> tuple[float, float, float, torch.Tensor]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    data = ArchiveImages(path, transform, threads=threads, batch_size=32)
    batches = [b[0] if isinstance(b, tuple) else b for b in data]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return seconds, cpu_seconds, growth, torch.cat(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side, interleaved (best kept)")
    args = parser.parse_args()
    # one intra-op thread: only the decoding threads differ between the sides (torch's own threads would otherwise
    # spin against the decoding threads, or inflate the one-thread side's CPU time)
    torch.set_num_threads(1)
    transform = Preprocessing(224, 224, resize_mode="shorter_side_crop", crop_pct=0.875, interpolation="bicubic")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "images.tar")
        _archive(path, args.images, args.width, args.height)
        _run(path, transform, args.threads)  # warm-up: the page cache, PIL's and torch's first calls
        runs = {"reference": [], "ours": []}
        for _ in range(args.repeats):  # interleaved, the best of each: a shared machine's noise hits both
            runs["reference"].append(_run(path, transform, 1))
            runs["ours"].append(_run(path, transform, args.threads))
        reference, ours = (min(runs[side], key=lambda r: r[0]) for side in ("reference", "ours"))
    same = bool(torch.equal(reference[3], ours[3]))
    print(json.dumps({
        "images": args.images, "source_px": [args.height, args.width], "input_px": [224, 224],
        "threads": args.threads, "cpus": os.cpu_count(), "same_tensors": same,
        "reference": {"seconds": round(reference[0], 3), "cpu_seconds": round(reference[1], 3),
                      "images_per_s": round(args.images / reference[0], 1),
                      "peak_memory_growth_mb": round(reference[2], 1)},
        "ours": {"seconds": round(ours[0], 3), "cpu_seconds": round(ours[1], 3),
                 "images_per_s": round(args.images / ours[0], 1), "peak_memory_growth_mb": round(ours[2], 1)},
        "speedup": round(reference[0] / ours[0], 3),
    }, indent=2))
    if not same:
        raise SystemExit("the threaded decoder gave other tensors")


if __name__ == "__main__":
    main()
