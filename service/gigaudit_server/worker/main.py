"""``python -m gigaudit_server worker --device cpu|cuda:N --redis-url URL --store URL [--name NAME]``.

One worker process per device: it keeps models resident on its device, takes jobs from Redis and runs the gig
handlers in-process. SIGTERM or SIGINT stops it; a running job is handed back to the queue at its next batch.
Redis outages up to ``--redis-retry-s`` do not fail a job; long jobs checkpoint every ``--checkpoint-s``; a job
without progress for ``--stall-timeout-s`` is failed and dead-lettered. ``--health-port`` serves ``/livez`` and
``/readyz`` for the kubelet (``worker.health``).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from types import SimpleNamespace

import redis
import torch

from gigaudit_server.observability import logs, tracing
from gigaudit_server.observability.metrics import MetricsServer, WorkerMetrics, new_registry
from gigaudit_server.queue.jobs import CHECKPOINT_S, DEAD_LETTER_TTL_S, FINISHED_TTL_S, JobQueue
from gigaudit_server.queue.retry import DEFAULT_WINDOW_S
from gigaudit_server.storage import settlement
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.storage.catalog import Catalog
from gigaudit_server.worker.architectures import architecture_details
from gigaudit_server.worker.health import HealthServer
from gigaudit_server.worker.loop import STALL_TIMEOUT_S, Worker
from gigaudit_server.worker.models import ModelCache
from gigaudit_server.worker.tasks import Tasks


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gigaudit_server worker", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default: cpu)")
    parser.add_argument("--redis-url", required=True, help="e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--store", required=True, help="artifact store URL, e.g. file:///var/lib/gigaudit")
    parser.add_argument("--name", default=None, help="worker name (default: host-pid-random)")
    parser.add_argument("--models", type=int, default=4, help="models kept resident (LRU, default 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per gig batch (default 32)")
    parser.add_argument("--dataset-uri-allowlist", action="append", default=None, metavar="PREFIX",
                        help="URI prefix datasets registered by URI are read from in place, repeatable (default: "
                             "env GIGAUDIT_DATASET_URI_ALLOWLIST, a JSON list or comma-separated prefixes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--redis-retry-s", type=float, default=DEFAULT_WINDOW_S,
                        help=f"how long a Redis outage is ridden out before a running job is given up "
                             f"(default {DEFAULT_WINDOW_S:g})")
    parser.add_argument("--checkpoint-s", type=float, default=CHECKPOINT_S,
                        help=f"seconds between checkpoints of long jobs, 0 = every batch (default {CHECKPOINT_S:g})")
    parser.add_argument("--stall-timeout-s", type=float, default=STALL_TIMEOUT_S,
                        help=f"fail and dead-letter a job without progress for this long, 0 = never "
                             f"(default {STALL_TIMEOUT_S:g})")
    parser.add_argument("--heartbeat-s", type=float, default=10.0,
                        help="heartbeat TTL: a dead worker's jobs are reclaimed about this long after it died "
                             "(default 10)")
    parser.add_argument("--max-attempts", type=int, default=3, help="failed deliveries before a job is dead (3)")
    parser.add_argument("--finished-ttl-s", type=float, default=FINISHED_TTL_S,
                        help=f"how long finished jobs are kept, 0 = for ever (default {FINISHED_TTL_S:g}: 7 days)")
    parser.add_argument("--dead-letter-ttl-s", type=float, default=DEAD_LETTER_TTL_S,
                        help=f"how long dead letters (and their jobs) are kept, 0 = for ever "
                             f"(default {DEAD_LETTER_TTL_S:g}: 30 days)")
    parser.add_argument("--log-level", default="INFO")
    logs.add_format_flag(parser)
    parser.add_argument("--tracing", default=os.environ.get("GIGAUDIT_TRACING", "off"), choices=tracing.MODES,
                        help="OpenTelemetry spans per job, continuing the API request's trace: off, console or otlp "
                             "(default: off; env GIGAUDIT_TRACING)")
    parser.add_argument("--otlp-endpoint", default=os.environ.get("GIGAUDIT_OTLP_ENDPOINT"),
                        help="OTLP/gRPC collector for --tracing otlp, e.g. http://otel-collector:4317 (default: "
                             "OTEL_EXPORTER_OTLP_ENDPOINT or localhost:4317; env GIGAUDIT_OTLP_ENDPOINT)")
    parser.add_argument("--health-port", type=int, default=None,
                        help="serve /livez and /readyz over HTTP on this port (default: not served)")
    parser.add_argument("--health-host", default="0.0.0.0", help="address of the health port (default 0.0.0.0)")
    parser.add_argument("--metrics-port", type=int, default=os.environ.get("GIGAUDIT_METRICS_PORT") or "0",
                        help="serve Prometheus metrics over HTTP on this port, 0 = off (default: "
                             "$GIGAUDIT_METRICS_PORT, else 0)")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address of the metrics port (default 0.0.0.0)")
    args = parser.parse_args(argv)
    try:
        args.device = check_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    for name in ("redis_retry_s", "checkpoint_s", "stall_timeout_s", "finished_ttl_s", "dead_letter_ttl_s"):
        if not math.isfinite(getattr(args, name)) or getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be a number of seconds >= 0")
    if not math.isfinite(args.heartbeat_s) or args.heartbeat_s <= 0:
        parser.error("--heartbeat-s must be a number of seconds > 0")
    if args.max_attempts < 1:
        parser.error("--max-attempts must be >= 1")
    if args.health_port is not None and not 1 <= args.health_port <= 65535:
        parser.error("--health-port must be a port number (1-65535)")
    if not 0 <= args.metrics_port <= 65535:
        parser.error("--metrics-port must be a port number (1-65535), or 0 for no metrics")
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
    models = ModelCache(store, capacity=args.models)
    tasks = Tasks(store, args.device, models, batch_size=args.batch_size, allowlist=args.dataset_uri_allowlist)
    metrics = WorkerMetrics(new_registry(), device=args.device, models=models) if args.metrics_port else None
    # a socket timeout, so that a Redis that hangs (rather than refusing connections) is retried like one that is down
    client = redis.Redis.from_url(args.redis_url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5,
                                  health_check_interval=15)
    queue = JobQueue(client, max_attempts=args.max_attempts, heartbeat_ttl=args.heartbeat_s,
                     finished_ttl=args.finished_ttl_s, dead_letter_ttl=args.dead_letter_ttl_s)
    catalog = Catalog(queue.redis)
    catalog.publish_architectures(architecture_details())  # for the torch-free API's checks and listing
    plane = SimpleNamespace(catalog=catalog, queue=queue, store=store)  # what settling a finished job reads
    return Worker(queue, tasks.handlers(), tasks.reducers(), name=args.name, redis_retry_s=args.redis_retry_s,
                  checkpoint_s=args.checkpoint_s, stall_timeout_s=args.stall_timeout_s or None,
                  on_finished=lambda job: settlement.settle_job(plane, job), device=args.device, metrics=metrics)


def serve(worker: Worker, args: argparse.Namespace) -> None:
    """Run ``worker`` until SIGTERM / SIGINT, answering the probes on ``--health-port`` (when given) meanwhile."""
    health = None
    if args.health_port is not None:
        health = HealthServer(worker, architecture_details(), args.health_host, args.health_port).start()
        logging.getLogger(__name__).info("worker %s: /livez and /readyz on %s:%d", worker.name, args.health_host,
                                         health.port)
    metrics = None
    if worker.metrics is not None:
        metrics = MetricsServer(worker.metrics.registry, args.metrics_host, args.metrics_port).start()
        logging.getLogger(__name__).info("worker %s: Prometheus metrics on %s:%d", worker.name, args.metrics_host,
                                         metrics.port)
    try:
        worker.run()  # returns after SIGTERM / SIGINT
    finally:
        if metrics is not None:
            metrics.stop()
        if health is not None:
            health.stop()


def main(argv=None) -> None:
    args = parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    tracing.setup(args.tracing, endpoint=args.otlp_endpoint, service_name="gigaudit-worker")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.set_device(args.device)
    worker = build_worker(args)
    logging.getLogger(__name__).info("worker %s on %s, store %s", worker.name, args.device, args.store)
    serve(worker, args)
    tracing.shutdown()  # export the spans still batched


if __name__ == "__main__":
    main()
