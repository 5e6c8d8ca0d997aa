"""What the adversarial suite drives: the API as a real ``python -m gigaudit_server serve`` process with bearer
tokens (an admin and two auditors), workers (in-process threads or ``python -m gigaudit_server worker`` processes),
and callers (:class:`Client` sends one caller's token and a timeout with every call); tiny weights."""
from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from google.rpc import code_pb2

import api_harness as h
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
from gigaudit.v1 import resource_state_pb2

REPO = Path(__file__).resolve().parents[2]
CALL_TIMEOUT_S = 20.0
ACTIVE = resource_state_pb2.RESOURCE_STATE_ACTIVE
CREATING = resource_state_pb2.RESOURCE_STATE_CREATING


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    token: str


ADMIN = Caller("ops", "admin", secrets.token_urlsafe(24))
ALICE = Caller("alice", "auditor", secrets.token_urlsafe(24))
BOB = Caller("bob", "auditor", secrets.token_urlsafe(24))


class _Method:
    """A stub method that adds the caller's token and a timeout; ``.future`` for concurrent calls."""

    def __init__(self, method, metadata):
        self._method, self._metadata = method, metadata

    def _kwargs(self, kwargs):
        return {"metadata": self._metadata, "timeout": CALL_TIMEOUT_S, **kwargs}

    def __call__(self, request, **kwargs):
        return self._method(request, **self._kwargs(kwargs))

    def future(self, request, **kwargs):
        return self._method.future(request, **self._kwargs(kwargs))


class _Stub:
    def __init__(self, stub, metadata):
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, name):
        return _Method(getattr(self._stub, name), self._metadata)


class Client:
    """The services of the API as seen by one caller."""

    def __init__(self, channel: grpc.Channel, caller: Caller):
        metadata = (("authorization", f"Bearer {caller.token}"),)
        self.caller = caller
        self.models = _Stub(model_grpc.ModelServiceStub(channel), metadata)
        self.datasets = _Stub(dataset_grpc.DatasetServiceStub(channel), metadata)
        self.audits = _Stub(audit_grpc.AuditServiceStub(channel), metadata)
        self.ops = _Stub(lro_grpc.OperationsStub(channel), metadata)
        self.admin = _Stub(admin_grpc.AdminServiceStub(channel), metadata)
        self.probes = _Stub(probe_grpc.ProbeServiceStub(channel), metadata)

    # ------------------------------------------------------------------ operations
    def wait(self, name: str, timeout: float = 60.0) -> lro_pb.Operation:
        """The operation once done (fails the test when it is not done within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{name} is not done after {timeout:g} s"
            operation = self.ops.WaitOperation(lro_pb.WaitOperationRequest(
                name=name, timeout=duration_pb2.Duration(seconds=max(1, int(min(left, 10))))), timeout=left + 5)
            if operation.done:
                return operation

    def succeeded(self, name: str, timeout: float = 60.0) -> lro_pb.Operation:
        operation = self.wait(name, timeout)
        assert not operation.HasField("error"), (operation.error.code, operation.error.message)
        return operation

    def probe(self, request_id: str = "", seconds: int = 5) -> lro_pb.Operation:
        return self.probes.SubmitProbe(probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(seconds=seconds),
                                                                   request_id=request_id))

    def operation_names(self, filter: str = "") -> set[str]:
        names, token = set(), ""
        while True:
            page = self.ops.ListOperations(lro_pb.ListOperationsRequest(name="operations", filter=filter,
                                                                        page_token=token))
            names |= {o.name for o in page.operations}
            token = page.next_page_token
            if not token:
                return names

    # ------------------------------------------------------------------ uploads and audits
    def upload_model(self, model_id: str, data: bytes | None = None, **header) -> lro_pb.Operation:
        """Start an upload (the operation that validates it is returned at once)."""
        return self.models.UploadModel(h.model_requests(model_id, h.partsnet_bytes() if data is None else data,
                                                        **header))

    def registered_model(self, model_id: str, data: bytes | None = None, **header) -> model_pb.Model:
        """Upload and wait until the model is validated (a worker must run)."""
        self.succeeded(self.upload_model(model_id, data, **header).name)
        model = self.models.GetModel(model_pb.GetModelRequest(name=f"models/{model_id}"))
        assert model.state == ACTIVE
        return model

    def upload_dataset(self, dataset_id: str, data: bytes | None = None, **header) -> dataset_pb.Dataset:
        return self.datasets.UploadDataset(h.dataset_requests(dataset_id, h.parts_tar(6) if data is None else data,
                                                              **header))

    def audit(self, audit_id: str, model: str = "models/parts", dataset: str = "datasets/shapes",
              request_id: str = "", n_concepts: int = 4) -> lro_pb.Operation:
        return self.audits.Audit(audit_request(audit_id, model, dataset, request_id, n_concepts))

    def concept_set(self, name: str) -> audit_pb.ConceptSet:
        return self.audits.GetConceptSet(audit_pb.GetConceptSetRequest(name=name))


def audit_request(audit_id: str, model: str = "models/parts", dataset: str = "datasets/shapes",
                  request_id: str = "", n_concepts: int = 4) -> audit_pb.AuditRequest:
    """An audit that takes well under a second on PartsNet and 6 images."""
    return audit_pb.AuditRequest(
        parent=model, audit_id=audit_id, dataset=dataset, request_id=request_id,
        concept_options=audit_pb.ConceptOptions(n_concepts=n_concepts, seed=1, method="kmeans"),
        graph_options=audit_pb.GraphOptions(steps=2, top_t=1), metrics=["completeness"], evaluation_images=2)


def meta(operation: lro_pb.Operation) -> metadata_pb.OperationMetadata:
    found = metadata_pb.OperationMetadata()
    assert operation.metadata.Unpack(found)
    return found


def error_code(operation: lro_pb.Operation) -> int:
    """The ``google.rpc.Code`` an operation ended with (OK when it succeeded)."""
    assert operation.done
    return operation.error.code if operation.HasField("error") else code_pb2.OK


def refused(call, code: grpc.StatusCode) -> grpc.RpcError:
    """The error of ``call()``, which must fail with ``code`` and a message free of server internals."""
    error = h.refused(call, code)
    assert_clean(error.details() or "")
    return error


def assert_clean(message: str) -> None:
    """No stack trace, server path or internal exception name reaches a client."""
    for leak in ("Traceback", str(REPO), "/tmp/", "site-packages", "internal error"):
        assert leak not in message, f"{leak!r} leaked into {message!r}"


# --- processes ----------------------------------------------------------------------------------------------------
def process_env() -> dict:
    """The test's environment (``GIGAUDIT_KEY_PREFIX`` included) with this checkout's packages, one CPU thread."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "service"), str(REPO / "client")]),
            "OMP_NUM_THREADS": "1"}


class ApiProcess:
    """``python -m gigaudit_server serve`` on a free loopback port, logging to ``log_path``."""

    def __init__(self, redis_url: str, store: str, tokens_file: Path, log_path: Path, *flags: str):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gigaudit_server", "serve", "--redis-url", redis_url, "--store", store,
             "--port", "0", "--auth-tokens-file", str(tokens_file), "--health-interval-s", "0.2",
             "--log-level", "WARNING", *flags],
            stdout=subprocess.PIPE, stderr=self._log, env=process_env(), cwd=str(log_path.parent), text=True)
        watchdog = threading.Timer(30, self.process.kill)
        watchdog.start()
        line = self.process.stdout.readline()
        watchdog.cancel()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"the API did not start: {line!r}\n{self.log()}")
        self.port = int(line.rsplit(":", 1)[1])
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # drain
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def client(self, caller: Caller) -> Client:
        return Client(self.channel, caller)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        """Stop the process; its exit code if it had died before (None when it was still serving)."""
        self.channel.close()
        died = self.process.poll()
        if died is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return died


class Workers:
    """Start and stop workers: in-process threads (the harness's real gig handlers) or worker processes."""

    def __init__(self, redis_url: str, store: str, log_dir: Path):
        self.redis_url, self.store, self.log_dir = redis_url, store, log_dir
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str = "test-worker") -> None:
        self.threads.append(h.start_worker(self.redis_url, self.store, name=name))

    def start_process(self, name: str = "worker-process") -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "gigaudit_server", "worker", "--redis-url", self.redis_url, "--store", self.store,
             "--name", name, "--threads", "1", "--batch-size", "16", "--log-level", "WARNING"],
            stdout=log, stderr=log, env=process_env(), cwd=str(self.log_dir)))
        log.close()
        return self.processes[-1]

    def stop(self) -> None:
        """Stop every worker (a running job is handed back at its next batch)."""
        for thread, stop in self.threads:
            stop.set()
        for thread, _ in self.threads:
            thread.join(30)
        self.threads.clear()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()




def other_weights(seed: int = 1) -> bytes:
    """PartsNet weights that fit the architecture but differ from the bundled ones."""
    import torch
    from safetensors.torch import save

    from gig.synthetic import PartsNet

    torch.manual_seed(seed)
    return save({k: v.contiguous() for k, v in PartsNet().state_dict().items()})


def misfit_weights() -> bytes:
    """Weights of a 4-class PartsNet: they fail validation as a 6-class model."""
    from safetensors.torch import save

    from gig.synthetic import PartsNet

    return save({k: v.contiguous() for k, v in PartsNet(num_classes=4).state_dict().items()})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def paused_upload(model_id: str, data: bytes, pause_after: int) -> tuple[object, threading.Event, threading.Event]:
    """Upload requests that stop after ``pause_after`` chunks until ``resume`` is set; ``paused`` is set then."""
    paused, resume = threading.Event(), threading.Event()

    def requests():
        for i, request in enumerate(h.model_requests(model_id, data)):
            if i == pause_after + 1:
                paused.set()
                assert resume.wait(30), "the test never resumed the upload"
            yield request
    return requests(), paused, resume
