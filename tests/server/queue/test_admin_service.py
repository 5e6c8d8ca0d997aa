"""AdminService over real gRPC (loopback server, real Redis): dead letters listed in pages and retried."""
from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2

import api_harness as h
from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit_server.queue.jobs import JobQueue, JobState


@pytest.fixture
def admin(redis_client, redis_url, tmp_path):
    server = h.start_server(redis_url, f"file://{tmp_path}/store")
    with h.channel(server) as channel:
        yield admin_grpc.AdminServiceStub(channel), server.backend.queue
    server.stop(0)


def make_dead(queue: JobQueue, owner: str) -> str:
    queue = JobQueue(queue.redis, max_attempts=1)
    job = queue.submit("audit", {}, owner=owner)
    ctx = None
    while ctx is None:
        ctx = queue.claim_next("gpu-0", 100)
    queue.settle(ctx.job, "retry", {"code": "INTERNAL", "message": "CUDA error: an illegal memory access"})
    return job.id


def test_list_and_retry_dead_letters(admin):
    stub, queue = admin
    ids = [make_dead(queue, f"user{i}") for i in range(3)]
    first = stub.ListDeadLetters(admin_pb.ListDeadLettersRequest(page_size=2), timeout=10)
    second = stub.ListDeadLetters(admin_pb.ListDeadLettersRequest(page_size=2, page_token=first.next_page_token),
                                  timeout=10)
    letters = [*first.dead_letters, *second.dead_letters]
    assert [d.operation for d in letters] == [f"operations/{i}" for i in reversed(ids)] and not second.next_page_token
    top = letters[0]
    assert (top.kind, top.attempts, top.worker, top.owner) == ("audit", 1, "gpu-0", "user2")
    assert top.error.code == code_pb2.INTERNAL and "illegal memory access" in top.error.message
    assert top.dead_time.seconds > 0

    operation = stub.RetryDeadLetter(admin_pb.RetryDeadLetterRequest(operation=f"operations/{ids[0]}"), timeout=10)
    assert operation.name == f"operations/{ids[0]}" and not operation.done
    assert queue.get(ids[0]).state is JobState.QUEUED
    assert len(stub.ListDeadLetters(admin_pb.ListDeadLettersRequest(), timeout=10).dead_letters) == 2
    refused = h.refused(lambda: stub.RetryDeadLetter(admin_pb.RetryDeadLetterRequest(
        operation=f"operations/{ids[0]}"), timeout=10), grpc.StatusCode.FAILED_PRECONDITION)
    assert "not dead-lettered" in refused.details()
    h.refused(lambda: stub.RetryDeadLetter(admin_pb.RetryDeadLetterRequest(operation="operations/nope"), timeout=10),
              grpc.StatusCode.NOT_FOUND)
    h.refused(lambda: stub.RetryDeadLetter(admin_pb.RetryDeadLetterRequest(operation="jobs/x"), timeout=10),
              grpc.StatusCode.INVALID_ARGUMENT)
    h.refused(lambda: stub.ListDeadLetters(admin_pb.ListDeadLettersRequest(page_token="zzz"), timeout=10),
              grpc.StatusCode.INVALID_ARGUMENT)
