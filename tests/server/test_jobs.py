"""JobQueue against a real Redis: submit, get, list, cancel, delete, fencing, watch."""
from __future__ import annotations

import threading
import time

import pytest

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobExistsError, JobLost, JobQueue, JobState
from gigaudit_server.worker.loop import Worker


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=3, heartbeat_ttl=1.0)


def test_submit_then_get_round_trips_every_field(queue):
    job = queue.submit("noop", {"sleep": 0.5, "nested": {"a": [1, 2]}}, request_id="r-1")
    got = queue.get(job.id)
    assert got == job
    assert got.state is JobState.QUEUED and got.attempt == 0 and got.result is None and not got.finished
    assert queue.redis.xlen(keys.stream()) == 1


def test_get_unknown_job_raises_key_error(queue):
    with pytest.raises(KeyError, match="nope"):
        queue.get("nope")


@pytest.mark.parametrize("kwargs, message", [
    ({"shards": 0}, "shards"),
    ({"shards": 2}, "reduce_kind"),
    ({"job_id": "a:b"}, "job_id"),
])
def test_submit_rejects_bad_arguments(queue, kwargs, message):
    with pytest.raises(ValueError, match=message):
        queue.submit("noop", {}, **kwargs)


def test_submit_with_taken_job_id_is_refused(queue):
    queue.submit("noop", {}, job_id="mine")
    with pytest.raises(JobExistsError):
        queue.submit("noop", {}, job_id="mine")


def test_request_id_is_recorded_not_deduplicated(queue):
    """Idempotency is the API's (api.idempotency): the queue records the request id and queues every submit."""
    first = queue.submit("noop", {"x": 1}, request_id="req-42")
    again = queue.submit("noop", {"x": 1}, request_id="req-42")
    assert again.id != first.id and queue.get(first.id).request_id == "req-42"
    assert queue.redis.xlen(keys.stream()) == 2


def test_list_pages_newest_first_without_gaps_or_repeats(queue):
    made = [queue.submit("noop", {"i": i}).id for i in range(7)]
    seen, token = [], None
    while True:
        page, token = queue.list(page_size=3, page_token=token)
        assert len(page) <= 3
        seen += [j.id for j in page]
        if token is None:
            break
    assert seen == made[::-1]


def test_list_filters_by_state_and_validates_arguments(queue):
    a = queue.submit("noop", {})
    queue.submit("noop", {})
    queue.cancel(a.id)
    page, token = queue.list(filter_state="CANCELLED")
    assert [j.id for j in page] == [a.id] and token is None
    with pytest.raises(ValueError, match="QUEUED"):
        queue.list(filter_state="DONE")
    with pytest.raises(ValueError, match="page_token"):
        queue.list(page_token="garbage!")
    with pytest.raises(ValueError, match="page_size"):
        queue.list(page_size=-1)


def test_cancel_of_a_queued_job_ends_it_and_a_worker_skips_it(queue):
    job = queue.submit("noop", {})
    cancelled = queue.cancel(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.cancel_requested
    ran = []
    assert not Worker(queue, {"noop": lambda ctx: ran.append(1) or {}}).run_one(block_ms=100)
    assert ran == [] and queue.redis.xlen(keys.stream()) == 0


def test_delete_only_finished_jobs(queue):
    job = queue.submit("noop", {}, request_id="del-1")
    with pytest.raises(ValueError, match="QUEUED"):
        queue.delete(job.id)
    queue.cancel(job.id)
    queue.delete(job.id)
    with pytest.raises(KeyError):
        queue.get(job.id)
    assert queue.list() == ([], None)


def test_stale_attempt_cannot_write_progress_or_result(queue):
    queue = JobQueue(queue.redis, heartbeat_ttl=1.0, reclaim_grace=0)
    job = queue.submit("noop", {})
    queue.beat("first")
    first = queue.claim_next("first", 100)
    assert first.job.attempt == 1
    queue.redis.delete(keys.heartbeat("first"))  # "first" is presumed dead
    second = queue.reclaim("second")
    assert second is not None and second.job.attempt == 2
    second.progress("stage-b", 5, 10)
    with pytest.raises(JobLost):
        first.progress("stage-a", 9, 10)
    assert queue.settle(first.job, "succeeded", {"by": "first"}) == "stale"
    assert queue.get(job.id).stage == "stage-b" and queue.get(job.id).done == 5
    assert queue.settle(second.job, "succeeded", {"by": "second"}) == "SUCCEEDED"
    assert queue.get(job.id).result == {"by": "second"}
    assert queue.redis.xlen(keys.stream()) == 0  # acknowledged and removed once


def test_watch_yields_each_change_until_finished(queue):
    job = queue.submit("steps", {})

    def steps(ctx):
        for i in range(3):
            ctx.progress("count", i + 1, 3)
            time.sleep(0.1)
        return {"n": 3}

    worker = Worker(queue, {"steps": steps})
    thread = threading.Thread(target=worker.run_one)
    seen = []
    for update in queue.watch(job.id, timeout=10):
        if not seen:
            thread.start()
        seen.append((update.state, update.done))
    thread.join()
    assert seen[0] == (JobState.QUEUED, 0) and seen[-1][0] is JobState.SUCCEEDED
    running = [d for s, d in seen if s is JobState.RUNNING and d]
    assert running and running == sorted(set(running))  # every change once, in order (a burst may coalesce)
    assert queue.wait(job.id, timeout=0).result == {"n": 3}


def test_wait_returns_the_unfinished_job_at_timeout(queue):
    job = queue.submit("noop", {})
    start = time.monotonic()
    assert queue.wait(job.id, timeout=0.3).state is JobState.QUEUED
    assert 0.25 < time.monotonic() - start < 2
