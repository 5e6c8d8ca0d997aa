"""Bad-input fuzzing (hypothesis) of the request and upload parsers: every answer is a clear status, never
INTERNAL or UNKNOWN, and the server keeps serving. Requests are built field by field from the proto descriptors."""
from __future__ import annotations

import io
import tarfile

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api_harness as h
from gigaudit.v1 import audit_service_pb2, dataset_service_pb2, model_service_pb2, probe_service_pb2
from gigaudit_server.storage import archives as datasets
from gigaudit_server.api import uploads

CLEAR = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
         grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
         grpc.StatusCode.PERMISSION_DENIED}
SERVICES = [model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
            dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"],
            audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
            probe_service_pb2.DESCRIPTOR.services_by_name["ProbeService"],
            lro_pb.DESCRIPTOR.services_by_name["Operations"]]
METHODS = [m for s in SERVICES for m in s.methods]
NAMES = ["", "models/m", "models/m/conceptSets/s", "models/m/conceptGraphs/g", "datasets/d", "operations/x",
         "operations", "models/../etc", "models/" + "a" * 300, "models/m/", "/", "models/M_1", "state=QUEUED",
         "state=NOPE", "file:///etc/passwd", "s3://bucket/../x", "\x00", "models/\u00e9"]
F = descriptor.FieldDescriptor
SCALARS = {
    F.TYPE_STRING: st.one_of(st.sampled_from(NAMES), st.text(max_size=40)),
    F.TYPE_BYTES: st.binary(max_size=64),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    F.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    **{t: st.one_of(st.integers(-2**31, 2**31 - 1), st.sampled_from([0, 1, -1, 2**31 - 1]))
       for t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)},
    **{t: st.integers(-2**63, 2**63 - 1) for t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64)},
    **{t: st.integers(0, 2**32 - 1) for t in (F.TYPE_UINT32, F.TYPE_FIXED32)},
    **{t: st.integers(0, 2**64 - 1) for t in (F.TYPE_UINT64, F.TYPE_FIXED64)},
}


def messages(message_type: descriptor.Descriptor, depth: int = 0):
    """A strategy for messages of ``message_type`` with any subset of fields set to arbitrary values."""
    cls = message_factory.GetMessageClass(message_type)
    fields = {}
    for field in message_type.fields:
        if field.type == F.TYPE_MESSAGE:
            if depth >= 3 or field.message_type.GetOptions().map_entry:
                continue
            value = messages(field.message_type, depth + 1)
        elif field.type == F.TYPE_ENUM:
            value = st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 50))
        else:
            value = SCALARS[field.type]
        fields[field.name] = (st.lists(value, max_size=3) if field.is_repeated else value), field

    @st.composite
    def build(draw):
        message = cls()
        for name in draw(st.lists(st.sampled_from(sorted(fields)), unique=True)) if fields else []:
            strategy, field = fields[name]
            value, target = draw(strategy), getattr(message, name)
            if field.is_repeated and field.type == F.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            elif field.is_repeated:
                target.extend(value)
            elif field.type == F.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message
    return build()


@pytest.fixture
def server(redis_client, redis_url, tmp_path):
    server = h.start_server(redis_url, f"file://{tmp_path}/store")
    yield server
    server.stop(0)


def call(channel, method: descriptor.MethodDescriptor, requests: list):
    """Send ``requests`` (one, or a stream for client streaming); the status code of the answer."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = lambda m: m.SerializeToString()  # noqa: E731
    try:
        if method.client_streaming:
            channel.stream_unary(path, request_serializer=serialize)(iter(requests), timeout=20)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, request_serializer=serialize)(requests[0], timeout=5):
                pass
        else:
            channel.unary_unary(path, request_serializer=serialize)(requests[0], timeout=20)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_random_requests_get_clear_statuses(server, method):
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(messages(method.input_type), min_size=1, max_size=4 if method.client_streaming else 1))
    def check(requests):
        with h.channel(server) as channel:
            code, details = call(channel, method, requests)
        assert code in CLEAR, (method.name, code, details, requests)

    check()
    with h.channel(server) as channel:  # still serving
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


# --- the parsers themselves, with many more examples than a server round trip allows -----------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 10_000))
def test_safetensors_header_parser_only_raises_value_error(header, data_size):
    try:
        uploads.parse_safetensors_header(header, data_size)
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.integers(0, 400))
def test_safetensors_stream_check_only_raises_value_error(chunks, size):
    try:
        b"".join(uploads.checked_safetensors(chunks, size))
    except ValueError:
        pass


def _small_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        h.add_member(tar, "cat/0.png", _png())
        h.add_member(tar, "dog/1.png", _png())
    return out.getvalue()


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


TAR = _small_tar()
LIMITS = datasets.DatasetLimits(max_images=10, max_total_bytes=1 << 20, max_image_pixels=1 << 16)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2048),
                 st.lists(st.tuples(st.integers(0, len(TAR) - 1), st.integers(0, 255)), min_size=1, max_size=8)))
def test_archive_inspection_only_raises_value_error(mutation):
    """Random bytes, or a valid tar of two PNGs with bytes overwritten (headers, sizes, image data)."""
    if isinstance(mutation, bytes):
        data = mutation
    else:
        data = bytearray(TAR)
        for offset, value in mutation:
            data[offset] = value
    try:
        info = datasets.inspect_archive(io.BytesIO(bytes(data)), LIMITS)
    except ValueError:
        return
    assert 1 <= info.n_images <= LIMITS.max_images
