"""``python -m gigaudit_server worker --device cpu|cuda:N --redis-url URL --store URL [--name NAME]``.

One worker process per device: it keeps models resident on its device, takes jobs from Redis and runs the gig
handlers in-process. SIGTERM or SIGINT stops it; a running job is handed back to the queue at its next batch.
"""
from __future__ import annotations

import argparse
import logging

import redis
import torch

from gigaudit_server.worker.architectures import list_architectures
from gigaudit_server.storage.catalog import Catalog
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.worker.models import ModelCache
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.tasks import Tasks
from gigaudit_server.worker.loop import Worker


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gigaudit_server worker", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    parser.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--store", required=True, help="artifact store URL, e.g. file:///var/lib/gigaudit")
    parser.add_argument("--name", default=None, help="worker name (default: host-pid-random)")
    parser.add_argument("--models", type=int, default=4, help="models kept resident (LRU, default 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per gig batch (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        args.device = check_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def check_device(name: str) -> str:
    """``cpu`` or an existing ``cuda:N``; ``ValueError`` otherwise."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {name!r}; use cpu or cuda:N") from exc
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda" or device.index is None:
        raise ValueError(f"invalid device {name!r}; use cpu or cuda:N")
    if device.index >= torch.cuda.device_count():
        raise ValueError(f"no {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


def build_worker(args: argparse.Namespace) -> Worker:
    store = ArtifactStore(args.store)
    tasks = Tasks(store, args.device, ModelCache(store, capacity=args.models), batch_size=args.batch_size)
    queue = JobQueue(redis.Redis.from_url(args.redis_url, decode_responses=True))
    Catalog(queue.redis).publish_architectures(list_architectures())  # for the torch-free API's checks and listing
    return Worker(queue, tasks.handlers(), tasks.reducers(), name=args.name)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.set_device(args.device)
    worker = build_worker(args)
    logging.getLogger(__name__).info("worker %s on %s, store %s", worker.name, args.device, args.store)
    worker.run()  # returns after SIGTERM / SIGINT


if __name__ == "__main__":
    main()
