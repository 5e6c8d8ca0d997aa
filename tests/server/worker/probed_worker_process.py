"""The real worker entry point (``worker.main``: its flags, ``build_worker`` and ``serve``, health port included)
with two extra job kinds: ``python probed_worker_process.py WORKER_FLAGS...``.

``test.hang`` sleeps ``params["seconds"]`` without reporting progress (a hung handler); ``test.steady`` reports
progress every 0.1 s for ``params["seconds"]``. Keys live under the inherited ``GIGAUDIT_KEY_PREFIX``.
"""
from __future__ import annotations

import logging
import sys
import time

from gigaudit_server.queue.jobs import JobContext
from gigaudit_server.worker import main as worker_main


def hang(ctx: JobContext) -> dict:
    time.sleep(ctx.job.params["seconds"])
    return {}


def steady(ctx: JobContext) -> dict:
    steps = int(ctx.job.params["seconds"] / 0.1)
    for done in range(1, steps + 1):
        time.sleep(0.1)
        ctx.progress("steady", done, steps)
    return {"steps": steps}


if __name__ == "__main__":
    args = worker_main.parse_args(sys.argv[1:])
    logging.basicConfig(level=args.log_level)
    worker = worker_main.build_worker(args)
    worker.handlers.update({"test.hang": hang, "test.steady": steady})
    worker_main.serve(worker, args)
