"""Helpers for the API tests: a real server on loopback, a real in-process worker, uploads of real artifacts.

The fixtures ``store``, ``server`` and ``worker`` are used by importing them into a test module."""
from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from grpc_status import rpc_status

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit_server.config import Settings
from gigaudit_server.server import GigauditServer

PARTSNET = Path(__file__).resolve().parent.parent / "service" / "gig" / "assets" / "partsnet.safetensors"
CHUNK = 16 * 1024


def start_server(redis_url: str, store: str, **settings) -> GigauditServer:
    """The API server on a free loopback port, on an external Redis (torch-free mode)."""
    return GigauditServer(Settings(redis_url=redis_url, store=store, port=0,
                                   health_interval_s=0.2, **settings)).start()


def start_worker(redis_url: str, store: str, name: str = "test-worker") -> tuple[threading.Thread, threading.Event]:
    """A real worker (gig handlers) in a thread; set the event to stop it."""
    import redis

    from gigaudit_server.queue.jobs import JobQueue
    from gigaudit_server.storage.artifacts import ArtifactStore
    from gigaudit_server.storage.catalog import Catalog
    from gigaudit_server.worker.architectures import architecture_details
    from gigaudit_server.worker.loop import Worker
    from gigaudit_server.worker.tasks import Tasks

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    Catalog(client).publish_architectures(architecture_details())
    tasks = Tasks(ArtifactStore(store), "cpu", batch_size=16, n_exemplars=2, exemplar_concepts=4)
    worker = Worker(JobQueue(client), tasks.handlers(), tasks.reducers(), name=name, poll_interval=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    return thread, stop


@pytest.fixture
def store(tmp_path) -> str:
    """The artifact store of one test, under its ``tmp_path``."""
    return f"file://{tmp_path}/store"


@pytest.fixture
def server(redis_client, redis_url, store):
    server = start_server(redis_url, store)
    yield server
    server.stop(0)


@pytest.fixture
def worker(redis_client, redis_url, store):
    thread, stop = start_worker(redis_url, store)
    yield
    stop.set()
    thread.join(10)


@pytest.fixture
def api_channel(server):
    """A channel to the ``server`` fixture."""
    with channel(server) as opened:
        yield opened


def stored_files(tmp_path, kind: str) -> list[str]:
    """The objects of ``kind`` (``"weights"``, ``"datasets"``) in the ``store`` of a test."""
    folder = tmp_path / "store" / kind
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def refused(call, code: grpc.StatusCode) -> grpc.RpcError:
    """The error of ``call()``, which must fail with ``code``."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    return info.value


def channel(server: GigauditServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def status_of(error: grpc.RpcError):
    """The ``google.rpc.Status`` (with details) of a failed call."""
    return rpc_status.from_call(error)


def details_of(error: grpc.RpcError) -> dict:
    """``{detail type name: unpacked message}`` of a failed call."""
    from google.rpc import error_details_pb2

    found = {}
    for detail in status_of(error).details:
        for kind in ("BadRequest", "ResourceInfo", "ErrorInfo", "PreconditionFailure", "QuotaFailure"):
            message = getattr(error_details_pb2, kind)()
            if detail.Is(message.DESCRIPTOR):
                detail.Unpack(message)
                found[kind] = message
    return found


def partsnet_bytes() -> bytes:
    return PARTSNET.read_bytes()


def model_requests(model_id: str, data: bytes, *, architecture="partsnet", num_classes=6, input_size=32,
                   request_id="", sha256=None, size_bytes=None, class_names=()):
    header = model_pb.UploadModelHeader(model_id=model_id, request_id=request_id, model=model_pb.Model(
        display_name=model_id, architecture=architecture, num_classes=num_classes, class_names=class_names,
        input_size=input_size, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
        size_bytes=len(data) if size_bytes is None else size_bytes,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256))
    yield model_pb.UploadModelRequest(header=header)
    for start in range(0, len(data), CHUNK):
        yield model_pb.UploadModelRequest(chunk=data[start:start + CHUNK])


def wait_operation(channel: grpc.Channel, name: str, timeout: float = 120.0, metadata=None) -> lro_pb.Operation:
    """The operation once done (WaitOperation in rounds of at most 10 s); AssertionError after ``timeout``."""
    operations, deadline = lro_grpc.OperationsStub(channel), time.monotonic() + timeout
    while True:
        operation = operations.WaitOperation(lro_pb.WaitOperationRequest(
            name=name, timeout=duration_pb2.Duration(seconds=10)), metadata=metadata, timeout=30)
        if operation.done:
            return operation
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not done after {timeout:g} s")


def registered_model(channel: grpc.Channel, model_id: str, data: bytes, *, metadata=None, **header) -> model_pb.Model:
    """Upload a model and wait for its validation: the registered Model; AssertionError naming the error else."""
    operation = model_grpc.ModelServiceStub(channel).UploadModel(model_requests(model_id, data, **header),
                                                                 metadata=metadata, timeout=60)
    operation = wait_operation(channel, operation.name, metadata=metadata)
    if operation.HasField("error"):
        raise AssertionError(f"validating models/{model_id} failed: {operation.error}")
    model = model_pb.Model()
    operation.response.Unpack(model)
    return model


def dataset_requests(dataset_id: str, data: bytes, *, request_id="", sha256=None, size_bytes=None):
    header = dataset_pb.UploadDatasetHeader(dataset_id=dataset_id, request_id=request_id, dataset=dataset_pb.Dataset(
        display_name=dataset_id, size_bytes=len(data) if size_bytes is None else size_bytes,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256))
    yield dataset_pb.UploadDatasetRequest(header=header)
    for start in range(0, len(data), CHUNK):
        yield dataset_pb.UploadDatasetRequest(chunk=data[start:start + CHUNK])


def parts_tar(n: int = 12, size: int = 32, seed: int = 0) -> bytes:
    """An ImageFolder-style tar of PNGs from gig.synthetic (class folders 0..5, named so they sort by class id)."""
    from gig.synthetic import CLASS_NAMES, parts_archive

    return parts_archive(n, size, seed, [f"class{c}" for c in range(len(CLASS_NAMES))])


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
