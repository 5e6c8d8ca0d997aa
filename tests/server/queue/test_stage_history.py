"""Queue positions and stage histories of jobs, against a real Redis (JobQueue and its Lua scripts)."""
from __future__ import annotations

import time

from gigaudit_server import keys
from gigaudit_server.api import operations
from gigaudit_server.queue import scripts
from gigaudit_server.queue.jobs import JobQueue, JobState

import pytest


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=2, heartbeat_ttl=1.0, reclaim_grace=0.0)


def claim(queue: JobQueue, worker: str = "w1"):
    queue.beat(worker)
    for _ in range(5):
        ctx = queue.claim_next(worker, 200)
        if ctx is not None:
            return ctx
    raise AssertionError("nothing to claim")


def test_queue_position_counts_the_queued_jobs_ahead(queue):
    first, second, third = (queue.submit("noop", {"i": i}) for i in range(3))
    assert [queue.queue_position(j.id) for j in (first, second, third)] == [0, 1, 2]
    queue.cancel(second.id)  # its entry stays in the stream, but it is no longer queued
    assert queue.queue_position(third.id) == 1
    ctx = claim(queue)  # delivered: first
    assert ctx.job.id == first.id
    assert queue.queue_position(third.id) == 0
    assert operations.metadata(queue.get(third.id), 7).queue_position == 7
    assert operations.metadata(queue.get(first.id), 7).queue_position == 0  # RUNNING: no position


def test_queue_position_of_a_sharded_job_and_the_cap(queue):
    ahead = [queue.submit("noop", {"i": i}) for i in range(5)]
    sharded = queue.submit("noop", {}, shards=3, reduce_kind="reduce_graph")
    behind = queue.submit("noop", {})
    assert queue.queue_position(sharded.id) == 5
    assert queue.queue_position(behind.id) == 6  # the three shards count as one job
    assert queue.queue_position(behind.id, cap=3) == 3  # at most the cap: "at least 3"
    assert queue.queue_position(ahead[0].id, cap=3) == 0


def test_history_records_claims_stage_changes_and_errors(queue):
    job = queue.submit("noop", {})
    ctx = claim(queue)
    for stage, done in (("sample", 0), ("sample", 1), ("cluster", 0), ("cluster", 1)):
        ctx.progress(stage, done, 2)
    assert queue.settle(ctx.job, "retry", {"code": "INTERNAL", "message": "boom"}) == "QUEUED"
    ctx = claim(queue, "w2")
    ctx.progress("sample", 0, 2)
    assert queue.settle(ctx.job, "failed", {"code": "INVALID_ARGUMENT", "message": "bad input"}) == "FAILED"
    history = queue.get(job.id).history
    assert [(e["stage"], e["worker"], e["attempt"]) for e in history] == [
        ("claimed", "w1", 1), ("sample", "w1", 1), ("cluster", "w1", 1), ("claimed", "w2", 2), ("sample", "w2", 2)]
    assert [e.get("error") for e in history] == [
        None, None, {"code": "INTERNAL", "message": "boom"}, None, {"code": "INVALID_ARGUMENT", "message": "bad input"}]
    times = [e["time"] for e in history]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60
    message = operations.metadata(queue.get(job.id))
    assert [(e.stage, e.worker, e.attempt, e.error) for e in message.history][-2:] == [
        ("claimed", "w2", 2, ""), ("sample", "w2", 2, "INVALID_ARGUMENT: bad input")]
    assert message.history[0].start_time.seconds == int(times[0])


def test_history_marks_an_attempt_whose_worker_died(queue):
    job = queue.submit("noop", {})
    ctx = claim(queue, "dead-worker")
    ctx.progress("graph", 1, 4)
    queue.redis.delete(keys.heartbeat("dead-worker"))
    queue.beat("w2")
    taken = queue.reclaim("w2")
    assert taken is not None and taken.job.id == job.id
    history = queue.get(job.id).history
    assert [(e["stage"], e["attempt"]) for e in history] == [("claimed", 1), ("graph", 1), ("claimed", 2)]
    assert history[1]["error"]["code"] == "UNAVAILABLE" and "dead-worker" in history[1]["error"]["message"]


def test_history_is_bounded(queue):
    job = queue.submit("noop", {})
    ctx = claim(queue)
    for i in range(scripts.HISTORY_MAX + 20):
        ctx.progress(f"stage{i}", 0, 1)
    history = queue.get(job.id).history
    assert len(history) == scripts.HISTORY_MAX and history[-1]["stage"] == f"stage{scripts.HISTORY_MAX + 19}"


def test_parent_history_merges_its_shards(queue):
    parent = queue.submit("noop", {}, shards=2, reduce_kind="reduce_graph")
    first = claim(queue, "w1")
    second = claim(queue, "w2")
    first.progress("graph", 0, 2)
    second.progress("graph", 0, 2)
    job = queue.get(parent.id)
    assert job.state is JobState.RUNNING
    assert sorted((e["stage"], e["worker"]) for e in job.history) == [
        ("claimed", "w1"), ("claimed", "w2"), ("graph", "w1"), ("graph", "w2")]
