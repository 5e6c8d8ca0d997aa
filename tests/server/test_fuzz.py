"""Bad-input fuzzing (hypothesis) of the request and upload parsers, with a strict oracle: each method has the few
statuses a server with nothing registered, no worker and no authentication may answer with (INTERNAL, UNKNOWN and
UNAVAILABLE never), and the server keeps serving. Requests are built field by field from the proto descriptors. The
bad inputs of issue 8 (broken archives, the reserved id ``index``, forged page tokens, malformed filters) are replayed
as a fixed corpus, each with the one status it must get."""
from __future__ import annotations

import gzip
import io
import tarfile

import bad_inputs
import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import descriptor, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api_harness as h
from gigaudit.v1 import admin_service_pb2, audit_service_pb2, dataset_service_pb2, model_service_pb2, probe_service_pb2
from gigaudit_server.api import uploads
from gigaudit_server.storage.datasets import archives as datasets

C = grpc.StatusCode
BAD, MISSING = C.INVALID_ARGUMENT, C.NOT_FOUND
# What each method may answer on an empty server (no resources, no worker, no auth, no URI allow-list).
EXPECTED = {
    **dict.fromkeys(["GetModel", "DeleteModel", "GetDataset", "DeleteDataset", "GetConceptSet",
                     "GetConceptGraph", "GetConceptExemplars", "DeleteConceptSet", "DeleteConceptGraph",
                     "WatchOperation", "GetOperation", "DeleteOperation", "CancelOperation", "WaitOperation",
                     "RetryDeadLetter"], {BAD, MISSING}),
    **dict.fromkeys(["ListModels", "ListDatasets", "ListOperations", "ListDeadLetters"], {C.OK, BAD}),
    # AIP-132: listing under a model that does not exist may be NOT_FOUND or an empty page
    **dict.fromkeys(["ListConceptSets", "ListConceptGraphs"], {C.OK, BAD, MISSING}),
    **dict.fromkeys(["ExtractConcepts", "BuildConceptGraph", "Audit", "RenderExemplars", "ExplainImage"],
                    {BAD, MISSING}),
    **dict.fromkeys(["UploadModel", "UploadDataset"], {BAD, C.RESOURCE_EXHAUSTED}),
    "RegisterDataset": {BAD, C.PERMISSION_DENIED},
    "ListArchitectures": {C.OK, BAD},  # BAD: an unknown family
    "GetStatus": {C.OK},
    # the layers of an architecture (no parent) come from a worker: with none registered, UNAVAILABLE
    "ListLayers": {BAD, MISSING, C.UNAVAILABLE},
    # a probe's request id reused with another sleep is a different request
    "SubmitProbe": {C.OK, BAD, C.ALREADY_EXISTS},
}
assert not any(C.INTERNAL in codes or C.UNKNOWN in codes for codes in EXPECTED.values())
SERVICES = [model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
            dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"],
            audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
            probe_service_pb2.DESCRIPTOR.services_by_name["ProbeService"],
            admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
            lro_pb.DESCRIPTOR.services_by_name["Operations"]]
METHODS = [m for s in SERVICES for m in s.methods]
NAMES = ["", "models/m", "models/m/conceptSets/s", "models/m/conceptGraphs/g", "datasets/d", "operations/x",
         "operations", "models/../etc", "models/" + "a" * 300, "models/m/", "/", "models/M_1", "state=QUEUED",
         "state=NOPE", "file:///etc/passwd", "s3://bucket/../x", "\x00", "models/\u00e9",
         "index", "models/index", "datasets/index", "models/m/conceptSets/index", "models/index/conceptGraphs/g",
         "operations/index", "owner=alice", "owner=", "state=QUEUED AND owner=x", "state=QUEUED OR owner=x",
         *bad_inputs.FORGED_PAGE_TOKENS[:8]]
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


def test_every_method_has_its_expected_statuses():
    assert {m.name for m in METHODS} == set(EXPECTED)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_random_requests_get_their_expected_statuses(server, method):
    expected = EXPECTED[method.name]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(messages(method.input_type), min_size=1, max_size=4 if method.client_streaming else 1))
    def check(requests):
        with h.channel(server) as channel:
            code, details = call(channel, method, requests)
        assert code in expected, (method.name, code, details, requests)
        assert "Traceback" not in details and "internal error" not in details, details

    check()
    with h.channel(server) as channel:  # still serving (no worker: the queue is not served)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING


# --- the bad inputs of issue 8, each with the one status it must get ----------------------------------------------
def _unary(channel, service: str, method: str, request):
    return lambda: channel.unary_unary(f"/{service}/{method}", request_serializer=lambda m: m.SerializeToString())(
        request, timeout=20)


def _dataset_upload(channel, dataset_id: str, data: bytes):
    return lambda: channel.stream_unary("/gigaudit.v1.DatasetService/UploadDataset", request_serializer=lambda m: (
        m.SerializeToString()))(h.dataset_requests(dataset_id, data), timeout=20)


def _corpus(family: str, channel) -> dict:
    """``{label: call}`` of one family of bad inputs; every call must answer INVALID_ARGUMENT."""
    models, sets = "gigaudit.v1.ModelService", "gigaudit.v1.AuditService"
    data_service, ops = "gigaudit.v1.DatasetService", "google.longrunning.Operations"
    m, d, a = model_service_pb2, dataset_service_pb2, audit_service_pb2
    if family == "archives":
        archives = {**bad_inputs.BAD_ARCHIVES, "non-utf8-class-tar": bad_inputs.non_utf8_class_tar,
                    "non-utf8-class-tar-gz": lambda: bad_inputs.non_utf8_class_tar(True)}
        return {label: _dataset_upload(channel, "bad", make()) for label, make in archives.items()}
    if family == "reserved-id":
        index = bad_inputs.RESERVED_ID
        return {
            "GetModel": _unary(channel, models, "GetModel", m.GetModelRequest(name=f"models/{index}")),
            "DeleteModel": _unary(channel, models, "DeleteModel", m.DeleteModelRequest(name=f"models/{index}")),
            "ListLayers": _unary(channel, models, "ListLayers", m.ListLayersRequest(parent=f"models/{index}")),
            "GetDataset": _unary(channel, data_service, "GetDataset", d.GetDatasetRequest(name=f"datasets/{index}")),
            "DeleteDataset": _unary(channel, data_service, "DeleteDataset",
                                    d.DeleteDatasetRequest(name=f"datasets/{index}")),
            "GetConceptSet": _unary(channel, sets, "GetConceptSet",
                                    a.GetConceptSetRequest(name=f"models/parts/conceptSets/{index}")),
            "GetConceptSet(model)": _unary(channel, sets, "GetConceptSet",
                                           a.GetConceptSetRequest(name=f"models/{index}/conceptSets/s")),
            "GetConceptGraph": _unary(channel, sets, "GetConceptGraph",
                                      a.GetConceptGraphRequest(name=f"models/parts/conceptGraphs/{index}")),
            "UploadDataset": _dataset_upload(channel, index, h.parts_tar(2)),
        }
    if family == "page-tokens":
        listings = {"ListModels": (models, m.ListModelsRequest), "ListDatasets": (data_service, d.ListDatasetsRequest),
                    "ListOperations": (ops, lro_pb.ListOperationsRequest),
                    "ListDeadLetters": ("gigaudit.v1.AdminService", admin_service_pb2.ListDeadLettersRequest)}
        calls = {f"{name}[token{i}]": _unary(channel, service, name, request(page_token=token))
                 for name, (service, request) in listings.items()
                 for i, token in enumerate(bad_inputs.FORGED_PAGE_TOKENS)}
        for name, request in (("ListConceptSets", a.ListConceptSetsRequest),
                              ("ListConceptGraphs", a.ListConceptGraphsRequest)):
            calls |= {f"{name}[token{i}]": _unary(channel, sets, name, request(parent="models/parts", page_token=t))
                      for i, t in enumerate(bad_inputs.FORGED_PAGE_TOKENS)}
        return calls
    assert family == "filters"
    return {f"ListOperations[{text!r}]": _unary(channel, ops, "ListOperations",
                                                lro_pb.ListOperationsRequest(filter=text))
            for text in ("owner=", "owner=alice AND", "state=QUEUED OR owner=bob", "owner==alice", "color=red",
                         "state=QUEUED AND", "AND owner=alice")}


@pytest.mark.parametrize("family", ["archives", "reserved-id", "page-tokens", "filters"])
def test_known_bad_inputs_are_invalid_argument(server, family):
    """With a model (CREATING: no worker) and a dataset registered, so that every collection exists."""
    with h.channel(server) as channel:
        channel.stream_unary("/gigaudit.v1.ModelService/UploadModel", request_serializer=lambda m: (
            m.SerializeToString()))(h.model_requests("parts", h.partsnet_bytes()), timeout=20)
        _dataset_upload(channel, "shapes", h.parts_tar(4))()
        answers = {}
        for label, request in _corpus(family, channel).items():
            try:
                request()
                answers[label] = C.OK
            except grpc.RpcError as error:
                answers[label] = error.code()
        assert {label: code.name for label, code in answers.items() if code != BAD} == {}


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
TAR_GZ = gzip.compress(TAR, mtime=0)
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


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["tar", "tar.gz"]), st.integers(0, len(TAR) - 1),
       st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=4))
def test_truncated_or_damaged_archives_only_raise_value_error(kind, cut, mutation):
    """A tar or tar.gz of two PNGs cut short and with bytes overwritten."""
    data = bytearray(TAR if kind == "tar" else TAR_GZ)
    for offset, value in mutation:
        data[offset % len(data)] = value
    try:
        info = datasets.inspect_archive(io.BytesIO(bytes(data[:cut % len(data)])), LIMITS)
    except ValueError:
        return
    assert 1 <= info.n_images <= LIMITS.max_images


@pytest.mark.parametrize("kind", sorted(bad_inputs.BAD_ARCHIVES) + ["non-utf8-class-tar"])
def test_the_broken_archives_of_issue_8_raise_value_error(kind):
    make = bad_inputs.BAD_ARCHIVES.get(kind, bad_inputs.non_utf8_class_tar)
    with pytest.raises(ValueError):
        datasets.inspect_archive(io.BytesIO(make()), LIMITS)
