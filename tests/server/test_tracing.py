"""OpenTelemetry traces over real gRPC, a real Redis and a real worker thread, exported to the in-memory exporter:
one trace from the API's RPC span through the queue to the worker's job span, whose id is the operation's
``trace_id``; a client's ``traceparent`` is continued; failures mark spans ERROR; off by default."""
from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import api_harness as h
from api_harness import store  # noqa: F401 (fixture)
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit_server import keys
from gigaudit_server.config import Settings
from gigaudit_server.observability import tracing
from gigaudit_server.queue.jobs import JobQueue
from gigaudit_server.worker.loop import Worker

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans():
    """Tracing on, into an in-memory exporter (the list of finished spans); off again afterwards."""
    exporter = InMemorySpanExporter()
    tracing.setup("console", exporter=exporter, service_name="gigaudit-test")
    yield exporter
    tracing.shutdown()


@pytest.fixture
def traced_api(spans, redis_client, redis_url, store):
    """An API server (tracing on) and a real worker thread on the same Redis and store."""
    server = h.start_server(redis_url, store)
    thread, stop = h.start_worker(redis_url, store)
    with h.channel(server) as channel:
        yield channel
    stop.set()
    thread.join(10)
    server.stop(0)


def _submit_probe(channel, metadata=()) -> str:
    operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(
        probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(nanos=200_000_000)), metadata=metadata, timeout=30)
    done = h.wait_operation(channel, operation.name, timeout=60)
    assert not done.HasField("error"), done.error
    return done


def _trace_id_of(operation) -> str:
    metadata = metadata_pb.OperationMetadata()
    operation.metadata.Unpack(metadata)
    return metadata.trace_id


def _hex(span, what="trace_id") -> str:
    return format(getattr(span.context, what), "032x" if what == "trace_id" else "016x")


def test_one_trace_spans_the_rpc_and_the_workers_job(traced_api, spans):
    operation = _submit_probe(traced_api)
    finished = spans.get_finished_spans()
    submit = next(s for s in finished if s.name == "gigaudit.v1.ProbeService/SubmitProbe")
    job = next(s for s in finished if s.name == "job noop")

    assert submit.kind is SpanKind.SERVER and submit.parent is None  # the client sent no trace context
    assert submit.attributes["rpc.system"] == "grpc" and submit.attributes["rpc.method"] == "SubmitProbe"
    assert submit.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert submit.status.status_code is StatusCode.UNSET
    # the worker's span continues the trace of the request that submitted the job, as its child
    assert job.kind is SpanKind.CONSUMER
    assert _hex(job) == _hex(submit)
    assert job.parent.span_id == submit.context.span_id
    assert job.attributes["gigaudit.job.id"] == operation.name.split("/", 1)[1]
    assert job.attributes["gigaudit.job.attempt"] == 1 and job.attributes["gigaudit.worker"] == "test-worker"
    assert job.status.status_code is StatusCode.UNSET
    assert job.resource.attributes["service.name"] == "gigaudit-test"
    # the operation's metadata names the trace
    assert _trace_id_of(operation) == _hex(submit)
    waits = [s for s in finished if s.name == "google.longrunning.Operations/WaitOperation"]
    assert waits and all(_hex(s) != _hex(submit) for s in waits)  # other RPCs: traces of their own


def test_a_clients_traceparent_is_continued(traced_api, spans):
    operation = _submit_probe(traced_api, metadata=(("traceparent", CLIENT_TRACEPARENT),))
    finished = spans.get_finished_spans()
    submit = next(s for s in finished if s.name == "gigaudit.v1.ProbeService/SubmitProbe")
    job = next(s for s in finished if s.name == "job noop")
    assert _hex(submit) == _hex(job) == _trace_id_of(operation) == CLIENT_TRACE
    assert submit.parent.span_id == 0x00f067aa0ba902b7 and submit.parent.is_remote


def test_a_refused_call_is_an_error_span_with_its_code(traced_api, spans):
    h.refused(lambda: probe_grpc.ProbeServiceStub(traced_api).SubmitProbe(
        probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(seconds=3600)), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT)
    h.refused(lambda: lro_grpc.OperationsStub(traced_api).GetOperation(
        lro_pb.GetOperationRequest(name="operations/nope"), timeout=10), grpc.StatusCode.NOT_FOUND)
    finished = {s.name: s for s in spans.get_finished_spans()}
    invalid = finished["gigaudit.v1.ProbeService/SubmitProbe"]
    assert invalid.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert invalid.status.status_code is StatusCode.ERROR and "INVALID_ARGUMENT" in invalid.status.description
    assert finished["google.longrunning.Operations/GetOperation"].attributes["rpc.grpc.status_code"] == \
        grpc.StatusCode.NOT_FOUND.value[0]
    assert not any(name.startswith("grpc.health") for name in finished)  # probes are not traced


def test_a_failing_handler_marks_its_job_span_error(spans, redis_client):
    queue = JobQueue(redis_client, max_attempts=1)

    def broken(ctx):
        raise ZeroDivisionError("the handler broke")

    worker = Worker(queue, {"broken": broken, "fine": lambda ctx: {}}, name="w-trace")
    traceparent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    failed = queue.submit("broken", {}, trace=traceparent)
    fine = queue.submit("fine", {})  # submitted outside any span: the job span starts a trace of its own
    assert worker.run_one(block_ms=2000) and worker.run_one(block_ms=2000)
    assert queue.get(failed.id).state.value == "FAILED"
    by_job = {s.attributes["gigaudit.job.id"]: s for s in spans.get_finished_spans()}
    broken_span = by_job[failed.id]
    assert broken_span.status.status_code is StatusCode.ERROR
    assert [e.name for e in broken_span.events] == ["exception"]
    assert _hex(broken_span) == "ab" * 16 and broken_span.parent.span_id == int("cd" * 8, 16)
    assert by_job[fine.id].parent is None and by_job[fine.id].status.status_code is StatusCode.UNSET


def test_the_trace_travels_with_the_job_and_its_shards(redis_client):
    queue = JobQueue(redis_client)
    job = queue.submit("audit", {}, shards=2, reduce_kind="merge", trace=CLIENT_TRACEPARENT)
    assert queue.get(job.id).trace == CLIENT_TRACEPARENT
    assert [shard.trace for shard in queue.shards(queue.get(job.id))] == [CLIENT_TRACEPARENT] * 2
    assert queue.get(queue.submit("noop", {}).id).trace is None


def test_tracing_is_off_by_default(redis_client, redis_url, store):
    assert Settings().tracing == "off" and not tracing.enabled()
    assert tracing.current_traceparent() is None
    server = h.start_server(redis_url, store)
    try:
        with h.channel(server) as channel:
            operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest(), timeout=10)
        assert _trace_id_of(operation) == ""
        assert redis_client.hget(keys.job(operation.name.split("/")[1]), "trace") == ""  # stored empty
    finally:
        server.stop(0)


def test_settings_and_flags_choose_the_exporter(redis_client, redis_url, store):
    with pytest.raises(ValueError, match="tracing must be one of off, console, otlp"):
        tracing.setup("jaeger")
    with pytest.raises(ValueError):
        Settings(tracing="jaeger")
    from gigaudit_server.worker.main import parse_args

    args = parse_args(["--redis-url", redis_url, "--store", store, "--tracing", "otlp",
                       "--otlp-endpoint", "http://collector:4317"])
    assert (args.tracing, args.otlp_endpoint) == ("otlp", "http://collector:4317")
    with pytest.raises(SystemExit):
        parse_args(["--redis-url", redis_url, "--store", store, "--tracing", "jaeger"])
    # the API server sets up the exporter its settings name, and turns it off when it stops
    server = h.start_server(redis_url, store, tracing="otlp", otlp_endpoint="http://127.0.0.1:1")
    try:
        assert tracing.enabled()
    finally:
        server.stop(0)
    assert not tracing.enabled()


def test_trace_id_of_a_traceparent():
    assert tracing.trace_id(CLIENT_TRACEPARENT) == CLIENT_TRACE
    assert tracing.trace_id(None) == tracing.trace_id("") == tracing.trace_id("00-xyz-01") == ""
