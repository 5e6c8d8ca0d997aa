"""A gig worker in its own process, for the tests that kill it or its Redis mid-graph:
``python gig_worker_process.py REDIS_URL STORE_URL NAME TTL BATCH_LOG DELAY``.

Real handlers (``Tasks``, batches of 4 images) that checkpoint after every batch; each ``gig.build_graph`` call (one
batch) appends its first image index to ``BATCH_LOG`` and then sleeps ``DELAY`` seconds, so a test can count the
batches computed and has time to strike. Keys live under the inherited ``GIGAUDIT_KEY_PREFIX``.
"""
from __future__ import annotations

import logging
import sys
import time

import redis

import gig
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.loop import Worker
from gigaudit_server.worker.tasks import Tasks

BATCH = 4


def logged_build_graph(log_path: str, delay: float):
    real = gig.build_graph

    def build_graph(*args, start_index=0, **kwargs):
        graph = real(*args, start_index=start_index, **kwargs)
        with open(log_path, "a") as log:
            log.write(f"{start_index}\n")
        time.sleep(delay)
        return graph

    return build_graph


def main(url: str, store: str, name: str, ttl: float, log_path: str, delay: float) -> None:
    logging.basicConfig(level=logging.INFO)
    gig.build_graph = logged_build_graph(log_path, delay)
    tasks = Tasks(ArtifactStore(store), "cpu", batch_size=BATCH)
    queue = JobQueue(redis.Redis.from_url(url, decode_responses=True), heartbeat_ttl=ttl)
    Worker(queue, tasks.handlers(), tasks.reducers(), name=name, poll_interval=0.2, checkpoint_s=0).run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], float(sys.argv[6]))
