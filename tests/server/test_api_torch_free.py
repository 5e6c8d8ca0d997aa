"""The API process never imports torch or gig: checked in a fresh interpreter and on a real `serve` process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

import api_harness as h
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict:
    """This process's environment (with the test's GIGAUDIT_KEY_PREFIX) and the source folders on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "service"), str(ROOT / "client")])}


def test_api_modules_import_without_torch():
    code = ("import sys, gigaudit_server.api, gigaudit_server.server, gigaudit_server.__main__, "
            "gigaudit_server.storage.catalog, gigaudit_server.api.errors, gigaudit_server.config\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gig', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_serve_with_a_redis_url_stays_torch_free_while_serving(redis_client, redis_url, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "gigaudit_server", "serve", "--redis-url", redis_url, "--port", "0",
         "--store", f"file://{tmp_path}/store", "--log-level", "WARNING"],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "listening on" in line, process.stderr.read() if process.poll() is not None else line
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            models = model_grpc.ModelServiceStub(channel)
            assert not models.ListModels(model_pb.ListModelsRequest()).models
            with pytest.raises(grpc.RpcError) as info:
                models.UploadModel(h.model_requests("bad", b"\x80\x04pickle-bytes"))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest())
            assert operation.name.startswith("operations/")
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "libtorch" not in maps and "libc10" not in maps, "the API process loaded torch"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, "SIGTERM stops the server cleanly"


@pytest.mark.slow
def test_a_worker_process_started_through_the_entry_point_serves_the_api(redis_client, redis_url, tmp_path):
    """`python -m gigaudit_server worker` publishes its architectures and runs the jobs the API queues."""
    from google.longrunning import operations_pb2_grpc as lro_grpc
    from google.longrunning import operations_proto_pb2 as lro_pb
    from google.protobuf import duration_pb2

    store = f"file://{tmp_path}/store"
    worker = subprocess.Popen([sys.executable, "-m", "gigaudit_server", "worker", "--redis-url", redis_url,
                               "--store", store, "--threads", "1", "--log-level", "WARNING"], env=env())
    server = h.start_server(redis_url, store)
    try:
        with h.channel(server) as channel:
            operation = probe_grpc.ProbeServiceStub(channel).SubmitProbe(probe_pb.SubmitProbeRequest())
            done = lro_grpc.OperationsStub(channel).WaitOperation(lro_pb.WaitOperationRequest(
                name=operation.name, timeout=duration_pb2.Duration(seconds=120)))
            assert done.done and done.HasField("response")
            architectures = model_grpc.ModelServiceStub(channel).ListArchitectures(
                model_pb.ListArchitecturesRequest()).architectures
            assert {"partsnet", "resnet50"} <= {a.name for a in architectures}
    finally:
        server.stop(0)
        worker.terminate()
        assert worker.wait(timeout=60) == 0
