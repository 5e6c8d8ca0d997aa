"""Job lifecycle in the queue against a real Redis: TTLs, dead letters listed and retried, checkpoints fenced, the
reclaim grace that keeps a Redis outage from looking like dead workers."""
from __future__ import annotations

import time

import pytest

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobLost, JobQueue, JobState

HOUR = 3600.0


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=2, heartbeat_ttl=1.0, reclaim_grace=0, finished_ttl=HOUR,
                    dead_letter_ttl=2 * HOUR)


def kill(queue: JobQueue, worker: str) -> None:
    queue.redis.delete(keys.heartbeat(worker))


def claim(queue: JobQueue, worker: str = "w"):
    """The next delivery's context (skipping entries of jobs that ended meanwhile); None when none is left."""
    for _ in range(20):
        if (ctx := queue.claim_next(worker, 50)) is not None:
            return ctx
        if queue.redis.xlen(keys.stream()) == 0:
            return None
    raise AssertionError("no delivery")


def dead_job(queue: JobQueue, **submit):
    """A job whose handler crashed ``max_attempts`` times."""
    job = queue.submit("crash", {}, **submit)
    for _ in range(queue.max_attempts):
        ctx = claim(queue)
        queue.settle(ctx.job, "retry", {"code": "INTERNAL", "message": "boom"})
    assert queue.get(job.id).state is JobState.FAILED
    return job


def test_finished_jobs_expire_and_unfinished_ones_do_not(queue):
    queued = queue.submit("noop", {})
    assert queue.redis.pttl(keys.job(queued.id)) == -1
    ctx = queue.claim_next("w", 100)
    assert queue.redis.pttl(keys.job(queued.id)) == -1  # running: no TTL
    queue.settle(ctx.job, "succeeded", {})
    assert HOUR * 1000 - 5000 < queue.redis.pttl(keys.job(queued.id)) <= HOUR * 1000
    cancelled = queue.cancel(queue.submit("noop", {}).id)
    assert cancelled.state is JobState.CANCELLED and queue.redis.pttl(keys.job(cancelled.id)) > 0
    invalid = queue.submit("noop", {})
    queue.settle(claim(queue).job, "failed", {"code": "INVALID_ARGUMENT", "message": "bad"})
    assert 0 < queue.redis.pttl(keys.job(invalid.id)) <= HOUR * 1000 and queue.dead_letters() == []


def test_an_expired_job_leaves_the_listing(queue):
    job = queue.submit("noop", {})
    queue.settle(queue.claim_next("w", 100).job, "succeeded", {})
    queue.redis.delete(keys.job(job.id))  # as its TTL would
    assert queue.list() == ([], None)
    assert queue.redis.zcard(keys.job_index()) == 0


def test_a_dead_job_keeps_its_dead_letter_ttl_and_shards_expire_with_their_parent(queue):
    job = dead_job(queue, owner="alice")
    assert HOUR * 1000 < queue.redis.pttl(keys.job(job.id)) <= 2 * HOUR * 1000
    sharded = queue.submit("count", {}, shards=2, reduce_kind="add")
    first = queue.claim_next("w", 100)
    queue.settle(first.job, "succeeded", {"sum": 1})
    assert queue.redis.pttl(keys.job(first.job.id)) == -1  # lives as long as its parent, which is not finished
    for _ in range(2):
        queue.settle(queue.claim_next("w", 100).job, "retry", {"code": "INTERNAL", "message": "shard 1 crashed"})
    parent_ttl = queue.redis.pttl(keys.job(sharded.id))
    assert queue.get(sharded.id).state is JobState.FAILED and parent_ttl > HOUR * 1000
    # a shard takes its parent's TTL (read a moment apart: allow for the clock between the reads)
    assert all(0 < queue.redis.pttl(keys.job(s.id)) <= parent_ttl + 1000 for s in queue.shards(sharded))


def test_dead_letters_are_listed_newest_first_in_pages(queue):
    dead = [dead_job(queue, owner=f"user{i}") for i in range(5)]
    seen, token = [], None
    while True:
        page, token = queue.list_dead_letters(page_size=2, page_token=token)
        seen += page
        if token is None:
            break
    assert [d.job_id for d in seen] == [j.id for j in reversed(dead)]
    letter = seen[0]
    assert (letter.kind, letter.attempts, letter.failures, letter.worker, letter.owner) == ("crash", 2, 2, "w",
                                                                                              "user4")
    assert letter.error == {"code": "INTERNAL", "message": "boom"} and abs(letter.dead_time - time.time()) < 60
    with pytest.raises(ValueError, match="page_token"):
        queue.list_dead_letters(page_token="nonsense")
    with pytest.raises(ValueError, match="page_size"):
        queue.list_dead_letters(page_size=1001)


def test_old_dead_letters_are_trimmed(queue):
    queue.redis.xadd(keys.dead_letters(), {"job": "ancient", "kind": "x", "error": "{}"}, id="1000-0")
    job = dead_job(queue)
    assert [d.job_id for d in queue.list_dead_letters()[0]] == [job.id]


def test_retry_dead_letter_queues_it_again_with_a_fresh_budget(queue):
    job = dead_job(queue)
    queue.redis.hset(keys.job(job.id), "checkpoint", '{"images": 8}')
    retried = queue.retry_dead_letter(job.id)
    assert (retried.state, retried.failures, retried.error) == (JobState.QUEUED, 0, None)
    assert retried.checkpoint == {"images": 8}  # it resumes where it was
    assert queue.redis.pttl(keys.job(job.id)) == -1 and queue.list_dead_letters()[0] == []
    ctx = queue.claim_next("w", 100)
    assert ctx.job.id == job.id and ctx.job.attempt == 3  # the fence keeps counting
    assert queue.settle(ctx.job, "succeeded", {"ok": 1}) == "SUCCEEDED"
    with pytest.raises(ValueError, match="SUCCEEDED and not dead-lettered"):
        queue.retry_dead_letter(job.id)
    with pytest.raises(KeyError):
        queue.retry_dead_letter("nope")


def test_retry_refuses_a_job_that_failed_on_bad_input(queue):
    job = queue.submit("noop", {})
    queue.settle(queue.claim_next("w", 100).job, "failed", {"code": "INVALID_ARGUMENT", "message": "bad layer"})
    with pytest.raises(ValueError, match="FAILED and not dead-lettered"):
        queue.retry_dead_letter(job.id)


def test_retry_of_a_sharded_job_runs_only_its_unfinished_shards(queue):
    queue = JobQueue(queue.redis, max_attempts=1, heartbeat_ttl=1.0)
    job = queue.submit("count", {}, shards=3, reduce_kind="add")
    queue.settle(claim(queue).job, "succeeded", {"sum": 1})
    queue.settle(claim(queue).job, "retry", {"code": "INTERNAL", "message": "crash"})
    [letter] = queue.list_dead_letters()[0]
    assert (letter.job_id, letter.shard) == (job.id, 1)  # the letter names the job a client knows
    assert [s.state for s in queue.shards(job)] == [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    with pytest.raises(ValueError, match="retry that job"):
        queue.retry_dead_letter(f"{job.id}.shard1")
    assert queue.retry_dead_letter(job.id).state is JobState.QUEUED
    ran = []
    while (ctx := claim(queue)) is not None:
        ran.append(ctx.job.id)
        queue.settle(ctx.job, "succeeded", {"sum": 1})
    # shard 0 is kept, each of the others runs once (shard 2's old delivery included), then the reduction
    assert sorted(ran[:2]) == [f"{job.id}.shard1", f"{job.id}.shard2"] and ran[2:] == [job.id]
    assert queue.get(job.id).state is JobState.SUCCEEDED


def test_delete_removes_the_dead_letter(queue):
    job = dead_job(queue)
    queue.delete(job.id)
    assert queue.list_dead_letters()[0] == []


def test_checkpoints_are_fenced_by_the_attempt(queue):
    job = queue.submit("noop", {})
    first = queue.claim_next("first", 100)
    first.save_checkpoint({"images": 4})
    assert queue.get(job.id).checkpoint == {"images": 4}
    kill(queue, "first")
    second = queue.reclaim("second")
    assert second.checkpoint == {"images": 4}  # the next attempt starts from it
    with pytest.raises(JobLost):
        first.save_checkpoint({"images": 6})
    second.save_checkpoint({"images": 8})
    assert queue.get(job.id).checkpoint == {"images": 8}
    queue.settle(second.job, "succeeded", {})
    assert queue.get(job.id).checkpoint is None


def test_reclaim_waits_out_the_grace_after_a_heartbeat_vanishes(queue):
    """After an outage longer than the heartbeat TTL every heartbeat is gone: a live worker gets ``reclaim_grace``
    to beat again before its jobs are taken."""
    queue = JobQueue(queue.redis, heartbeat_ttl=1.0, reclaim_grace=0.3)
    job = queue.submit("noop", {})
    queue.beat("live")
    queue.claim_next("live", 100)
    kill(queue, "live")  # the outage outlasted the TTL
    assert queue.reclaim("other") is None  # suspect from now on
    queue.beat("live")  # back: the suspicion is dropped
    time.sleep(0.35)
    assert queue.reclaim("other") is None
    kill(queue, "live")  # now it really died
    assert queue.reclaim("other") is None
    time.sleep(0.35)
    taken = queue.reclaim("other")
    assert taken is not None and taken.job.id == job.id and taken.job.attempt == 2
