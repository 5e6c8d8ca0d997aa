"""The job queue: jobs as Redis hashes, deliveries through a Redis stream read by a consumer group.

Delivery is at least once; what makes it safe is the job's ``attempt`` counter, incremented on every claim and
checked by every write a worker makes (see ``job_scripts``). A worker that dies stops refreshing its heartbeat key;
only once it has been missing for ``reclaim_grace`` may another worker reclaim its stream entries — never because a
job merely runs long, nor because a Redis outage outlasted every heartbeat. A job that fails ``max_attempts`` times
(or whose handler hangs) ends FAILED and is copied to the dead-letter stream, from where an operator can list it
and queue it again (``list_dead_letters``, ``retry_dead_letter``).

A long handler checkpoints its partial results (``JobContext.save_checkpoint``: a small JSON reference to an
artifact, recorded in the job hash under the attempt fence); a job that is reclaimed, retried or handed back starts
with its last checkpoint (``JobContext.checkpoint``). Finished jobs expire after ``finished_ttl`` seconds,
dead-lettered ones and their dead letters after ``dead_letter_ttl``.

A sharded job is a parent plus N shard jobs that any worker may take; the worker that settles the last shard queues
the parent itself for the reduction, which runs like any other job (fenced, retried when its worker dies).

All state lives in Redis: a restarted API server or worker loses nothing.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterator

import redis as redis_lib

from gigaudit_server import keys
from gigaudit_server.queue import scripts as job_scripts
from gigaudit_server.queue.retry import TRANSIENT, Outage, RedisRetry, RedisUnavailable

log = logging.getLogger(__name__)
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_PAGE_SIZE = 1000
_DAY = 24 * 3600.0
FINISHED_TTL_S = 7 * _DAY
DEAD_LETTER_TTL_S = 30 * _DAY
CHECKPOINT_S = 30.0
QUEUE_POSITION_CAP = 1000  # queue positions are counted up to this many stream entries ahead
STATUS_SCAN_CAP = 20_000  # queue status counts the jobs of at most this many stream entries
WORKER_FORGET_S = 3600.0  # a worker that has not beaten for this long (or 10 heartbeat TTLs) leaves keys.workers


class JobState(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobExistsError(ValueError):
    """A job with the requested id exists already."""


class JobAborted(BaseException):
    """Raised inside a handler to stop it between batches. A ``BaseException`` (like ``asyncio.CancelledError``),
    so that a handler's ``except Exception`` does not swallow it."""


class JobCancelled(JobAborted):
    """The job was cancelled; it ends CANCELLED."""


class JobInterrupted(JobAborted):
    """The worker is stopping; the job is handed back to the queue."""


class JobLost(JobAborted):
    """The worker's attempt is stale (another worker claimed the job): its writes are refused."""


class JobFailed(Exception):
    """An error that a retry cannot fix (a missing artifact, a store that refuses writes): the job fails at once
    with ``code`` (a ``google.rpc.Code`` name) and ``message`` (which must name no server path)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Job:
    id: str
    kind: str
    params: dict
    state: JobState = JobState.QUEUED
    request_id: str | None = None
    stage: str = ""
    done: int = 0
    total: int | None = None
    worker: str | None = None
    attempt: int = 0
    error: dict | None = None
    result: dict | None = None
    created: float = 0.0
    updated: float = 0.0
    cancel_requested: bool = False
    parent: str | None = None
    shards: int = 1
    shard_index: int = 0
    reduce_kind: str | None = None
    failures: int = 0
    owner: str = ""
    checkpoint: dict | None = None
    history: list[dict] = field(default_factory=list)  # stage events, oldest first (queue.scripts)
    trace: str | None = None  # W3C traceparent of the request that submitted it (observability.tracing)

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def is_parent(self) -> bool:
        """A sharded job's parent: its own run is the reduction of its shards' results."""
        return self.reduce_kind is not None

    def to_hash(self) -> dict[str, str]:
        return {
            "id": self.id, "kind": self.kind, "params": json.dumps(self.params), "state": self.state.value,
            "request_id": self.request_id or "", "stage": self.stage, "done": str(self.done),
            "total": "" if self.total is None else str(self.total), "worker": self.worker or "",
            "attempt": str(self.attempt), "error": _dump(self.error), "result": _dump(self.result),
            "created": repr(self.created), "updated": repr(self.updated),
            "cancel_requested": "1" if self.cancel_requested else "0", "parent": self.parent or "",
            "shards": str(self.shards), "shard_index": str(self.shard_index), "reduce_kind": self.reduce_kind or "",
            "failures": str(self.failures), "owner": self.owner, "checkpoint": _dump(self.checkpoint),
            "trace": self.trace or "",
        }

    @classmethod
    def from_hash(cls, fields: dict) -> Job:
        f = {_text(k): _text(v) for k, v in fields.items()}
        return cls(
            id=f["id"], kind=f["kind"], params=json.loads(f["params"]), state=JobState(f["state"]),
            request_id=f["request_id"] or None, stage=f["stage"], done=int(f["done"]),
            total=int(f["total"]) if f["total"] else None, worker=f["worker"] or None, attempt=int(f["attempt"]),
            error=_load(f["error"]), result=_load(f["result"]), created=float(f["created"]),
            updated=float(f["updated"]), cancel_requested=f["cancel_requested"] == "1", parent=f["parent"] or None,
            shards=int(f["shards"]), shard_index=int(f["shard_index"]), reduce_kind=f["reduce_kind"] or None,
            failures=int(f["failures"]), owner=f.get("owner", ""), checkpoint=_load(f.get("checkpoint", "")),
            history=_history(f.get("history", "")), trace=f.get("trace") or None,
        )


@dataclass
class DeadLetter:
    """A job that failed for good: the job a client knows (a shard's parent), and why."""
    job_id: str
    kind: str
    error: dict
    attempts: int
    failures: int
    worker: str
    owner: str
    dead_time: float
    shard: int | None = None
    entry_id: str = ""

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict) -> DeadLetter:
        f = {_text(k): _text(v) for k, v in fields.items()}
        try:
            error = json.loads(f.get("error") or "{}")
        except ValueError:
            error = {"code": "INTERNAL", "message": f.get("error", "")}
        return cls(job_id=f.get("job", ""), kind=f.get("kind", ""), error=error, attempts=int(f.get("attempt") or 0),
                   failures=int(f.get("failures") or 0), worker=f.get("worker", ""), owner=f.get("owner", ""),
                   dead_time=int(entry_id.split("-")[0]) / 1000, shard=int(f["shard"]) if f.get("shard") else None,
                   entry_id=entry_id)


@dataclass
class QueueCounts:
    """The queue at a glance (``JobQueue.queue_status``). ``queued`` / ``running``: top-level jobs in that state
    (shards count as their parent; internal jobs such as layer listings count too); ``lag``: stream entries not yet
    delivered to any worker; ``pending``: delivered but not yet acknowledged; ``dead_letters``: kept."""
    queued: int
    running: int
    lag: int
    pending: int
    dead_letters: int


@dataclass
class WorkerState:
    """One worker as the status view shows it (``JobQueue.worker_states``). ``job_id``: the top-level job it runs
    (empty when idle); ``stage``, ``done``, ``total``: the progress of its own part of it (a shard's).
    ``heartbeat_time``: its last beat (None for a dead worker that never beat, e.g. of an older release)."""
    name: str
    device: str = ""
    alive: bool = False
    heartbeat_time: float | None = None
    job_id: str = ""
    stage: str = ""
    done: int = 0
    total: int | None = None
    pending: int = 0


class JobQueue:
    """Submit, inspect, cancel and delete jobs; the worker side (claim, progress, settle) is used by ``Worker``."""

    def __init__(self, redis: redis_lib.Redis, *, max_attempts: int = 3, heartbeat_ttl: float = 10.0,
                 reclaim_grace: float | None = None, finished_ttl: float = FINISHED_TTL_S,
                 dead_letter_ttl: float = DEAD_LETTER_TTL_S):
        """``reclaim_grace``: how long a heartbeat must have been missing before its worker's jobs are reclaimed
        (default half the TTL: time for live workers to beat again after a Redis outage). ``finished_ttl`` /
        ``dead_letter_ttl``: seconds a finished / dead-lettered job (and its dead letter) is kept; 0 = for ever."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if heartbeat_ttl <= 0:
            raise ValueError(f"heartbeat_ttl must be > 0 seconds, got {heartbeat_ttl}")
        reclaim_grace = heartbeat_ttl / 2 if reclaim_grace is None else reclaim_grace
        for name, value in (("reclaim_grace", reclaim_grace), ("finished_ttl", finished_ttl),
                            ("dead_letter_ttl", dead_letter_ttl)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {value}")
        self.redis = redis
        self.max_attempts = max_attempts
        self.heartbeat_ttl = heartbeat_ttl
        self.reclaim_grace = reclaim_grace
        self.finished_ttl, self.dead_letter_ttl = finished_ttl, dead_letter_ttl
        self._claim = redis.register_script(job_scripts.CLAIM)
        self._progress = redis.register_script(job_scripts.PROGRESS)
        self._checkpoint = redis.register_script(job_scripts.CHECKPOINT)
        self._settle = redis.register_script(job_scripts.SETTLE)
        self._cancel = redis.register_script(job_scripts.CANCEL)
        self._retry = redis.register_script(job_scripts.RETRY)
        self.ensure_group()

    def ensure_group(self) -> None:
        """Create the stream and its consumer group when missing (deliveries start at the stream's beginning)."""
        try:
            self.redis.xgroup_create(keys.stream(), keys.consumer_group(), id="0", mkstream=True)
        except redis_lib.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    # --- client side --------------------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict, *, job_id: str | None = None, request_id: str | None = None,
               shards: int = 1, reduce_kind: str | None = None, owner: str = "", listed: bool = True,
               trace: str | None = None) -> Job:
        """Create a job and queue it; with ``reduce_kind``, a parent and ``shards`` shard jobs. ``request_id`` is
        recorded only: idempotency is the API's (``gigaudit_server.api.idempotency``). ``listed=False``: an
        internal job (e.g. ``list_layers``) that :meth:`list` does not show. ``trace``: the submitting request's
        W3C traceparent, which the worker's span continues (shards carry it too)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("kind must be a non-empty string")
        if not isinstance(params, dict):
            raise ValueError(f"params must be a dict, got {type(params).__name__}")
        if not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards must be an integer >= 1, got {shards!r}")
        if shards > 1 and reduce_kind is None:
            raise ValueError("a job with shards > 1 needs a reduce_kind to combine the shards' results")
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"job_id must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-', got {job_id!r}")
        try:
            json.dumps(params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"params must be JSON-serialisable: {e}") from None
        now = time.time()
        job = Job(id=job_id, kind=kind, params=params, request_id=request_id, created=now, updated=now,
                  shards=shards, reduce_kind=reduce_kind, owner=owner, trace=trace)
        parts = [job] if reduce_kind is None else [
            Job(id=_shard_id(job_id, i), kind=kind, params=params, created=now, updated=now, parent=job_id,
                shards=shards, shard_index=i, owner=owner, trace=trace) for i in range(shards)]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.job(job_id))
                    if pipe.exists(keys.job(job_id)):
                        raise JobExistsError(f"job {job_id!r} exists already")
                    pipe.multi()
                    pipe.hset(keys.job(job_id), mapping=job.to_hash())
                    if listed:
                        pipe.zadd(keys.job_index(), {job_id: now})
                    for part in parts:
                        if part is not job:
                            pipe.hset(keys.job(part.id), mapping=part.to_hash())
                        pipe.xadd(keys.stream(), {"job": part.id})
                    pipe.execute()
                    return job
                except redis_lib.WatchError:
                    continue

    def get(self, job_id: str) -> Job:
        """The job, with a parent's progress summed over its shards. KeyError when unknown."""
        fields = self.redis.hgetall(keys.job(job_id))
        if not fields:
            raise KeyError(f"no job {job_id!r}")
        job = Job.from_hash(fields)
        if job.is_parent:
            shards = self.shards(job)
            job.done = sum(s.done for s in shards)
            totals = [s.total for s in shards]
            job.total = None if None in totals else sum(totals)
            if job.stage != "reduce":
                job.stage = next((s.stage for s in shards if s.state is JobState.RUNNING and s.stage), job.stage)
            events = [event for s in shards for event in s.history] + job.history
            job.history = sorted(events, key=lambda event: event.get("time", 0.0))[-job_scripts.HISTORY_MAX:]
        return job

    def queue_position(self, job_id: str, cap: int = QUEUE_POSITION_CAP) -> int:
        """How many other QUEUED jobs come before ``job_id``'s next delivery in the stream (0: it is next).

        Reads the stream's undelivered entries in order, at most ``cap`` + 1 of them, and the states of the jobs
        they name (shards count as their parent): the cost is bounded by ``cap``, and so is the answer (``cap``
        means "at least ``cap``"). 0 when the job has no undelivered entry (it is being claimed, or runs)."""
        group = next((g for g in self.redis.xinfo_groups(keys.stream())
                      if _text(g["name"]) == keys.consumer_group()), None)
        last = _text(group["last-delivered-id"]) if group else "0-0"
        entries = self.redis.xrange(keys.stream(), min=f"({last}", max="+", count=cap + 1)
        ahead: dict[str, None] = {}
        for _, fields in entries:
            entry_job = _text(fields.get(b"job", fields.get("job"))).split(".shard")[0]
            if entry_job == job_id:
                break
            ahead.setdefault(entry_job)
        else:
            return cap if len(entries) > cap else 0
        ahead.pop(job_id, None)
        if not ahead:
            return 0
        with self.redis.pipeline(transaction=False) as pipe:
            for other in ahead:
                pipe.hget(keys.job(other), "state")
            states = pipe.execute()
        return min(cap, sum(_text(state) == JobState.QUEUED.value for state in states))

    def shards(self, parent: Job) -> list[Job]:
        """A parent's shard jobs, in shard order."""
        with self.redis.pipeline(transaction=False) as pipe:
            for i in range(parent.shards):
                pipe.hgetall(keys.job(_shard_id(parent.id, i)))
            return [Job.from_hash(fields) for fields in pipe.execute() if fields]

    def list(self, *, page_size: int = 50, page_token: str | None = None,
             filter_state: JobState | str | None = None, owner: str | None = None) -> tuple[list[Job], str | None]:
        """Jobs, newest first (shards are not listed), and the token of the next page (None on the last); with
        ``owner``, only that owner's."""
        if not isinstance(page_size, int) or not 0 <= page_size <= _MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be an integer in 0..{_MAX_PAGE_SIZE} (0 = 50), got {page_size!r}")
        page_size = page_size or 50
        if filter_state is not None:
            try:
                filter_state = JobState(filter_state)
            except ValueError:
                raise ValueError(f"filter_state must be one of {[s.value for s in JobState]}, "
                                 f"got {filter_state!r}") from None
        after = _decode_token(page_token) if page_token else None
        page: list[Job] = []
        for job_id in self._index_after(after):
            if len(page) == page_size:
                last = page[-1]
                return page, _encode_token(last.created, last.id)
            try:
                job = self.get(job_id)
            except KeyError:  # deleted meanwhile, or expired: forget it
                self.redis.zrem(keys.job_index(), job_id)
                continue
            if (filter_state is None or job.state is filter_state) and (owner is None or job.owner == owner):
                page.append(job)
        return page, None

    def cancel(self, job_id: str) -> Job:
        """Request cancellation: a queued job ends CANCELLED at once, a running one at its next batch. A parent's
        shards are cancelled with it. Finished jobs are returned unchanged."""
        job = self.get(job_id)
        if job.parent:
            raise ValueError(f"job {job_id!r} is shard {job.shard_index} of job {job.parent!r}: cancel that job")
        self._cancel_one(job_id)
        if job.is_parent:
            for i in range(job.shards):
                self._cancel_one(_shard_id(job_id, i))
            self._expire_shards(job_id)
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Delete a finished job (and its shards). ValueError while it is queued or running."""
        job = self.get(job_id)
        if job.parent:
            raise ValueError(f"job {job_id!r} is shard {job.shard_index} of job {job.parent!r}: delete that job")
        if not job.finished:
            raise ValueError(f"job {job_id!r} is {job.state.value}: only SUCCEEDED, FAILED or CANCELLED jobs can be "
                             "deleted (cancel it first)")
        shard_keys = [keys.job(_shard_id(job_id, i)) for i in range(job.shards)] if job.is_parent else []
        dead_entry = _text(self.redis.hget(keys.job(job_id), "dead_entry"))
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.job(job_id), *shard_keys)
            pipe.zrem(keys.job_index(), job_id)
            if dead_entry:
                pipe.xdel(keys.dead_letters(), dead_entry)
            pipe.execute()

    def wait(self, job_id: str, timeout: float | None) -> Job:
        """The job once finished, or as it is when ``timeout`` seconds have passed."""
        job = self.get(job_id)
        for job in self.watch(job_id, timeout):
            pass
        return job

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job now and after every change of state, progress or queue position, until it finishes or
        ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        with self.redis.pubsub(ignore_subscribe_messages=True) as events:
            events.subscribe(keys.job_events(job_id))
            while True:
                job = self.get(job_id)
                position = self.queue_position(job_id) if job.state is JobState.QUEUED else 0
                seen = (job.state, job.stage, job.done, job.total, job.attempt, job.cancel_requested, position)
                if seen != last:
                    last = seen
                    yield job
                remaining = None if deadline is None else deadline - time.monotonic()
                if job.finished or (remaining is not None and remaining <= 0):
                    return
                # wake on an event, re-read at least every second in case one was missed
                if events.get_message(timeout=1.0 if remaining is None else min(remaining, 1.0)):
                    while events.get_message(timeout=0):
                        pass

    # --- worker side --------------------------------------------------------------------------------------------
    def claim_next(self, worker: str, block_ms: int, finished: list[str] | None = None) -> JobContext | None:
        """Wait up to ``block_ms`` for a new delivery and claim its job. The ids of top-level jobs that the claim
        ended instead (cancelled, or dead after too many lost workers) are appended to ``finished``."""
        try:
            reply = self.redis.xreadgroup(keys.consumer_group(), worker, {keys.stream(): ">"}, count=1,
                                          block=block_ms)
        except redis_lib.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.ensure_group()
            return None
        if not reply:
            return None
        _, entries = reply[0] if isinstance(reply, list) else next(iter(reply.items()))
        entry_id, fields = entries[0]
        job_id = _text(fields.get(b"job", fields.get("job")))
        return self._try_claim(worker, job_id, _text(entry_id), previous_owner="", finished=finished)

    def reclaim(self, worker: str, finished: list[str] | None = None) -> JobContext | None:
        """Claim a job from a worker whose heartbeat expired, if there is one. Call it between jobs only: the
        caller's own pending deliveries are then orphans (of a crashed earlier process of the same name)."""
        summary = self.redis.xpending(keys.stream(), keys.consumer_group())
        for consumer in summary.get("consumers") or []:
            owner = _text(consumer["name"])
            if owner != worker and self.redis.exists(keys.heartbeat(owner)):
                continue
            pending = self.redis.xpending_range(keys.stream(), keys.consumer_group(), "-", "+", 10,
                                                consumername=owner)
            for entry in pending:
                entry_id = _text(entry["message_id"])
                job_id = self.redis.xrange(keys.stream(), entry_id, entry_id)
                if not job_id:  # the entry was deleted: forget the delivery
                    self.redis.xack(keys.stream(), keys.consumer_group(), entry_id)
                    continue
                fields = job_id[0][1]
                context = self._try_claim(worker, _text(fields.get(b"job", fields.get("job"))), entry_id,
                                          previous_owner=owner, finished=finished)
                if context is not None:
                    return context
        return None

    def beat(self, worker: str, info: dict[str, str] | None = None) -> None:
        """Refresh a worker's heartbeat key (it expires after ``heartbeat_ttl`` unless refreshed) and, with
        ``info`` ({device, operation, started}), its status hash, which expires with it (``keys.worker_info``)."""
        ttl_ms = max(1, int(self.heartbeat_ttl * 1000))
        with self.redis.pipeline(transaction=info is not None) as pipe:
            pipe.set(keys.heartbeat(worker), "1", px=ttl_ms)
            pipe.delete(keys.suspect(worker))
            now = time.time()
            pipe.zadd(keys.workers(), {worker: now})
            pipe.zremrangebyscore(keys.workers(), "-inf", now - max(WORKER_FORGET_S, 10 * self.heartbeat_ttl))
            if info is not None:
                pipe.hset(keys.worker_info(worker), mapping={**info, "beat": repr(now)})
                pipe.pexpire(keys.worker_info(worker), ttl_ms)
            pipe.execute()

    def retire(self, worker: str) -> None:
        """Forget a stopping worker: its heartbeat and status, and its consumer when it holds no deliveries."""
        self.redis.delete(keys.heartbeat(worker), keys.worker_info(worker))
        self.redis.zrem(keys.workers(), worker)
        pending = self.redis.xpending_range(keys.stream(), keys.consumer_group(), "-", "+", 1, consumername=worker)
        if not pending:
            self.redis.xgroup_delconsumer(keys.stream(), keys.consumer_group(), worker)

    def report_progress(self, job: Job, stage: str, done: int, total: int | None) -> bool:
        """Record progress under the job's attempt; True when a cancel was requested. JobLost when stale."""
        flag = self._progress(keys=[keys.job(job.id), keys.job(job.parent or job.id)], args=[
            job.attempt, stage, done, "" if total is None else total, repr(time.time()),
            keys.job_events(job.id), keys.job_events(job.parent or job.id)])
        if int(flag) < 0:
            raise JobLost(f"job {job.id!r} attempt {job.attempt} is stale")
        return int(flag) == 1

    def cancel_requested(self, job: Job) -> bool:
        """Whether a cancel was requested; JobLost when the attempt is stale."""
        attempt, state, flag = (_text(v) for v in self.redis.hmget(keys.job(job.id), "attempt", "state",
                                                                   "cancel_requested"))
        if attempt != str(job.attempt) or state != JobState.RUNNING.value:
            raise JobLost(f"job {job.id!r} attempt {job.attempt} is stale")
        return flag == "1"

    def save_checkpoint(self, job: Job, checkpoint: dict) -> None:
        """Record the job's checkpoint (JSON) under its attempt; JobLost when stale."""
        if int(self._checkpoint(keys=[keys.job(job.id)], args=[job.attempt, _dump(checkpoint)])) < 0:
            raise JobLost(f"job {job.id!r} attempt {job.attempt} is stale")

    def settle(self, job: Job, outcome: str, payload: dict | None = None) -> str:
        """End the job's attempt: ``succeeded`` (payload = result), ``retry`` / ``failed`` / ``dead`` (payload =
        error; ``dead`` also dead-letters it), ``cancelled`` or ``handback``. Returns the job's new state, or
        ``stale`` when the write was refused."""
        return self.settle_outcome(job, outcome, payload)[0]

    def settle_outcome(self, job: Job, outcome: str, payload: dict | None = None) -> tuple[str, str | None]:
        """As :meth:`settle`, and the id of the top-level job that this settling finished (None if none)."""
        parent = job.parent or job.id
        status, parent_failed = self._settle(
            keys=[keys.job(job.id), keys.stream(), keys.dead_letters(), keys.job(parent)],
            args=[job.attempt, outcome, _dump(payload), repr(time.time()), keys.consumer_group(), self.max_attempts,
                  keys.job_events(job.id), keys.job_events(parent), job.id, parent, *self._ttls()])
        status = _text(status)
        if int(parent_failed):
            self._cancel_shards(parent)
        if job.parent is None and JobState.__members__.get(status, JobState.QUEUED).finished:
            if job.is_parent:
                self._expire_shards(job.id)
            return status, job.id
        return status, parent if int(parent_failed) else None

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead-letter records, as stored: {job, shard, kind, attempt, failures, worker, owner, error}."""
        return [{_text(k): _text(v) for k, v in fields.items()}
                for _, fields in self.redis.xrevrange(keys.dead_letters(), count=count)]

    def list_dead_letters(self, *, page_size: int = 50, page_token: str | None = None
                          ) -> tuple[list[DeadLetter], str | None]:
        """Dead letters newest first, and the token of the next page (None on the last). Letters older than
        ``dead_letter_ttl`` are dropped first."""
        if not isinstance(page_size, int) or not 0 <= page_size <= _MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be an integer in 0..{_MAX_PAGE_SIZE} (0 = 50), got {page_size!r}")
        page_size = page_size or 50
        top = "+"
        if page_token:
            try:
                top = "(" + _decode_dead_token(page_token)
            except ValueError:
                raise ValueError(f"invalid page_token {page_token!r}: pass the next_page_token of a previous page"
                                 ) from None
        self._trim_dead_letters()
        entries = self.redis.xrevrange(keys.dead_letters(), max=top, min="-", count=page_size + 1)
        letters = [DeadLetter.from_entry(_text(entry_id), fields) for entry_id, fields in entries[:page_size]]
        more = len(entries) > page_size
        return letters, _encode_dead_token(letters[-1].entry_id) if more else None

    def retry_dead_letter(self, job_id: str) -> Job:
        """Queue a dead-lettered job again with a fresh failure budget (it resumes from its checkpoint; a sharded
        job runs only its unfinished shards again). KeyError when unknown; ValueError when it is not dead."""
        job = self.get(job_id)
        if job.parent:
            raise ValueError(f"job {job_id!r} is shard {job.shard_index} of job {job.parent!r}: retry that job")
        shard_ids = [_shard_id(job_id, i) for i in range(job.shards)] if job.is_parent else []
        status = _text(self._retry(
            keys=[keys.job(job_id), keys.stream(), keys.dead_letters(), keys.job_index(),
                  *(keys.job(s) for s in shard_ids)],
            args=[repr(time.time()), keys.job_events(job_id), job_id, *shard_ids]))
        if status == "missing":
            raise KeyError(f"no job {job_id!r}")
        if status == "expired":
            raise ValueError(f"job {job_id!r} cannot be retried: some of its shards have expired")
        if status != "retried":
            raise ValueError(f"job {job_id!r} is {status} and not dead-lettered: only a job that failed for good "
                             "(too many failed deliveries, a hung handler) can be retried")
        return self.get(job_id)

    # --- status (AdminService.GetStatus, `gigaudit status`) ---------------------------------------------------
    def queue_status(self, cap: int = STATUS_SCAN_CAP) -> QueueCounts:
        """Counts of the queue. Every unfinished job has an entry in the stream (settled entries are deleted), so
        the QUEUED / RUNNING counts read the states of the jobs that the stream's entries name: the cost follows
        the work in flight, not the jobs kept (at most ``cap`` entries are read; beyond, the counts are lower
        bounds). ``lag`` is the consumer group's (Redis 7+) or, where Redis cannot tell, counted in that scan."""
        group = self._group()
        last = _entry_id(_text(group.get("last-delivered-id")) or "0-0")
        jobs: dict[str, None] = {}
        counted_lag, seen, start = 0, 0, "-"
        while seen < cap:
            entries = self.redis.xrange(keys.stream(), min=start, max="+", count=min(1000, cap - seen))
            for entry_id, fields in entries:
                counted_lag += _entry_id(_text(entry_id)) > last
                jobs.setdefault(_text(fields.get(b"job", fields.get("job"))).split(".shard")[0])
            seen += len(entries)
            if len(entries) < 1000:
                break
            start = f"({_text(entries[-1][0])}"
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                pipe.hget(keys.job(job_id), "state")
            states = [_text(state) for state in pipe.execute()] if jobs else []
        lag = group.get("lag")
        self._trim_dead_letters()
        return QueueCounts(queued=states.count(JobState.QUEUED.value), running=states.count(JobState.RUNNING.value),
                           lag=counted_lag if lag is None else int(lag), pending=int(group.get("pending") or 0),
                           dead_letters=int(self.redis.xlen(keys.dead_letters())))

    def worker_states(self) -> list[WorkerState]:
        """The workers by name: the live ones (their device, heartbeat and job from ``keys.worker_info``) and the
        dead ones that still hold deliveries (their job awaits reclaiming; their last beat from ``keys.workers``).
        Dead workers that hold none are dropped from ``keys.workers``."""
        try:
            consumers = self.redis.xinfo_consumers(keys.stream(), keys.consumer_group())
        except redis_lib.ResponseError as e:
            if "NOGROUP" not in str(e) and "no such key" not in str(e):
                raise
            consumers = []
        held = {_text(c["name"]): int(c.get("pending") or 0) for c in consumers}
        held = {name: count for name, count in held.items() if count}
        beats = {_text(name): score for name, score in self.redis.zrange(keys.workers(), 0, -1, withscores=True)}
        names = sorted({*beats, *held})
        with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(keys.heartbeat(name))
                pipe.hgetall(keys.worker_info(name))
            replies = pipe.execute()
        workers = []
        for name, alive, info in zip(names, replies[::2], replies[1::2]):
            info = {_text(k): _text(v) for k, v in info.items()}
            if not alive and not held.get(name):
                self.redis.zrem(keys.workers(), name)  # gone (crashed between jobs, or retired meanwhile)
                continue
            job_id = info.get("operation", "")
            if not alive:  # its status expired: the job of its first pending delivery
                delivery = self.redis.xpending_range(keys.stream(), keys.consumer_group(), "-", "+", 1,
                                                     consumername=name)
                entry = delivery and self.redis.xrange(keys.stream(), delivery[0]["message_id"],
                                                       delivery[0]["message_id"])
                job_id = _text(entry[0][1].get(b"job", entry[0][1].get("job"))) if entry else ""
            workers.append(WorkerState(name=name, device=info.get("device", ""), alive=bool(alive),
                                       heartbeat_time=float(info["beat"]) if info.get("beat") else beats.get(name),
                                       job_id=job_id, pending=held.get(name, 0)))
        running = [w for w in workers if w.job_id]
        with self.redis.pipeline(transaction=False) as pipe:
            for w in running:
                pipe.hmget(keys.job(w.job_id), "stage", "done", "total", "parent", "state", "worker")
            progress = pipe.execute() if running else []
        for w, (stage, done, total, parent, state, owner) in zip(running, progress):
            if _text(state) != JobState.RUNNING.value or _text(owner) != w.name:
                w.job_id = ""  # settled (or taken over) since the worker last published its status
                continue
            w.stage, w.done = _text(stage), int(_text(done) or 0)
            w.total = int(_text(total)) if _text(total) else None
            w.job_id = _text(parent) or w.job_id
        return workers

    # --- internals ----------------------------------------------------------------------------------------------
    def _group(self) -> dict:
        """The consumer group's XINFO GROUPS entry (empty when the stream or group is missing)."""
        try:
            groups = self.redis.xinfo_groups(keys.stream())
        except redis_lib.ResponseError as e:
            if "no such key" not in str(e):
                raise
            return {}
        return next((g for g in groups if _text(g["name"]) == keys.consumer_group()), {})

    def _trim_dead_letters(self) -> None:
        if self.dead_letter_ttl:
            self.redis.xtrim(keys.dead_letters(), minid=f"{int((time.time() - self.dead_letter_ttl) * 1000)}",
                             approximate=False)

    def _ttls(self) -> tuple[int, int]:
        return int(self.finished_ttl * 1000), int(self.dead_letter_ttl * 1000)

    def _try_claim(self, worker: str, job_id: str, entry_id: str, previous_owner: str,
                   finished: list[str] | None) -> JobContext | None:
        parent = _text(self.redis.hget(keys.job(job_id), "parent")) or job_id
        status, attempt, parent_failed = self._claim(
            keys=[keys.job(job_id), keys.stream(), keys.dead_letters(), keys.heartbeat(worker),
                  keys.heartbeat(previous_owner or worker), keys.job(parent), keys.suspect(previous_owner or worker)],
            args=[worker, entry_id, keys.consumer_group(), repr(time.time()), self.max_attempts, previous_owner,
                  keys.job_events(job_id), keys.job_events(parent), job_id, parent,
                  int(self.reclaim_grace * 1000), *self._ttls()])
        status = _text(status)
        if int(parent_failed):
            self._cancel_shards(parent)
        if status in ("cancelled", "dead") and finished is not None:
            if parent == job_id:
                finished.append(job_id)
            elif int(parent_failed):
                finished.append(parent)
        if parent == job_id and status in ("cancelled", "dead"):
            self._expire_shards(job_id)
        if status != "claimed":
            return None
        job = Job.from_hash(self.redis.hgetall(keys.job(job_id)))
        return JobContext(job=job, shard_index=job.shard_index, shard_count=job.shards if job.parent else 1,
                          _queue=self)

    def _cancel_one(self, job_id: str) -> None:
        ttl = 0 if ".shard" in job_id else self._ttls()[0]  # a shard expires with its parent
        self._cancel(keys=[keys.job(job_id)], args=[repr(time.time()), keys.job_events(job_id), ttl])

    def _cancel_shards(self, parent_id: str) -> None:
        shards = int(_text(self.redis.hget(keys.job(parent_id), "shards")) or 0)
        for i in range(shards):
            self._cancel_one(_shard_id(parent_id, i))
        self._expire_shards(parent_id)

    def _expire_shards(self, parent_id: str) -> None:
        """Give a finished parent's shards the parent's remaining TTL (they are read, and retried, with it)."""
        ttl_ms = self.redis.pttl(keys.job(parent_id))
        shards, reduce_kind = (_text(v) for v in self.redis.hmget(keys.job(parent_id), "shards", "reduce_kind"))
        if ttl_ms is None or ttl_ms <= 0 or not reduce_kind:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for i in range(int(shards or 0)):
                pipe.pexpire(keys.job(_shard_id(parent_id, i)), ttl_ms)
            pipe.execute()

    def _index_after(self, after: tuple[float, str] | None, chunk: int = 100) -> Iterator[str]:
        """Job ids newest first, strictly after the cursor (created, id) in that order."""
        top: float | str = "+inf" if after is None else after[0]
        while True:
            rows = self.redis.zrevrangebyscore(keys.job_index(), top, "-inf", start=0, num=chunk, withscores=True)
            for member, score in rows:
                job_id = _text(member)
                if after is not None and (score > after[0] or (score == after[0] and job_id >= after[1])):
                    continue
                after = (score, job_id)
                yield job_id
            if len(rows) < chunk:
                return
            top = after[0] if after is not None else "+inf"


@dataclass
class JobContext:
    """What a handler gets: the job, its shard, progress reporting that doubles as the cancellation check, and
    checkpoints.

    Progress survives Redis outages: once a report fails, a background thread retries the latest report (and a
    pending checkpoint) with backoff while the handler goes on computing, its reports kept locally; only an outage
    longer than the retry window stops the handler (``RedisUnavailable``, at its next report).
    """
    job: Job
    shard_index: int = 0
    shard_count: int = 1
    _queue: JobQueue | None = field(default=None, repr=False)
    _stop: threading.Event | None = field(default=None, repr=False)
    retry: RedisRetry = field(default_factory=RedisRetry, repr=False)
    checkpoint_interval: float = CHECKPOINT_S
    last_progress: float = field(default_factory=time.monotonic, repr=False)
    _last_checkpoint: float = field(default_factory=time.monotonic, repr=False)
    _pending_checkpoint: dict | None = field(default=None, repr=False)
    _outage: Outage | None = field(default=None, repr=False)
    _lost: str = field(default="", repr=False)
    _recovery: threading.Thread | None = field(default=None, repr=False)
    _recovery_error: BaseException | None = field(default=None, repr=False)
    _cancel_seen: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self._outage = Outage(self.retry)

    @property
    def checkpoint(self) -> dict | None:
        """The last checkpoint of this job (from an earlier attempt, or saved by this one); None when none."""
        return self.job.checkpoint

    def progress(self, stage: str, done: int, total: int | None) -> None:
        """Record progress; raises JobCancelled / JobInterrupted between batches when the job must stop."""
        self.job.stage, self.job.done, self.job.total = stage, done, total
        self.last_progress = time.monotonic()
        self._raise_if_lost()
        cancel = self._try(f"job {self.job.id} progress",
                           lambda: self._queue.report_progress(self.job, stage, done, total), False)
        self._raise_if_stopping(cancel)

    def check_cancelled(self) -> None:
        """Raise JobCancelled when a cancel was requested (JobInterrupted when the worker stops)."""
        self._raise_if_lost()
        self._raise_if_stopping(self._try(f"job {self.job.id} cancel check",
                                          lambda: self._queue.cancel_requested(self.job), False))

    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_interval`` seconds have passed since the attempt began or last saved one."""
        return time.monotonic() - self._last_checkpoint >= self.checkpoint_interval

    def save_checkpoint(self, checkpoint: dict) -> None:
        """Record ``checkpoint`` (small JSON: references to artifacts in the store) for a later attempt to resume
        from. While Redis is unreachable it is kept and sent with the next progress report."""
        json.dumps(checkpoint)
        with self._lock:
            self.job.checkpoint = self._pending_checkpoint = checkpoint
        self._last_checkpoint = time.monotonic()
        self._raise_if_lost()
        self._try(f"job {self.job.id} checkpoint", lambda: None, None)

    def attach(self, stop: threading.Event, retry: RedisRetry, checkpoint_interval: float) -> None:
        """Used by the worker: its stop event, Redis retry policy and checkpoint interval."""
        self._stop, self.retry, self.checkpoint_interval = stop, retry, checkpoint_interval
        self._outage = Outage(retry)

    @property
    def lost(self) -> bool:
        return bool(self._lost)

    def mark_lost(self, reason: str) -> None:
        """Fence this attempt off locally (the worker failed it, e.g. as hung): its next report raises JobLost."""
        self._lost = reason

    def _try(self, what: str, call, default):
        """``call()`` (after sending a pending checkpoint); while Redis is down, ``default`` at once (the recovery
        thread retries), or the error the recovery thread ended with."""
        if self._recovery is not None:
            if self._recovery.is_alive():
                return True if self._cancel_seen and default is False else default
            self._recovery = None
            if self._recovery_error is not None:
                raise self._recovery_error
            if self._cancel_seen and default is False:
                return True
        try:
            self._send_checkpoint()
            return call()
        except TRANSIENT as error:
            self._outage.failed(what, error)  # RedisUnavailable when the window is 0
            self._recovery = threading.Thread(target=self._recover, args=(what,), daemon=True,
                                              name=f"recover-{self.job.id}")
            self._recovery.start()
            return default

    def _send_checkpoint(self) -> None:
        with self._lock:
            pending = self._pending_checkpoint
        if pending is not None:
            self._queue.save_checkpoint(self.job, pending)
            with self._lock:
                if self._pending_checkpoint is pending:
                    self._pending_checkpoint = None

    def _recover(self, what: str) -> None:
        """Retry the latest progress report (and pending checkpoint) with backoff until Redis answers."""
        while True:
            time.sleep(max(0.0, self._outage.next_try - time.monotonic()))
            try:
                self._send_checkpoint()
                cancel = self._queue.report_progress(self.job, self.job.stage, self.job.done, self.job.total)
            except TRANSIENT as error:
                try:
                    self._outage.failed(what, error)
                except RedisUnavailable as gone:
                    self._recovery_error = gone
                    return
                continue
            except JobLost as lost:
                self._recovery_error = lost
                return
            self._cancel_seen = self._cancel_seen or cancel
            self._outage.recovered(what)
            return

    def _raise_if_lost(self) -> None:
        if self._lost:
            raise JobLost(f"job {self.job.id!r} attempt {self.job.attempt}: {self._lost}")

    def _raise_if_stopping(self, cancel: bool) -> None:
        if cancel:
            raise JobCancelled(f"job {self.job.id!r} was cancelled")
        if self._stop is not None and self._stop.is_set():
            raise JobInterrupted(f"worker stopping: job {self.job.id!r} is handed back")


Handler = Callable[[JobContext], dict]
Reducer = Callable[[Job, list[dict]], dict]


def _shard_id(parent_id: str, index: int) -> str:
    return f"{parent_id}.shard{index}"


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``ms-seq`` as a comparable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _dump(value: dict | None) -> str:
    return "" if value is None else json.dumps(value)


def _load(text: str) -> dict | None:
    return json.loads(text) if text else None


def _history(text: str) -> list[dict]:
    """The stage events of a job hash's ``history`` (Lua's cjson writes an empty list as ``{}``)."""
    events = json.loads(text) if text else []
    return events if isinstance(events, list) else []


def _encode_dead_token(entry_id: str) -> str:
    return base64.urlsafe_b64encode(f"dead:{entry_id}".encode()).decode()


def _decode_dead_token(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, binascii.Error):
        raise ValueError("bad token") from None
    kind, _, entry_id = text.partition(":")
    if kind != "dead" or not re.fullmatch(r"\d+-\d+", entry_id):
        raise ValueError("bad token")
    return entry_id


def _encode_token(created: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, job_id]).encode()).decode()


def _decode_token(token: str) -> tuple[float, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(created), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"invalid page_token {token!r}: pass the next_page_token of a previous page") from None
