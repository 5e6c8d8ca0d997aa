"""The worker's probes on a live worker process (real entry point, real Redis, real HTTP): /livez follows the
heartbeat and the running job's progress, so a hung handler turns it 503 while a slow but steady job does not;
/readyz follows Redis and the published architectures."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import pytest

from gigaudit_server import keys
from gigaudit_server.queue.jobs import JobQueue

HELPER = Path(__file__).with_name("probed_worker_process.py")
STALL_S = 1.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except HTTPError as e:
        return e.code, json.loads(e.read())


def _until(check, timeout: float, process: subprocess.Popen, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (URLError, ConnectionError):
            result = None
        if result:
            return result
        if process.poll() is not None:
            raise AssertionError(f"{what}: the worker exited with {process.returncode}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def probed_worker(redis_client, redis_url, tmp_path):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(HELPER), "--redis-url", redis_url, "--store", f"file://{tmp_path / 'store'}",
         "--health-port", str(port), "--health-host", "127.0.0.1", "--stall-timeout-s", str(STALL_S),
         "--heartbeat-s", "1", "--threads", "1", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _until(lambda: _get(port, "/readyz")[0] == 200, 60, process, "/readyz 200")
        yield port, process
    finally:
        process.send_signal(signal.SIGKILL)  # a hung handler never reaches the next batch to hand its job back
        process.wait(timeout=10)


def test_a_hung_handler_fails_liveness_and_a_steady_one_does_not(probed_worker, redis_client):
    port, process = probed_worker
    status, body = _get(port, "/livez")
    assert (status, body["checks"]) == (200, {"heartbeat": {"ok": True}})
    queue = JobQueue(redis_client)

    steady = queue.submit("test.steady", {"seconds": 3 * STALL_S})  # runs twice the stall timeout, with progress
    _until(lambda: queue.get(steady.id).state == "RUNNING", 20, process, "the steady job runs")
    while queue.get(steady.id).state == "RUNNING":
        status, body = _get(port, "/livez")
        assert status == 200, body
        time.sleep(0.2)
    assert queue.get(steady.id).state == "SUCCEEDED"

    hung = queue.submit("test.hang", {"seconds": 120})
    _until(lambda: queue.get(hung.id).state == "RUNNING", 20, process, "the hung job runs")
    started = time.monotonic()
    status, body = _until(lambda: (lambda r: r if r[0] == 503 else None)(_get(port, "/livez")), 10 * STALL_S,
                          process, "/livez 503")
    assert time.monotonic() - started >= STALL_S - 0.5
    progress = body["checks"]["progress"]
    assert body["status"] == "failing" and body["checks"]["heartbeat"] == {"ok": True}
    assert (progress["ok"], progress["job"], progress["stall_timeout_s"]) == (False, hung.id, STALL_S)
    assert progress["idle_s"] >= STALL_S
    assert _until(lambda: queue.get(hung.id).state == "FAILED", 10, process, "the hung job is dead-lettered")
    assert _get(port, "/livez")[0] == 503  # the handler still holds the worker: only a restart frees it
    assert _get(port, "/readyz")[0] == 200  # readiness is about Redis, not the handler


def test_readiness_follows_the_published_architectures(probed_worker, redis_client):
    port, process = probed_worker
    status, body = _get(port, "/readyz")
    assert status == 200 and body["checks"]["redis"] == {"ok": True}
    published = redis_client.smembers(keys.architectures())
    assert published and body["checks"]["architectures"] == {"ok": True, "missing": []}
    redis_client.delete(keys.architectures())  # e.g. a Redis that came back without its data
    status, body = _get(port, "/readyz")
    assert status == 503 and body["checks"]["architectures"]["missing"] == sorted(published)
    assert _get(port, "/livez")[0] == 200  # not a reason to restart the worker
    assert _get(port, "/metrics-or-anything")[0] == 404


def test_health_port_flag():
    from gigaudit_server.worker.main import parse_args

    base = ["--redis-url", "redis://h:1/0", "--store", "file:///s"]
    assert parse_args(base).health_port is None  # off unless asked for
    assert (parse_args([*base, "--health-port", "8082"]).health_port, parse_args(base).health_host) == (8082,
                                                                                                       "0.0.0.0")
    for bad in ("0", "65536", "x"):
        with pytest.raises(SystemExit):
            parse_args([*base, "--health-port", bad])
