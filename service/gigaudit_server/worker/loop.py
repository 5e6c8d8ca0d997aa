"""The worker loop: claim a job, run its handler in-process, settle the job.

A background thread refreshes the worker's heartbeat key for as long as the worker claims or runs jobs, so a long
job is never taken away from a live worker; a dead worker's jobs are reclaimed once its key expires. SIGTERM or
SIGINT (or the stop event) stops the loop: a running job is handed back to the queue at its next batch, not failed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import json
import signal
import socket
import threading
import traceback
import uuid
from typing import Iterator, Mapping

import redis as redis_lib

from gigaudit_server.queue.jobs import Handler, Job, JobCancelled, JobContext, JobInterrupted, JobLost, JobQueue, Reducer

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, queue: JobQueue, handlers: Mapping[str, Handler], reducers: Mapping[str, Reducer] | None = None,
                 *, name: str | None = None, poll_interval: float = 1.0):
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        self.queue = queue
        self.handlers = dict(handlers)
        self.reducers = dict(reducers or {})
        # unique per process start, so a restarted worker never vouches for the deliveries of its predecessor
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.stop_event = threading.Event()
        self._beating = 0

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Run jobs until ``stop_event`` (or SIGTERM / SIGINT, when called from the main thread) is set."""
        if stop_event is not None:
            self.stop_event = stop_event
        with self._signals_request_stop(), self._heartbeat():
            while not self.stop_event.is_set():
                try:
                    self.run_one(block_ms=int(self.poll_interval * 1000))
                except redis_lib.RedisError:  # keep serving: Redis may come back, the jobs are safe in it
                    log.exception("worker %s: Redis error; retrying", self.name)
                    self.stop_event.wait(self.poll_interval)
        self.queue.retire(self.name)

    def run_one(self, block_ms: int = 1000) -> bool:
        """Claim one job (a dead worker's first, else a new one, waiting up to ``block_ms``) and run it.
        True when a job ran."""
        with self._heartbeat():
            context = self.queue.reclaim(self.name) or self.queue.claim_next(self.name, block_ms)
            if context is None:
                return False
            context._stop = self.stop_event
            self._execute(context)
            return True

    def _execute(self, context: JobContext) -> None:
        job = context.job
        log.info("worker %s: job %s (%s) attempt %d", self.name, job.id, job.kind, job.attempt)
        try:
            if self.stop_event.is_set():
                raise JobInterrupted("worker stopping")
            result = self._call(context)
        except JobCancelled:
            self._settle(job, "cancelled")
        except JobInterrupted:
            self._settle(job, "handback")
        except JobLost:
            log.warning("worker %s: job %s attempt %d was taken over; dropped", self.name, job.id, job.attempt)
        except ValueError as e:
            self._settle(job, "failed", {"code": "INVALID_ARGUMENT", "message": str(e)})
        except Exception as e:  # noqa: BLE001 - a handler's failure is the job's, not the worker's
            log.exception("worker %s: job %s failed", self.name, job.id)
            self._settle(job, "retry", {"code": "INTERNAL", "message": f"{type(e).__name__}: {e}",
                                        "traceback": traceback.format_exc(limit=20)})
        else:
            if self._settle(job, "succeeded", result) == "stale":
                log.warning("worker %s: job %s attempt %d was taken over; result dropped", self.name, job.id,
                            job.attempt)

    def _settle(self, job: Job, outcome: str, payload: dict | None = None) -> str:
        """Settle, waiting out a Redis outage (the heartbeat keeps the job ours meanwhile) unless stopping."""
        while True:
            try:
                return self.queue.settle(job, outcome, payload)
            except (redis_lib.ConnectionError, redis_lib.TimeoutError) as e:
                if self.stop_event.is_set():
                    raise
                log.warning("worker %s: cannot settle job %s yet (%s); retrying", self.name, job.id, e)
                self.stop_event.wait(self.poll_interval)

    def _call(self, context: JobContext) -> dict:
        job = context.job
        if job.is_parent:
            reducer = self.reducers.get(job.reduce_kind)
            if reducer is None:
                raise _unknown("reducer", job.reduce_kind, self.reducers)
            return _checked(reducer(job, [shard.result for shard in self.queue.shards(job)]))
        handler = self.handlers.get(job.kind)
        if handler is None:
            raise _unknown("handler", job.kind, self.handlers)
        return _checked(handler(context))

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Keep this worker's heartbeat key alive while inside (re-entrant)."""
        self._beating += 1
        if self._beating > 1:
            try:
                yield
            finally:
                self._beating -= 1
            return
        done = threading.Event()
        self.queue.beat(self.name)

        def beat() -> None:
            while not done.wait(self.queue.heartbeat_ttl / 3):
                try:
                    self.queue.beat(self.name)
                except redis_lib.RedisError as e:
                    log.warning("worker %s: heartbeat failed: %s", self.name, e)

        thread = threading.Thread(target=beat, name=f"heartbeat-{self.name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self._beating -= 1

    @contextlib.contextmanager
    def _signals_request_stop(self) -> Iterator[None]:
        """While inside, SIGTERM and SIGINT set the stop event (only possible from the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, lambda *_: self.stop_event.set()) for sig in (signal.SIGTERM,
                                                                                         signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _unknown(what: str, name: str, known: Mapping) -> ValueError:
    return ValueError(f"this worker has no {what} {name!r}; it knows {sorted(known)}")


def _checked(result: dict) -> dict:
    if not isinstance(result, dict):
        raise TypeError(f"a handler must return a dict, got {type(result).__name__}")
    json.dumps(result)  # TypeError now, while the job can still fail properly
    return result
