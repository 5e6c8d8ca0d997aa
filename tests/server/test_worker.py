"""The worker loop against a real Redis: outcomes of handlers, cancellation, stopping, shards, long jobs."""
from __future__ import annotations

import threading
import time

import pytest
from worker_process import handlers, reducers

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.worker.loop import Worker


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=3, heartbeat_ttl=1.0)


def expected(n: int) -> dict:
    return {"sum": n * (n - 1) // 2, "count": n}


def test_run_one_runs_the_handler_and_stores_its_result(queue):
    job = queue.submit("count", {"n": 10})
    worker = Worker(queue, handlers, name="w1")
    assert worker.run_one(block_ms=100)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == expected(10)
    assert (done.attempt, done.failures, done.worker) == (1, 0, "w1")
    assert (done.stage, done.done, done.total) == ("count", 10, 10)
    assert not worker.run_one(block_ms=50)  # nothing left


def test_value_error_fails_at_once_as_invalid_argument(queue):
    def bad(ctx):
        raise ValueError("layer 'fc9' not found; valid: fc1, fc2")

    job = queue.submit("bad", {})
    Worker(queue, {"bad": bad}).run_one(block_ms=100)
    failed = queue.get(job.id)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert failed.error["code"] == "INVALID_ARGUMENT" and "fc9" in failed.error["message"]
    assert queue.dead_letters() == []


def test_always_crashing_handler_is_retried_then_dead_lettered(queue):
    calls = []

    def crash(ctx):
        calls.append(ctx.job.attempt)
        raise RuntimeError("CUDA out of memory (pretend)")

    job = queue.submit("crash", {})
    worker = Worker(queue, {"crash": crash})
    while worker.run_one(block_ms=100):
        pass
    failed = queue.get(job.id)
    assert calls == [1, 2, 3]
    assert failed.state is JobState.FAILED and failed.failures == 3
    assert failed.error["code"] == "INTERNAL" and "out of memory" in failed.error["message"]
    [dead] = queue.dead_letters()
    assert dead["job"] == job.id and dead["kind"] == "crash" and "out of memory" in dead["error"]
    assert queue.redis.xlen(keys.stream()) == 0


def test_unknown_kind_and_non_json_result_fail_the_job_not_the_worker(queue):
    unknown = queue.submit("nobody-handles-this", {})
    odd = queue.submit("odd", {})
    worker = Worker(queue, {"odd": lambda ctx: {"x": object()}})
    while worker.run_one(block_ms=100):
        pass
    assert queue.get(unknown.id).error["code"] == "INVALID_ARGUMENT"
    assert "odd" in queue.get(unknown.id).error["message"]  # names the kinds it knows
    assert queue.get(odd.id).state is JobState.FAILED and "JSON" in queue.get(odd.id).error["message"]


def test_cancel_stops_a_running_job_within_one_batch(queue):
    batches, cancelled_at = [], []

    def loop(ctx):
        for i in range(200):
            time.sleep(0.02)
            batches.append(i)
            ctx.progress("loop", i + 1, 200)
        return {}

    job = queue.submit("loop", {})
    thread = threading.Thread(target=Worker(queue, {"loop": loop}).run_one, kwargs={"block_ms": 100})
    thread.start()
    while len(batches) < 5:
        time.sleep(0.01)
    cancelled_at.append(len(batches))
    assert queue.cancel(job.id).cancel_requested
    thread.join(timeout=10)
    final = queue.get(job.id)
    assert final.state is JobState.CANCELLED
    assert len(batches) - cancelled_at[0] <= 1


def test_a_live_slow_worker_keeps_its_job_however_long_it_runs(queue):
    """No progress for 5 s (5 heartbeat TTLs): the entry is idle that long, yet nobody reclaims it. (A TTL of 1 s,
    not less: on a loaded machine a heartbeat thread can be late by a good part of a second.)"""
    queue = JobQueue(queue.redis, heartbeat_ttl=1.0)

    def silent(ctx):
        time.sleep(5.0)
        return {"by": "slow"}

    job = queue.submit("silent", {})
    slow = Worker(queue, {"silent": silent}, name="slow")
    thread = threading.Thread(target=slow.run_one, kwargs={"block_ms": 100})
    thread.start()
    deadline = time.monotonic() + 10
    while queue.get(job.id).worker != "slow":  # the slow worker claims it first; only then may others try
        assert time.monotonic() < deadline, "the slow worker never claimed the job"
        time.sleep(0.01)
    other = Worker(queue, {"silent": lambda ctx: {"by": "other"}}, name="other")
    max_idle = 0
    while thread.is_alive():
        assert not other.run_one(block_ms=100)
        pending = queue.redis.xpending_range(keys.stream(), keys.consumer_group(), "-", "+", 1)
        if pending:
            max_idle = max(max_idle, pending[0]["time_since_delivered"])
    done = queue.get(job.id)
    assert done.result == {"by": "slow"} and done.attempt == 1 and done.worker == "slow"
    assert max_idle > 4 * 1000  # ms: the delivery sat idle for many TTLs


@pytest.mark.parametrize("n_workers", [1, 2])
def test_sharded_job_gives_the_same_result_on_one_or_two_workers(queue, n_workers):
    job = queue.submit("count", {"n": 40, "delay": 0.01}, shards=4, reduce_kind="add")
    stop = threading.Event()
    workers = [Worker(queue, handlers, reducers, name=f"w{i}", poll_interval=0.05) for i in range(n_workers)]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    progress = [j.done for j in queue.watch(job.id, timeout=20)]
    stop.set()
    for t in threads:
        t.join()
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == expected(40)
    assert progress == sorted(progress) and done.done == 40 and done.total == 40  # parent progress = sum of shards
    shards = queue.shards(done)
    assert [s.result["count"] for s in shards] == [10, 10, 10, 10]
    if n_workers == 2:
        assert {s.worker for s in shards} == {"w0", "w1"}
    assert queue.list()[0] == [done]  # shards are not listed


def test_cancel_of_a_sharded_job_cancels_its_shards(queue):
    job = queue.submit("count", {"n": 4}, shards=2, reduce_kind="add")
    assert queue.cancel(job.id).state is JobState.CANCELLED
    assert [s.state for s in queue.shards(job)] == [JobState.CANCELLED] * 2
    assert not Worker(queue, handlers, reducers).run_one(block_ms=50)


def test_a_shard_that_fails_fails_the_parent_and_stops_the_siblings(queue):
    def picky(ctx):
        if ctx.shard_index == 1:
            raise ValueError("shard 1 has a corrupt image: cat/3.png")
        return {"sum": 0, "count": 0}

    job = queue.submit("picky", {}, shards=3, reduce_kind="add")
    worker = Worker(queue, {"picky": picky}, reducers)
    while worker.run_one(block_ms=50):
        pass
    parent = queue.get(job.id)
    assert parent.state is JobState.FAILED and "cat/3.png" in parent.error["message"]
    assert [s.state for s in queue.shards(job)] == [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
    assert queue.redis.xlen(keys.stream()) == 0  # no reduction was queued


def test_three_workers_run_each_of_thirty_jobs_exactly_once(queue):
    runs, lock = [], threading.Lock()

    def record(ctx):
        with lock:
            runs.append(ctx.job.id)
        return {"id": ctx.job.id}

    jobs = [queue.submit("record", {}) for _ in range(30)]
    stop = threading.Event()
    workers = [Worker(queue, {"record": record}, name=f"w{i}", poll_interval=0.05) for i in range(3)]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    finished = [queue.wait(job.id, timeout=20) for job in jobs]
    stop.set()
    for t in threads:
        t.join()
    assert sorted(runs) == sorted(job.id for job in jobs)
    assert all(j.state is JobState.SUCCEEDED and j.result == {"id": j.id} and j.attempt == 1 for j in finished)
    assert queue.redis.xlen(keys.stream()) == 0
    assert queue.redis.xinfo_groups(keys.stream())[0]["consumers"] == 0  # stopped workers retire their consumers
