"""The worker loop: claim a job, run its handler in-process, settle the job.

A background thread refreshes the worker's heartbeat key for as long as the worker claims or runs jobs, so a long
job is never taken away from a live worker; a dead worker's jobs are reclaimed once its key expires. The same thread
watches the running handler: one that reports no progress for ``stall_timeout_s`` is failed and dead-lettered, and
its attempt is fenced off. Redis outages are ridden out (``redis_retry_s``, see ``queue.retry``): the handler goes
on computing while its reports wait. SIGTERM or SIGINT (or the stop event) stops the loop: a running job is handed
back to the queue at its next batch, not failed. ``on_finished(job)`` is called after this worker brought a
top-level job to a final state.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, Mapping

import redis as redis_lib

from gigaudit_server.queue.jobs import (
    CHECKPOINT_S,
    Handler,
    Job,
    JobCancelled,
    JobContext,
    JobInterrupted,
    JobLost,
    JobQueue,
    Reducer,
)
from gigaudit_server.observability import logs, tracing
from gigaudit_server.observability.metrics import WorkerMetrics, read_history
from gigaudit_server.queue.retry import DEFAULT_WINDOW_S, RedisRetry, RedisUnavailable
from gigaudit_server.worker.failures import classify

log = logging.getLogger(__name__)
STALL_TIMEOUT_S = 1800.0


class Worker:
    def __init__(self, queue: JobQueue, handlers: Mapping[str, Handler], reducers: Mapping[str, Reducer] | None = None,
                 *, name: str | None = None, poll_interval: float = 1.0, redis_retry_s: float = DEFAULT_WINDOW_S,
                 stall_timeout_s: float | None = STALL_TIMEOUT_S, checkpoint_s: float = CHECKPOINT_S,
                 on_finished: Callable[[Job], None] | None = None, device: str = "cpu",
                 metrics: WorkerMetrics | None = None):
        """``redis_retry_s``: how long an outage may last before the running attempt is given up;
        ``stall_timeout_s``: seconds without progress after which a job is failed as hung (None: never);
        ``checkpoint_s``: how often long handlers checkpoint (0: after every batch); ``device``: where its
        handlers compute (``cpu``, ``cuda:0``), published with the heartbeat for ``gigaudit status``."""
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        if stall_timeout_s is not None and stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0 seconds (or None), got {stall_timeout_s}")
        if checkpoint_s < 0:
            raise ValueError(f"checkpoint_s must be >= 0 seconds, got {checkpoint_s}")
        self.queue = queue
        self.handlers = dict(handlers)
        self.reducers = dict(reducers or {})
        # unique per process start, so a restarted worker never vouches for the deliveries of its predecessor
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.retry = RedisRetry(redis_retry_s)
        self.stall_timeout_s = stall_timeout_s
        self.checkpoint_s = checkpoint_s
        self.on_finished = on_finished
        self.metrics = metrics  # attempts, durations, reclaims, dead letters (observability.metrics)
        self.stop_event = threading.Event()
        self._beating = 0
        self._heartbeat_thread: threading.Thread | None = None  # watched by the probes (health)
        self._running: JobContext | None = None
        self.device = device
        self._job_started = 0.0

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Run jobs until ``stop_event`` (or SIGTERM / SIGINT, when called from the main thread) is set."""
        if stop_event is not None:
            self.stop_event = stop_event
        with self._signals_request_stop(), self._heartbeat():
            while not self.stop_event.is_set():
                try:
                    self.run_one(block_ms=int(self.poll_interval * 1000))
                except (redis_lib.RedisError, RedisUnavailable) as e:  # keep serving: the jobs are safe in Redis
                    log.warning("worker %s: Redis error (%s); retrying", self.name, e)
                    self.stop_event.wait(self.poll_interval)
        try:
            self.queue.retire(self.name)
        except redis_lib.RedisError as e:
            log.warning("worker %s: could not retire (%s); its heartbeat expires by itself", self.name, e)

    def run_one(self, block_ms: int = 1000) -> bool:
        """Claim one job (a dead worker's first, else a new one, waiting up to ``block_ms``) and run it.
        True when a job ran."""
        with self._heartbeat():
            finished: list[str] = []
            context = self.queue.reclaim(self.name, finished)
            reclaimed = context is not None
            context = context or self.queue.claim_next(self.name, block_ms, finished)
            for job_id in finished:
                self._notify(job_id)
            if context is None:
                return False
            context.attach(self.stop_event, self.retry, self.checkpoint_s)
            if self.metrics is not None:
                self.metrics.claimed(context.job, reclaimed=reclaimed)
            self._running, self._job_started = context, time.time()
            self._publish_status()
            try:
                with logs.bind(**logs.job_fields(context.job, self.name)):  # on every line this job logs
                    self._execute(context)
            finally:
                self._running = None
                self._publish_status()
            return True

    def _execute(self, context: JobContext) -> None:
        job = context.job
        log.info("worker %s: job %s (%s) attempt %d%s", self.name, job.id, job.kind, job.attempt,
                 " from its checkpoint" if job.checkpoint else "")
        try:
            if self.stop_event.is_set():
                raise JobInterrupted("worker stopping")
            with tracing.job_span(job, self.name):  # continues the submitting request's trace
                result = self._call(context)
        except JobCancelled:
            self._finish(job, "cancelled")
        except JobInterrupted:
            self._finish(job, "handback")
        except JobLost as e:
            log.warning("worker %s: job %s dropped (%s)", self.name, job.id, e)
            self._observe(job, "lost")
        except RedisUnavailable as e:
            log.error("worker %s: job %s given up (%s); it will be reclaimed", self.name, job.id, e)
            self._observe(job, "unsettled")
        except Exception as e:  # noqa: BLE001 - a handler's failure is the job's, not the worker's
            outcome, error = classify(e)
            if outcome == "retry":
                log.exception("worker %s: job %s failed; it may be retried", self.name, job.id)
            else:
                log.warning("worker %s: job %s: %s (%s)", self.name, job.id, error["code"], error["message"])
            self._finish(job, outcome, error)
        else:
            self._finish(job, "succeeded", result)

    def _finish(self, job: Job, outcome: str, payload: dict | None = None) -> None:
        """Settle, riding out a Redis outage (the heartbeat keeps the job ours meanwhile) for the retry window."""
        try:
            status, finished = self.retry.call(f"job {job.id} settle",
                                               lambda: self.queue.settle_outcome(job, outcome, payload))
        except RedisUnavailable as e:
            log.error("worker %s: job %s not settled (%s); it will be reclaimed", self.name, job.id, e)
            self._observe(job, "unsettled")
            return
        if status == "stale":
            log.warning("worker %s: job %s attempt %d was taken over; its %s was dropped", self.name, job.id,
                        job.attempt, outcome)
        self._observe(job, "lost" if status == "stale" else outcome,
                      dead_lettered=status == "FAILED" and outcome in ("retry", "dead"))
        if finished:
            self._notify(finished)

    def _observe(self, job: Job, outcome: str, *, dead_lettered: bool = False) -> None:
        """Report the ended attempt to ``metrics``, with the job's stage history (read once; not while Redis is
        out of reach)."""
        if self.metrics is None:
            return
        history = []
        if outcome != "unsettled":
            try:
                history = read_history(self.queue.redis, job.id)
            except redis_lib.RedisError as e:
                log.debug("worker %s: no stage history for job %s: %s", self.name, job.id, e)
        self.metrics.ended(job, outcome, dead_lettered=dead_lettered, history=history, worker=self.name)

    def _notify(self, job_id: str) -> None:
        """``on_finished(job)``, best effort."""
        if self.on_finished is None:
            return
        try:
            self.on_finished(self.retry.call(f"job {job_id} read", lambda: self.queue.get(job_id)))
        except (Exception, RedisUnavailable):  # noqa: BLE001 - the job is settled; its listener's errors are its own
            log.exception("worker %s: on_finished failed for job %s", self.name, job_id)

    def _call(self, context: JobContext) -> dict:
        job = context.job
        if job.is_parent:
            reducer = self.reducers.get(job.reduce_kind)
            if reducer is None:
                raise _unknown("reducer", job.reduce_kind, self.reducers)
            shards = self.retry.call(f"job {job.id} shards", lambda: self.queue.shards(job))
            return _checked(reducer(job, [shard.result for shard in shards]))
        handler = self.handlers.get(job.kind)
        if handler is None:
            raise _unknown("handler", job.kind, self.handlers)
        return _checked(handler(context))

    def status(self) -> dict[str, str]:
        """What the heartbeat publishes (``keys.worker_info``): the device, the job it runs (empty: idle), since."""
        context = self._running
        return {"device": self.device, "operation": context.job.id if context else "",
                "started": repr(self._job_started) if context else ""}

    def _publish_status(self) -> None:
        """Beat now with the current status (a job claimed or ended), best effort: the next beat repeats it."""
        try:
            self.queue.beat(self.name, self.status())
        except redis_lib.RedisError as e:
            log.debug("worker %s: status not published yet: %s", self.name, e)

    def health(self) -> dict:
        """For the probes (``worker.health``): whether the heartbeat thread runs, and the running job (None when
        idle) with the seconds since its handler last reported progress."""
        thread, context = self._heartbeat_thread, self._running
        return {"heartbeat": thread is not None and thread.is_alive(), "job": context.job.id if context else None,
                "idle_s": time.monotonic() - context.last_progress if context else None}

    def _check_stall(self) -> None:
        """Fail the running job as hung when its handler reported no progress for ``stall_timeout_s``."""
        context = self._running
        if context is None or self.stall_timeout_s is None or context.lost:
            return
        idle = time.monotonic() - context.last_progress
        if idle < self.stall_timeout_s:
            return
        error = {"code": "DEADLINE_EXCEEDED", "message": f"the job reported no progress for {idle:.0f} s (the "
                 f"stall timeout is {self.stall_timeout_s:g} s): it was failed as hung and dead-lettered"}
        status, finished = self.queue.settle_outcome(context.job, "dead", error)  # a Redis error: next beat
        context.mark_lost("failed as hung")
        if self.metrics is not None and status == "FAILED":
            self.metrics.dead_lettered(context.job)
        log.error("worker %s: job %s hung (no progress for %.0f s): %s; this worker takes no other job until the "
                  "handler returns", self.name, context.job.id, idle, status)
        if finished:
            self._notify(finished)

    @contextlib.contextmanager
    def _heartbeat(self) -> Iterator[None]:
        """Keep this worker's heartbeat key alive, and watch for a hung handler, while inside (re-entrant)."""
        self._beating += 1
        if self._beating > 1:
            try:
                yield
            finally:
                self._beating -= 1
            return
        done = threading.Event()
        try:
            self.queue.beat(self.name, self.status())
        except redis_lib.RedisError as e:
            log.warning("worker %s: heartbeat failed: %s", self.name, e)
        ttl = self.queue.heartbeat_ttl

        def beat() -> None:
            # during an outage, beat again soon: reclaimers wait only reclaim_grace for a live worker to show up
            interval = ttl / 3
            while not done.wait(interval):
                try:
                    self.queue.beat(self.name, self.status())
                    interval = ttl / 3
                except redis_lib.RedisError as e:
                    if interval == ttl / 3:
                        log.warning("worker %s: heartbeat failed: %s", self.name, e)
                    interval = ttl / 10
                try:
                    self._check_stall()
                except redis_lib.RedisError as e:
                    log.warning("worker %s: cannot fail a hung job yet: %s", self.name, e)

        thread = threading.Thread(target=beat, name=f"heartbeat-{self.name}", daemon=True)
        thread.start()
        self._heartbeat_thread = thread
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
