"""Write the demo dataset: procedural images with planted parts (gig.synthetic) as an ImageFolder of PNGs.

    python scripts/make_demo_data.py --out out/demo-data --n 120
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from gig.synthetic import CLASS_NAMES, make_parts_dataset


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=120, help="number of images")
    parser.add_argument("--seed", type=int, default=1, help="data seed (the demo model was trained on seed 0)")
    args = parser.parse_args(argv)
    images, labels, _ = make_parts_dataset(args.n, size=32, seed=args.seed)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i, (image, label) in enumerate(zip(pixels, labels.tolist())):
        folder = args.out / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    print(f"wrote {args.n} images of {len(CLASS_NAMES)} classes to {args.out}")


if __name__ == "__main__":
    main()
