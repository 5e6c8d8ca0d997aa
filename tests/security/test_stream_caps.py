"""Server streams (WatchOperation) cannot take every RPC thread: health checks and unary calls still answer."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import api_harness as h
from api_harness import store  # noqa: F401  (fixture)
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc


def test_watch_streams_are_capped_and_health_answers_while_they_hold_their_threads(redis_client, redis_url, store):
    server = h.start_server(redis_url, store, max_workers=4)  # watches: at most 4 // 4 = 1
    try:
        with h.channel(server) as channel:
            operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest())  # no worker
            audits = audit_grpc.AuditServiceStub(channel)
            def watch():
                return audits.WatchOperation(audit_pb.WatchOperationRequest(name=operation.name), timeout=30)

            held = [watch()]
            assert next(held[0]).name == operation.name  # the first stream runs and holds its thread
            held += [watch(), watch()]
            refused = []
            for stream in held[1:]:
                try:
                    next(stream)
                except grpc.RpcError as exc:
                    refused.append(exc.code())
            assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
            held[0].cancel()
    finally:
        server.stop(0)
