"""The worker against failures: Redis outages (a private redis-server stopped with SIGSTOP), hung handlers, errors
that no retry can fix, and ``on_finished``."""
from __future__ import annotations

import errno
import threading
import time
import uuid

import pytest
import redis
from private_redis import PrivateRedis  # noqa: E402

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.loop import Worker

TTL = 1.0


@pytest.fixture
def private_redis(tmp_path, monkeypatch):
    server = PrivateRedis(tmp_path)
    server.start()
    prefix = f"resilience-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(keys, "PREFIX", prefix)
    monkeypatch.setenv("GIGAUDIT_KEY_PREFIX", prefix)
    yield server
    server.close()


@pytest.fixture
def queue(redis_client):
    return JobQueue(redis_client, max_attempts=3, heartbeat_ttl=TTL)


def client_of(server: PrivateRedis) -> redis.Redis:
    # a socket timeout: calls to a stopped server fail after 0.3 s instead of hanging (as in worker.main)
    return redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=0.3, socket_connect_timeout=0.3)


def run_in_thread(worker: Worker) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


def test_three_redis_outages_during_one_job_do_not_fail_it(private_redis):
    """Three 2-s outages (twice the heartbeat TTL) while a job runs, a second worker waiting for work meanwhile:
    the job ends SUCCEEDED on its first attempt, every batch computed once, some of them during the outages."""
    batches, lock = [], threading.Lock()

    def count(ctx):
        for i in range(80):
            time.sleep(0.1)
            with lock:
                batches.append((i, time.monotonic()))
            ctx.progress("count", i + 1, 80)
        return {"n": len(batches)}

    queue = JobQueue(client_of(private_redis), heartbeat_ttl=TTL)
    job = queue.submit("count", {})
    runner = Worker(JobQueue(client_of(private_redis), heartbeat_ttl=TTL), {"count": count}, name="runner",
                    poll_interval=0.1, redis_retry_s=30)
    idle = Worker(JobQueue(client_of(private_redis), heartbeat_ttl=TTL), {"count": count}, name="idle",
                  poll_interval=0.1, redis_retry_s=30)
    threads = [run_in_thread(runner)]
    while queue.get(job.id).state is not JobState.RUNNING:
        time.sleep(0.02)
    threads.append(run_in_thread(idle))
    outages = []
    for _ in range(3):
        time.sleep(0.6)
        start = time.monotonic()
        private_redis.stop()
        time.sleep(2.0)
        private_redis.resume()
        outages.append((start, time.monotonic()))
    done = queue.wait(job.id, timeout=30)
    for thread, stop in threads:
        stop.set()
        thread.join(10)
    assert done.state is JobState.SUCCEEDED, done.error
    assert (done.attempt, done.failures, done.worker) == (1, 0, "runner")
    assert [i for i, _ in batches] == list(range(80)) and done.result == {"n": 80}
    during = [t for _, t in batches if any(a + 0.5 < t < b for a, b in outages)]
    assert len(during) >= 3 * 10, len(during)  # the handler kept computing while Redis was away
    assert queue.redis.xlen(keys.dead_letters()) == 0


def test_an_outage_longer_than_the_window_gives_the_attempt_up_and_the_job_resumes(private_redis):
    seen = []

    def steps(ctx):
        start = (ctx.checkpoint or {}).get("done", 0)
        seen.append(start)
        for i in range(start, 60):
            time.sleep(0.05)
            ctx.progress("steps", i + 1, 60)
            ctx.save_checkpoint({"done": i + 1})
        return {"from": start}

    queue = JobQueue(client_of(private_redis), heartbeat_ttl=TTL)
    job = queue.submit("steps", {})
    worker = Worker(JobQueue(client_of(private_redis), heartbeat_ttl=TTL), {"steps": steps}, name="short",
                    poll_interval=0.1, redis_retry_s=1.0)
    thread, stop = run_in_thread(worker)
    while queue.get(job.id).done < 5:
        time.sleep(0.02)
    private_redis.stop()
    time.sleep(2.5)
    private_redis.resume()
    done = queue.wait(job.id, timeout=30)
    stop.set()
    thread.join(10)
    assert thread.is_alive() is False
    assert done.state is JobState.SUCCEEDED and done.attempt == 2 and done.failures == 1
    assert seen[0] == 0 and seen[1] >= 5 and done.result == {"from": seen[1]}  # resumed from its checkpoint


def test_a_hung_handler_is_failed_dead_lettered_and_fenced_off(queue):
    released, finished = threading.Event(), []

    def hang(ctx):
        ctx.progress("start", 0, 1)
        released.wait(10)
        ctx.progress("late", 1, 1)  # refused: the attempt is fenced off
        return {"late": True}

    job = queue.submit("hang", {}, owner="alice")
    worker = Worker(queue, {"hang": hang}, name="stuck", stall_timeout_s=0.6, on_finished=finished.append)
    thread = threading.Thread(target=worker.run_one, kwargs={"block_ms": 100})
    thread.start()
    failed = queue.wait(job.id, timeout=10)
    released.set()
    thread.join(10)
    assert failed.state is JobState.FAILED and failed.error["code"] == "DEADLINE_EXCEEDED"
    assert "no progress" in failed.error["message"]
    [letter] = queue.list_dead_letters()[0]
    assert (letter.job_id, letter.owner, letter.worker) == (job.id, "alice", "stuck")
    after = queue.get(job.id)
    assert after.state is JobState.FAILED and after.result is None and after.stage == "start"
    assert [j.id for j in finished] == [job.id] and finished[0].state is JobState.FAILED


def test_a_read_only_store_fails_at_once_without_server_paths(queue, tmp_path, monkeypatch):
    store = ArtifactStore(f"file://{tmp_path}/store")

    def refuse(*args, **kwargs):  # what a read-only mount answers
        raise OSError(errno.EROFS, "Read-only file system", f"{tmp_path}/store/graphs/ab/tmp")

    monkeypatch.setattr(store.fs, "open", refuse)  # fsspec shares one instance: undone after the test

    def write(ctx):
        store.put_bytes("graphs", b"{}")
        return {}

    job = queue.submit("write", {})
    Worker(queue, {"write": write}).run_one(block_ms=200)
    failed = queue.get(job.id)
    assert failed.state is JobState.FAILED and (failed.attempt, failed.failures) == (1, 0)  # no retry
    assert failed.error["code"] == "FAILED_PRECONDITION" and "read-only" in failed.error["message"]
    assert str(tmp_path) not in str(failed.error) and queue.dead_letters() == []


def test_a_missing_artifact_fails_at_once_and_paths_leave_messages(queue, tmp_path):
    from gigaudit_server.worker.tasks import Tasks

    tasks = Tasks(ArtifactStore(f"file://{tmp_path}/store"))
    model = {"name": "m", "architecture": "partsnet", "num_classes": 6, "input_size": 32, "mean": [0.0] * 3,
             "std": [1.0] * 3, "weights_sha256": "a" * 64}
    missing = queue.submit("validate_model", {"model": model})

    def crash(ctx):
        raise RuntimeError(f"cannot map {tmp_path}/store/weights/aa/{'a' * 64} (file:///srv/gigaudit/x)")

    crashing = queue.submit("crash", {})
    worker = Worker(queue, {**tasks.handlers(), "crash": crash})
    while worker.run_one(block_ms=100):
        pass
    failed = queue.get(missing.id)
    assert failed.state is JobState.FAILED and failed.attempt == 1
    assert failed.error["code"] == "FAILED_PRECONDITION" and "a" * 64 in failed.error["message"]
    internal = queue.get(crashing.id)
    assert internal.error["code"] == "INTERNAL" and internal.failures == 3
    assert internal.error["message"] == "RuntimeError: cannot map <path> (<path>)"


def test_on_finished_gets_every_top_level_job_this_worker_ends(queue):
    finished = []

    def listener(job):
        finished.append((job.id, job.state))
        raise RuntimeError("a listener's own bug")  # logged; the worker goes on

    def ok(ctx):
        ctx.progress("x", 1, 1)
        return {"sum": 1, "count": 1}

    def cancel_me(ctx):
        queue.cancel(ctx.job.id)
        ctx.progress("x", 1, 2)
        return {}

    done = queue.submit("ok", {})
    bad = queue.submit("bad", {})
    cancelled = queue.submit("cancel_me", {})
    sharded = queue.submit("ok", {}, shards=2, reduce_kind="add")
    worker = Worker(queue, {"ok": ok, "cancel_me": cancel_me}, {"add": lambda job, rs: {"n": len(rs)}},
                    on_finished=listener)
    while worker.run_one(block_ms=100):
        pass
    assert finished == [(done.id, JobState.SUCCEEDED), (bad.id, JobState.FAILED),
                        (cancelled.id, JobState.CANCELLED), (sharded.id, JobState.SUCCEEDED)]  # no shard
