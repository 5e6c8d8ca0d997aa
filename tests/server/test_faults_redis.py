"""Redis itself fails: a Redis with an append-only file is killed (SIGKILL) in the middle of jobs and restarted
on the same port and directory; a worker process and the API ride it out and no job is lost."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb

import api_harness as h
from private_redis import PrivateRedis
from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue, JobState

TTL = 1.0
WORKER_SCRIPT = Path(__file__).with_name("worker_process.py")


@pytest.fixture
def persistent_redis(tmp_path, monkeypatch):
    server = PrivateRedis(tmp_path)  # append-only: a restart keeps every key
    server.start()
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(keys, "PREFIX", prefix)
    monkeypatch.setenv("GIGAUDIT_KEY_PREFIX", prefix)
    yield server
    if server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=10)


def wait_until(predicate, timeout: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := predicate():
                return value
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def get_operation(channel, job_id: str):
    return lro_grpc.OperationsStub(channel).GetOperation(lro_pb.GetOperationRequest(name=f"operations/{job_id}"),
                                                         timeout=10)


@pytest.mark.slow
def test_a_redis_crash_mid_job_loses_no_job(persistent_redis, tmp_path):
    client = redis.Redis.from_url(persistent_redis.url, decode_responses=True)
    queue = JobQueue(client, max_attempts=3, heartbeat_ttl=TTL)
    singles = [queue.submit("count", {"n": 20, "delay": 0.05}) for _ in range(3)]
    sharded = queue.submit("count", {"n": 30, "delay": 0.02}, shards=3, reduce_kind="add")
    api = h.start_server(persistent_redis.url, f"file://{tmp_path}/store")
    worker = subprocess.Popen([sys.executable, str(WORKER_SCRIPT), persistent_redis.url, "survivor", str(TTL)])
    try:
        with h.channel(api) as channel:
            wait_until(lambda: queue.get(singles[0].id).done >= 3)  # the first job is running
            persistent_redis.crash()
            with pytest.raises(grpc.RpcError) as outage:
                get_operation(channel, singles[0].id)
            assert outage.value.code() == grpc.StatusCode.UNAVAILABLE  # a clear status, not INTERNAL
            time.sleep(2 * TTL)  # long enough for every heartbeat to lapse
            persistent_redis.start()
            assert worker.poll() is None  # the worker waited for Redis instead of dying
            late = queue.submit("count", {"n": 5})  # the queue works again at once
            jobs = [*singles, sharded, late]
            wait_until(lambda: all(queue.get(j.id).finished for j in jobs), timeout=60)
            done = {j.id: queue.get(j.id) for j in jobs}
            assert {j.state for j in done.values()} == {JobState.SUCCEEDED}
            assert [done[j.id].result for j in singles] == [{"sum": 190, "count": 20}] * 3
            assert done[sharded.id].result == {"sum": 435, "count": 30}
            assert done[late.id].result == {"sum": 10, "count": 5}
            assert get_operation(channel, singles[0].id).done  # the API reads the restored state
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        api.stop(0)
    assert client.xlen(keys.stream()) == 0 and client.xlen(keys.dead_letters()) == 0
    assert client.xpending(keys.stream(), keys.consumer_group())["pending"] == 0
