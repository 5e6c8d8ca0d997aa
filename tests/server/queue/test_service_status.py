"""The status view: queue counts and worker states on a real Redis, and AdminService.GetStatus over real gRPC
against a live server and worker while a job runs (admins only)."""
from __future__ import annotations

import secrets
import time

import grpc
import pytest

import api_harness as h
from api_harness import server, store, worker  # noqa: F401 (fixtures)
from gigaudit import AuditClient
from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit_server import keys
from gigaudit_server.api import auth
from gigaudit_server.queue.jobs import JobQueue, JobState
from gigaudit_server.worker.loop import Worker


def claim(queue: JobQueue, worker: str):
    context = None
    for _ in range(50):
        context = queue.claim_next(worker, 100)
        if context is not None:
            return context
    raise AssertionError("nothing to claim")


def test_queue_counts_jobs_once_and_lag_and_pending_per_delivery(redis_client):
    queue = JobQueue(redis_client)
    plain = queue.submit("noop", {})
    sharded = queue.submit("count", {}, shards=3, reduce_kind="sum")
    queue.submit("noop", {}, listed=False)  # internal jobs are work too
    cancelled = queue.submit("noop", {})
    queue.cancel(cancelled.id)  # its entry stays until a worker drops it: lag, but not queued
    counts = queue.queue_status()
    assert (counts.queued, counts.running, counts.lag, counts.pending, counts.dead_letters) == (3, 0, 6, 0, 0)

    first = claim(queue, "w1")  # the plain job
    second = claim(queue, "w2")  # shard 0: its parent runs
    assert (first.job.id, second.job.parent) == (plain.id, sharded.id)
    counts = queue.queue_status()
    assert (counts.queued, counts.running, counts.lag, counts.pending) == (1, 2, 4, 2)
    # where Redis cannot tell the lag (before 7, or after some deletions), it is counted in the same scan
    redis_group = queue._group()
    queue._group = lambda: {k: v for k, v in redis_group.items() if k != "lag"}
    assert queue.queue_status().lag == 4

    queue.settle(first.job, "succeeded", {})
    counts = JobQueue(redis_client).queue_status()
    assert (counts.queued, counts.running, counts.pending) == (1, 1, 1)
    dead = JobQueue(redis_client, max_attempts=1)
    dead.settle(second.job, "retry", {"code": "INTERNAL", "message": "CUDA error"})  # the whole job fails
    counts = dead.queue_status()
    assert (counts.running, counts.pending, counts.dead_letters) == (0, 0, 1)


def test_worker_states_show_live_workers_their_job_and_dead_holders(redis_client):
    queue = JobQueue(redis_client, heartbeat_ttl=5)
    assert queue.worker_states() == []
    job = queue.submit("count", {}, shards=2, reduce_kind="sum")
    context = claim(queue, "gpu-1")
    queue.beat("gpu-1", {"device": "cuda:1", "operation": context.job.id, "started": repr(time.time())})
    queue.report_progress(context.job, "extract", 3, 8)
    gone = claim(queue, "crashed")  # claimed, then its process died: no heartbeat, no status
    redis_client.delete(keys.heartbeat("crashed"))
    queue.beat("idle-cpu", {"device": "cpu", "operation": "", "started": ""})  # listed before it ever reads
    queue.beat("stale", {"device": "cpu", "operation": job.id, "started": "1"})  # its job is not its own
    queue.beat("vanished", {"device": "cpu", "operation": "", "started": ""})
    redis_client.delete(keys.heartbeat("vanished"))  # died between jobs: nothing to show, nothing to reclaim

    states = {w.name: w for w in queue.worker_states()}
    assert sorted(states) == ["crashed", "gpu-1", "idle-cpu", "stale"]
    assert redis_client.zscore(keys.workers(), "vanished") is None  # pruned
    busy = states["gpu-1"]
    assert (busy.device, busy.alive, busy.job_id, busy.stage, busy.done, busy.total, busy.pending) == \
        ("cuda:1", True, job.id, "extract", 3, 8, 1)  # a shard shows as its parent's job
    assert abs(busy.heartbeat_time - time.time()) < 5
    dead = states["crashed"]
    assert (dead.alive, dead.job_id, dead.heartbeat_time, dead.pending) == (False, job.id, None, 1)
    assert gone.job.shard_index == 1
    redis_client.delete(keys.heartbeat("gpu-1"), keys.worker_info("gpu-1"))  # dies too: its last beat is kept
    lost = {w.name: w for w in queue.worker_states()}["gpu-1"]
    assert (lost.alive, lost.device, lost.job_id, lost.stage) == (False, "", job.id, "extract")
    assert abs(lost.heartbeat_time - busy.heartbeat_time) < 0.01
    queue.beat("gpu-1", {"device": "cuda:1", "operation": context.job.id, "started": "1"})
    assert (states["idle-cpu"].job_id, states["idle-cpu"].alive) == ("", True)
    assert states["stale"].job_id == "" and states["stale"].stage == ""
    assert redis_client.pttl(keys.worker_info("gpu-1")) <= 5000

    queue.retire("idle-cpu")  # a stopping worker vanishes from the view at once
    assert not redis_client.exists(keys.worker_info("idle-cpu"))
    assert "idle-cpu" not in {w.name for w in queue.worker_states()}


def test_a_worker_publishes_its_device_and_job_while_it_runs_one(redis_client):
    queue = JobQueue(redis_client)
    seen = []

    def record(ctx):
        ctx.progress("step", 1, 2)
        seen.append(redis_client.hgetall(keys.worker_info("w-cuda")))
        return {}

    job = queue.submit("record", {})
    worker = Worker(queue, {"record": record}, name="w-cuda", device="cuda:3")
    assert worker.run_one(block_ms=500)
    assert seen[0]["device"] == "cuda:3" and seen[0]["operation"] == job.id and float(seen[0]["started"]) > 0
    after = redis_client.hgetall(keys.worker_info("w-cuda"))
    assert (after["operation"], after["started"], after["device"]) == ("", "", "cuda:3")


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_get_status_lists_the_worker_with_its_job_and_stage(server, worker):  # noqa: F811
    with h.channel(server) as channel, AuditClient(f"127.0.0.1:{server.port}") as client:
        admin = admin_grpc.AdminServiceStub(channel)
        op = client.probe(sleep=20)

        def running():
            status = admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10)
            found = [w for w in status.workers if w.operation == op.name and w.done > 0]
            return (status, found[0]) if found else None

        status, mine = wait_for(running, "the worker to report its job")
        assert (mine.name, mine.device, mine.alive, mine.stage, mine.total) == ("test-worker", "cpu", True,
                                                                                "sleep", 200)
        assert abs(mine.heartbeat_time.ToDatetime().timestamp() - time.time()) < 10
        assert (status.queue.running, status.queue.queued, status.queue.pending, status.dead_letters) == (1, 0, 1, 0)

        client.cancel_operation(op.name)
        idle = wait_for(lambda: [w for w in admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10).workers
                                 if w.name == "test-worker" and not w.operation], "the worker to be idle")
        assert idle[0].stage == "" and idle[0].done == 0
        assert server.backend.queue.get(op.name.split("/")[1]).state is JobState.CANCELLED


def test_get_status_is_for_admins_only(redis_client, redis_url, store, tmp_path):  # noqa: F811
    admin_token, auditor_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops admin {auth.hash_token(admin_token)}\nalice auditor {auth.hash_token(auditor_token)}\n")
    server = h.start_server(redis_url, store, auth_tokens_file=str(tokens))  # noqa: F811
    try:
        with h.channel(server) as channel:
            admin = admin_grpc.AdminServiceStub(channel)
            refused = h.refused(lambda: admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10, metadata=(
                ("authorization", f"Bearer {auditor_token}"),)), grpc.StatusCode.PERMISSION_DENIED)
            assert "admin" in refused.details()
            h.refused(lambda: admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10),
                      grpc.StatusCode.UNAUTHENTICATED)
            status = admin.GetStatus(admin_pb.GetStatusRequest(), timeout=10,
                                     metadata=(("authorization", f"Bearer {admin_token}"),))
            assert status.queue.queued == 0 and not status.workers
    finally:
        server.stop(0)


@pytest.mark.parametrize("missing", ["stream", "group"])
def test_status_without_a_stream_or_group_is_empty(redis_client, missing):
    queue = JobQueue(redis_client)
    if missing == "stream":
        redis_client.delete(keys.stream())
    else:
        redis_client.xgroup_destroy(keys.stream(), keys.consumer_group())
    counts = queue.queue_status()
    assert (counts.queued, counts.running, counts.lag, counts.pending) == (0, 0, 0, 0)
    assert queue.worker_states() == []
