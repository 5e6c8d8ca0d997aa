"""Fixtures of the adversarial suite: the API process, workers, the three callers, a registered tiny model and
dataset. The keys of every test live under its own Redis prefix (``redis_client``), inherited by the processes."""
from __future__ import annotations

from pathlib import Path

import pytest
from adversary import ADMIN, ALICE, BOB, ApiProcess, Client, Workers

from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit_server.api import auth


@pytest.fixture
def store(tmp_path) -> str:
    return f"file://{tmp_path}/store"


@pytest.fixture
def tokens_file(tmp_path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("".join(f"{c.name} {c.role} {auth.hash_token(c.token)}\n" for c in (ADMIN, ALICE, BOB)))
    return path


@pytest.fixture
def start_api(redis_client, redis_url, store, tokens_file, tmp_path):
    """Start API processes (extra ``serve`` flags allowed). Each must still be alive at the end of the test: the
    API never crashes, whatever it is sent."""
    started: list[ApiProcess] = []

    def start(*flags: str) -> ApiProcess:
        started.append(ApiProcess(redis_url, store, tokens_file, tmp_path / f"api-{len(started)}.log", *flags))
        return started[-1]

    yield start
    died = [(api, api.stop()) for api in started]
    for api, code in died:
        assert code is None, f"the API process exited with {code}:\n{api.log()[-4000:]}"


@pytest.fixture
def api(start_api) -> ApiProcess:
    return start_api()


@pytest.fixture
def workers(redis_client, redis_url, store, tmp_path):
    control = Workers(redis_url, store, tmp_path)
    yield control
    control.stop()


@pytest.fixture
def admin(api) -> Client:
    return api.client(ADMIN)


@pytest.fixture
def alice(api) -> Client:
    return api.client(ALICE)


@pytest.fixture
def bob(api) -> Client:
    return api.client(BOB)


@pytest.fixture
def parts(admin, workers) -> model_pb.Model:
    """PartsNet registered as ``models/parts`` and 6 images as ``datasets/shapes``, validated by a worker that is
    stopped again: jobs queued by the test stay QUEUED unless it starts a worker."""
    workers.start()
    try:
        model = admin.registered_model("parts")
    finally:
        workers.stop()
    admin.upload_dataset("shapes")
    return model


@pytest.fixture
def running_parts(admin, workers) -> model_pb.Model:
    """Like ``parts``, with the worker left running."""
    workers.start()
    model = admin.registered_model("parts")
    admin.upload_dataset("shapes")
    return model
