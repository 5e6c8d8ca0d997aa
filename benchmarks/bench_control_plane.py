"""Control-plane latency: p50/p99 of GetOperation and of a no-op submit (SubmitProbe) under concurrent clients.

    python benchmarks/bench_control_plane.py [--redis-url redis://127.0.0.1:6379/0] [--clients 32] [--requests 50]

Runs `python -m gigaudit_server serve --redis-url …` in its own process (torch-free, as deployed) and drives it
from ``--clients`` threads, each with its own channel, over loopback. Keys live under a fresh prefix that is
deleted afterwards. Prints one JSON object (latencies in milliseconds).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import redis
from google.longrunning import operations_proto_pb2 as lro_pb
from google.longrunning import operations_pb2_grpc as lro_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "client"), str(ROOT / "service")]

from gigaudit.v1 import probe_service_pb2 as probe_pb  # noqa: E402
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies: list[float], seconds: float) -> dict:
    ms = [1000 * x for x in latencies]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), 3), "p99_ms": round(percentile(ms, 0.99), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "max_ms": round(max(ms), 3),
            "throughput_per_s": round(len(ms) / seconds, 1)}


def drive(port: int, clients: int, requests: int, call) -> dict:
    """``requests`` calls per client from ``clients`` threads started together; latencies of every call."""
    latencies: list[float] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def client(index: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            mine = []
            start.wait()
            for i in range(requests):
                began = time.perf_counter()
                call(channel, index, i)
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return summary(latencies, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=50, help="per client and measurement")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    prefix = f"gigaudit-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "GIGAUDIT_KEY_PREFIX": prefix,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client")])}
    server = subprocess.Popen([sys.executable, "-m", "gigaudit_server", "serve", "--redis-url", args.redis_url,
                               "--port", "0", "--store", f"file:///tmp/{prefix}", "--log-level", "WARNING",
                               "--max-workers", str(max(args.clients, 8))],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            names = [probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest()).name
                     for _ in range(args.clients)]

        def submit(channel, index, i):
            probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest())

        def get(channel, index, i):
            lro_grpc.OperationsStub(channel).GetOperation(lro_pb.GetOperationRequest(name=names[index]))

        results = {
            "benchmark": "control_plane", "clients": args.clients, "requests_per_client": args.requests,
            "transport": "gRPC over loopback, server in its own process, no worker (jobs stay queued)",
            "redis": args.redis_url.split("@")[-1], "cpus": os.cpu_count(), "python": platform.python_version(),
            "get_operation": drive(port, args.clients, args.requests, get),
            "submit_noop": drive(port, args.clients, args.requests, submit),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        client = redis.Redis.from_url(args.redis_url)
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(stale), 500):
            client.delete(*stale[start:start + 500])
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
