"""Stopping: SIGTERM ends `gigaudit serve|worker` and `python -m gigaudit_server serve|worker` (idle) in under 2 s with
nothing left running, and `GigauditServer.stop` gives in-flight RPCs a bounded grace (real processes, real gRPC,
real Redis)."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import psutil
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gigaudit_server import keys
from gigaudit_server.config import Settings
from gigaudit_server.server import GigauditServer

IDLE_STOP_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(check, timeout: float, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.2)


def _serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        except grpc.RpcError as exc:
            return exc.code() != grpc.StatusCode.UNAVAILABLE  # NOT_SERVING answers too: the API is up
        return status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


def _healthy(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


def _sigterm_exit_seconds(process: subprocess.Popen) -> float:
    """SIGTERM, then the seconds until the process and every process it started are gone."""
    family = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError("still running 30 s after SIGTERM") from None
    seconds = time.monotonic() - started
    alive = [pid for pid in family if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running after SIGTERM: {alive}"
    assert process.returncode == 0, process.stdout.read()
    print(f"{' '.join(process.args[:3])}…: SIGTERM to exit {seconds:.2f} s")
    return seconds


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("command", [["gigaudit"], [sys.executable, "-m", "gigaudit_server"]],
                         ids=["gigaudit-serve", "python-m-serve"])
def test_idle_embedded_server_stops_at_once_on_sigterm(command, tmp_path):
    port = _free_port()
    process = _start([*command, "serve", "--port", str(port), "--store", (tmp_path / "store").as_uri(),
                      "--data-dir", str(tmp_path / "redis")])
    try:
        _until(lambda: _healthy(f"127.0.0.1:{port}"), 120, process, "the embedded worker serving")
        # `gigaudit serve` became the server (exec): the signal goes to the server itself
        assert "gigaudit_server" in " ".join(psutil.Process(process.pid).cmdline())
        seconds = _sigterm_exit_seconds(process)
    finally:
        process.kill()
    assert seconds < IDLE_STOP_S, f"took {seconds:.2f} s"
    assert (tmp_path / "redis" / "gigaudit.rdb").exists()  # the embedded Redis saved on the way out


def test_idle_api_server_with_external_redis_stops_at_once(redis_client, redis_url, tmp_path):
    port = _free_port()
    process = _start([sys.executable, "-m", "gigaudit_server", "serve", "--port", str(port),
                      "--redis-url", redis_url, "--store", (tmp_path / "store").as_uri()])
    try:
        _until(lambda: _serving(f"127.0.0.1:{port}"), 60, process, "the API answering")
        seconds = _sigterm_exit_seconds(process)
    finally:
        process.kill()
    assert seconds < IDLE_STOP_S, f"took {seconds:.2f} s"


@pytest.mark.parametrize("command", [["gigaudit"], [sys.executable, "-m", "gigaudit_server"]],
                         ids=["gigaudit-worker", "python-m-worker"])
def test_idle_worker_stops_at_once_on_sigterm(command, redis_client, redis_url, tmp_path):
    process = _start([*command, "worker", "--redis-url", redis_url, "--store", (tmp_path / "store").as_uri()])
    try:
        _until(lambda: next(redis_client.scan_iter(match=keys.heartbeat("*")), None) is not None, 120, process,
               "the worker's heartbeat")
        seconds = _sigterm_exit_seconds(process)
    finally:
        process.kill()
    assert seconds < IDLE_STOP_S, f"took {seconds:.2f} s"
    assert next(redis_client.scan_iter(match=keys.heartbeat("*")), None) is None  # it retired


class _SlowGetOperation(grpc.ServerInterceptor):
    """Holds every GetOperation for `seconds` before the servicer answers: an RPC in flight during stop()."""

    def __init__(self, seconds: float):
        self.seconds, self.entered = seconds, threading.Event()

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if not details.method.endswith("/GetOperation"):
            return handler

        def slow(request, context):
            self.entered.set()
            time.sleep(self.seconds)
            return handler.unary_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(slow, handler.request_deserializer, handler.response_serializer)


def _stop_during_call(redis_url, tmp_path, *, hold_s: float, grace_s: float):
    """(outcome of a GetOperation in flight when stop() begins, seconds stop() took)."""
    slow = _SlowGetOperation(hold_s)
    settings = Settings(port=0, redis_url=redis_url, store=(tmp_path / "store").as_uri(), shutdown_grace_s=grace_s)
    server = GigauditServer(settings, interceptors=[slow]).start()
    outcome = {}

    def call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                operations_pb2_grpc.OperationsStub(channel).GetOperation(
                    operations_pb2.GetOperationRequest(name="operations/none"), timeout=30)
                outcome["code"] = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()

    caller = threading.Thread(target=call)
    caller.start()
    assert slow.entered.wait(10)
    started = time.monotonic()
    server.stop()
    seconds = time.monotonic() - started
    caller.join(10)
    return outcome["code"], seconds


def test_an_in_flight_call_within_the_grace_gets_its_answer(redis_client, redis_url, tmp_path):
    code, seconds = _stop_during_call(redis_url, tmp_path, hold_s=0.5, grace_s=5.0)
    assert code == grpc.StatusCode.NOT_FOUND  # the servicer's own answer, not a cut-off call
    assert seconds < 2.0


def test_an_in_flight_call_past_the_grace_is_cut_off_cleanly(redis_client, redis_url, tmp_path):
    code, seconds = _stop_during_call(redis_url, tmp_path, hold_s=6.0, grace_s=0.5)
    assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert seconds < 0.5 + 1.5  # the grace, the health thread's and the worker's joins are bounded
