"""Train the demo PartsNet reproducibly and write service/gig/assets/partsnet.{safetensors,json}.

    python scripts/train_demo.py [--out PATH] [--seed 0] [--epochs 6] [--n-train 3000] [--width 16]

Runs on one CPU thread (so the weights are the same on every machine with the same torch build) in about 10 s.
"""
from __future__ import annotations

import argparse
import json

import torch

from gig.synthetic import ASSETS, save_parts_net, train_parts_net


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ASSETS / "partsnet"), help="path without suffix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, info = train_parts_net(n_train=args.n_train, epochs=args.epochs, width=args.width, seed=args.seed)
    save_parts_net(model, info, args.out)
    print(json.dumps({k: info[k] for k in ("train_accuracy", "test_accuracy", "train_seconds")}))


if __name__ == "__main__":
    main()
