"""The job queue: jobs as Redis hashes, deliveries through a Redis stream read by a consumer group.

Delivery is at least once; what makes it safe is the job's ``attempt`` counter, incremented on every claim and
checked by every write a worker makes (see ``job_scripts``). A worker that dies stops refreshing its heartbeat key;
only then may another worker reclaim its stream entries — never because a job merely runs long. A job that fails
``max_attempts`` times ends FAILED and is copied to the dead-letter stream.

A sharded job is a parent plus N shard jobs that any worker may take; the worker that settles the last shard queues
the parent itself for the reduction, which runs like any other job (fenced, retried when its worker dies).

All state lives in Redis: a restarted API server or worker loses nothing.
"""
from __future__ import annotations

import base64
import binascii
import json
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

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MAX_PAGE_SIZE = 1000


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
            "failures": str(self.failures), "owner": self.owner,
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
            failures=int(f["failures"]), owner=f.get("owner", ""),
        )


class JobQueue:
    """Submit, inspect, cancel and delete jobs; the worker side (claim, progress, settle) is used by ``Worker``."""

    def __init__(self, redis: redis_lib.Redis, *, max_attempts: int = 3, heartbeat_ttl: float = 10.0):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if heartbeat_ttl <= 0:
            raise ValueError(f"heartbeat_ttl must be > 0 seconds, got {heartbeat_ttl}")
        self.redis = redis
        self.max_attempts = max_attempts
        self.heartbeat_ttl = heartbeat_ttl
        self._claim = redis.register_script(job_scripts.CLAIM)
        self._progress = redis.register_script(job_scripts.PROGRESS)
        self._settle = redis.register_script(job_scripts.SETTLE)
        self._cancel = redis.register_script(job_scripts.CANCEL)
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
               shards: int = 1, reduce_kind: str | None = None, owner: str = "") -> Job:
        """Create a job and queue it; with ``reduce_kind``, a parent and ``shards`` shard jobs. A repeated
        ``request_id`` returns the job it created first and queues nothing."""
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
                  shards=shards, reduce_kind=reduce_kind, owner=owner)
        parts = [job] if reduce_kind is None else [
            Job(id=_shard_id(job_id, i), kind=kind, params=params, created=now, updated=now, parent=job_id,
                shards=shards, shard_index=i, owner=owner) for i in range(shards)]
        request_key = keys.request(request_id) if request_id else None
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.job(job_id), *([request_key] if request_key else []))
                    if request_key and (existing := pipe.get(request_key)) is not None:
                        pipe.reset()
                        return self.get(_text(existing))
                    if pipe.exists(keys.job(job_id)):
                        raise JobExistsError(f"job {job_id!r} exists already")
                    pipe.multi()
                    if request_key:
                        pipe.set(request_key, job_id, nx=True)
                    pipe.hset(keys.job(job_id), mapping=job.to_hash())
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
        return job

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
            except KeyError:  # deleted meanwhile
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
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.job(job_id), *shard_keys)
            pipe.zrem(keys.job_index(), job_id)
            if job.request_id:
                pipe.delete(keys.request(job.request_id))
            pipe.execute()

    def wait(self, job_id: str, timeout: float | None) -> Job:
        """The job once finished, or as it is when ``timeout`` seconds have passed."""
        job = self.get(job_id)
        for job in self.watch(job_id, timeout):
            pass
        return job

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job now and after every change of state or progress, until it finishes or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        with self.redis.pubsub(ignore_subscribe_messages=True) as events:
            events.subscribe(keys.job_events(job_id))
            while True:
                job = self.get(job_id)
                seen = (job.state, job.stage, job.done, job.total, job.attempt, job.cancel_requested)
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
    def claim_next(self, worker: str, block_ms: int) -> JobContext | None:
        """Wait up to ``block_ms`` for a new delivery and claim its job."""
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
        return self._try_claim(worker, job_id, _text(entry_id), previous_owner="")

    def reclaim(self, worker: str) -> JobContext | None:
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
                                          previous_owner=owner)
                if context is not None:
                    return context
        return None

    def beat(self, worker: str) -> None:
        """Refresh a worker's heartbeat key (it expires after ``heartbeat_ttl`` unless refreshed)."""
        self.redis.set(keys.heartbeat(worker), "1", px=max(1, int(self.heartbeat_ttl * 1000)))

    def retire(self, worker: str) -> None:
        """Forget a stopping worker: its heartbeat, and its consumer when it holds no deliveries."""
        self.redis.delete(keys.heartbeat(worker))
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

    def settle(self, job: Job, outcome: str, payload: dict | None = None) -> str:
        """End the job's attempt: ``succeeded`` (payload = result), ``retry`` / ``failed`` (payload = error),
        ``cancelled`` or ``handback``. Returns the job's new state, or ``stale`` when the write was refused."""
        parent = job.parent or job.id
        status, parent_failed = self._settle(
            keys=[keys.job(job.id), keys.stream(), keys.dead_letters(), keys.job(parent)],
            args=[job.attempt, outcome, _dump(payload), repr(time.time()), keys.consumer_group(), self.max_attempts,
                  keys.job_events(job.id), keys.job_events(parent), job.id, parent])
        if int(parent_failed):
            self._cancel_shards(parent)
        return _text(status)

    def dead_letters(self, count: int = 100) -> list[dict]:
        """The newest dead-letter records: {job, kind, attempt, error}."""
        return [{_text(k): _text(v) for k, v in fields.items()}
                for _, fields in self.redis.xrevrange(keys.dead_letters(), count=count)]

    # --- internals ----------------------------------------------------------------------------------------------
    def _try_claim(self, worker: str, job_id: str, entry_id: str, previous_owner: str) -> JobContext | None:
        parent = _text(self.redis.hget(keys.job(job_id), "parent")) or job_id
        status, attempt, parent_failed = self._claim(
            keys=[keys.job(job_id), keys.stream(), keys.dead_letters(), keys.heartbeat(worker),
                  keys.heartbeat(previous_owner or worker), keys.job(parent)],
            args=[worker, entry_id, keys.consumer_group(), repr(time.time()), self.max_attempts, previous_owner,
                  keys.job_events(job_id), keys.job_events(parent), job_id])
        if int(parent_failed):
            self._cancel_shards(parent)
        if _text(status) != "claimed":
            return None
        job = Job.from_hash(self.redis.hgetall(keys.job(job_id)))
        return JobContext(job=job, shard_index=job.shard_index, shard_count=job.shards if job.parent else 1,
                          _queue=self)

    def _cancel_one(self, job_id: str) -> None:
        self._cancel(keys=[keys.job(job_id)], args=[repr(time.time()), keys.job_events(job_id)])

    def _cancel_shards(self, parent_id: str) -> None:
        shards = int(_text(self.redis.hget(keys.job(parent_id), "shards")) or 0)
        for i in range(shards):
            self._cancel_one(_shard_id(parent_id, i))

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
    """What a handler gets: the job, its shard, and progress reporting that doubles as the cancellation check."""
    job: Job
    shard_index: int = 0
    shard_count: int = 1
    _queue: JobQueue | None = field(default=None, repr=False)
    _stop: threading.Event | None = field(default=None, repr=False)

    def progress(self, stage: str, done: int, total: int | None) -> None:
        """Record progress; raises JobCancelled / JobInterrupted between batches when the job must stop."""
        cancel = self._queue.report_progress(self.job, stage, done, total)
        self.job.stage, self.job.done, self.job.total = stage, done, total
        self._raise_if_stopping(cancel)

    def check_cancelled(self) -> None:
        """Raise JobCancelled when a cancel was requested (JobInterrupted when the worker stops)."""
        self._raise_if_stopping(self._queue.cancel_requested(self.job))

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


def _dump(value: dict | None) -> str:
    return "" if value is None else json.dumps(value)


def _load(text: str) -> dict | None:
    return json.loads(text) if text else None


def _encode_token(created: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created, job_id]).encode()).decode()


def _decode_token(token: str) -> tuple[float, str]:
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(token.encode()))
        return float(created), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError(f"invalid page_token {token!r}: pass the next_page_token of a previous page") from None
