"""Queue-level faults with real processes: workers killed (SIGKILL) or stopped (SIGTERM) mid-job or mid-reduce."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_process import handlers, reducers

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.worker.loop import Worker

TTL = 1.0
WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=3, heartbeat_ttl=TTL)


@pytest.fixture
def spawn(redis_url):
    """Start worker processes (``worker_process.py``); any still running at the end are killed."""
    started = []

    def start(name: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(WORKER_SCRIPT), redis_url, name, str(TTL)])
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_until(predicate, timeout: float = 15.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)
    return value


def run_until_claimed(worker: Worker, timeout: float = 15.0) -> float:
    """Let ``worker`` run jobs until it has run one; the seconds it took."""
    start = time.monotonic()
    wait_until(lambda: worker.run_one(block_ms=100), timeout, every=0)
    return time.monotonic() - start


def test_killed_worker_job_is_reclaimed_after_its_heartbeat_expires(queue, spawn):
    job = queue.submit("count", {"n": 40, "delay": 0.05})
    victim = spawn("victim")
    wait_until(lambda: queue.get(job.id).done >= 3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at, rerun_at = time.monotonic(), []

    def count(ctx):
        rerun_at.append(time.monotonic())
        return handlers["count"](ctx)

    run_until_claimed(Worker(queue, {"count": count}, name="rescuer"))
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == {"sum": 780, "count": 40}
    assert (done.worker, done.attempt, done.failures) == ("rescuer", 2, 1)
    # reclaimed once the heartbeat (refreshed every TTL/3) expired, not before and not much later
    assert TTL * 2 / 3 - 0.1 < rerun_at[0] - killed_at < TTL + 1.0
    assert queue.redis.xlen(keys.stream()) == 0
    assert queue.redis.xpending(keys.stream(), keys.consumer_group())["pending"] == 0


def test_sigterm_hands_the_running_job_back_and_another_worker_completes_it(queue, spawn):
    job = queue.submit("count", {"n": 60, "delay": 0.02})
    stopping = spawn("stopping")
    wait_until(lambda: queue.get(job.id).done >= 3)
    stopping.send_signal(signal.SIGTERM)
    assert stopping.wait(timeout=10) == 0
    handed_back = queue.get(job.id)
    assert handed_back.state is JobState.QUEUED and (handed_back.attempt, handed_back.failures) == (1, 0)
    assert not queue.redis.exists(keys.heartbeat("stopping"))
    taker = Worker(queue, handlers, name="taker")
    assert taker.run_one(block_ms=1000)  # at once: no heartbeat expiry to wait for
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == {"sum": 1770, "count": 60}
    assert (done.worker, done.attempt, done.failures) == ("taker", 2, 0)


def test_worker_killed_during_the_reduce_loses_nothing(queue, spawn):
    job = queue.submit("count", {"n": 30, "reduce_delay": 30.0}, shards=3, reduce_kind="add")
    reducer = spawn("reducer")
    wait_until(lambda: (j := queue.get(job.id)).stage == "reduce" and j.worker == "reducer")
    reducer.send_signal(signal.SIGKILL)
    reducer.wait()
    shard_results = [s.result for s in queue.shards(job)]
    run_until_claimed(Worker(queue, handlers, reducers, name="second"))
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.result == {"sum": 435, "count": 30}
    assert (done.worker, done.attempt, done.failures) == ("second", 2, 1)
    assert [s.result for s in queue.shards(job)] == shard_results  # the shards were not run again
    assert queue.redis.xlen(keys.stream()) == 0


def test_a_job_whose_workers_keep_dying_is_dead_lettered(queue):
    queue = JobQueue(queue.redis, max_attempts=2, heartbeat_ttl=TTL, reclaim_grace=0)
    job = queue.submit("count", {"n": 1})
    assert queue.claim_next("first", 100).job.attempt == 1
    queue.redis.delete(keys.heartbeat("first"))  # dies
    assert queue.reclaim("second").job.attempt == 2
    queue.redis.delete(keys.heartbeat("second"))  # dies too
    assert queue.reclaim("third") is None
    failed = queue.get(job.id)
    assert failed.state is JobState.FAILED and failed.failures == 2 and "stopped responding" in failed.error["message"]
    assert [d["job"] for d in queue.dead_letters()] == [job.id]
    assert queue.redis.xlen(keys.stream()) == 0


def test_reclaim_leaves_a_live_workers_deliveries_alone(queue):
    job = queue.submit("count", {"n": 1})
    queue.beat("alive")
    assert queue.claim_next("alive", 100) is not None
    assert queue.reclaim("other") is None
    assert queue.get(job.id).worker == "alive"


def test_a_restarted_worker_of_the_same_name_recovers_its_orphaned_delivery(queue):
    job = queue.submit("count", {"n": 5})
    queue.beat("pod-0")
    assert queue.claim_next("pod-0", 100) is not None  # ...and the process dies; its heartbeat is still fresh
    restarted = Worker(queue, handlers, name="pod-0")
    assert restarted.run_one(block_ms=100)
    done = queue.get(job.id)
    assert done.state is JobState.SUCCEEDED and (done.attempt, done.failures) == (2, 1)
