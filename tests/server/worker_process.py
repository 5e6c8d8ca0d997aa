"""A worker in its own process, for the tests that kill one: ``python worker_process.py REDIS_URL NAME TTL``.

Its handlers are the deterministic ones of ``handlers`` below, so a job gives the same result on any worker.
Keys live under ``GIGAUDIT_KEY_PREFIX`` (set by the ``redis_client`` fixture and inherited from the test).
"""
from __future__ import annotations

import sys
import time

import redis

from gigaudit_server.queue.jobs import Job, JobContext, JobQueue
from gigaudit_server.worker.loop import Worker


def count(ctx: JobContext) -> dict:
    """Sum the numbers ``i`` in ``range(n)`` that belong to this shard, one batch of ``delay`` seconds each."""
    n, delay = ctx.job.params["n"], ctx.job.params.get("delay", 0.0)
    mine = range(ctx.shard_index, n, ctx.shard_count)
    total = 0
    for done, i in enumerate(mine, 1):
        time.sleep(delay)
        total += i
        ctx.progress("count", done, len(mine))
    return {"sum": total, "count": len(mine)}


def add(parent: Job, results: list[dict]) -> dict:
    """Add the shards' sums; slowly on the first attempt when the job asks for it (a test kills that worker)."""
    if parent.attempt == 1:
        time.sleep(parent.params.get("reduce_delay", 0.0))
    return {"sum": sum(r["sum"] for r in results), "count": sum(r["count"] for r in results)}


handlers = {"count": count}
reducers = {"add": add}


def main(url: str, name: str, ttl: float) -> None:
    queue = JobQueue(redis.Redis.from_url(url, decode_responses=True), heartbeat_ttl=ttl)
    Worker(queue, handlers, reducers, name=name, poll_interval=0.2).run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
