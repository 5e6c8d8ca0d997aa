"""Request ids against a real Redis: scoped per caller and method, bound to the request's fingerprint."""
from __future__ import annotations

import threading

import grpc
import pytest
from google.protobuf import duration_pb2

from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit_server.api import errors
from gigaudit_server.api.idempotency import Idempotency, fingerprint


@pytest.fixture
def idem(redis_client):
    return Idempotency(redis_client, ttl_s=60)


def run(idem, caller, method, request_id, print_, result):
    calls = []

    def work():
        calls.append(1)
        return result

    return idem.once(caller, method, request_id, print_, work, lambda r: r), len(calls)


def test_a_retry_replays_and_another_request_with_the_id_is_already_exists(idem):
    assert run(idem, "ann", "/S/M", "r1", "f1", "op-1") == ("op-1", 1)
    assert run(idem, "ann", "/S/M", "r1", "f1", "op-2") == ("op-1", 0)
    with pytest.raises(errors.ApiError) as info:
        run(idem, "ann", "/S/M", "r1", "f2", "op-3")
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS and "r1" in info.value.message
    assert "different M request" in info.value.message


def test_ids_are_scoped_per_caller_and_method(idem):
    assert run(idem, "ann", "/S/M", "r1", "f1", "ann-op") == ("ann-op", 1)
    assert run(idem, "bob", "/S/M", "r1", "f1", "bob-op") == ("bob-op", 1), "never another caller's result"
    assert run(idem, "ann", "/S/Other", "r1", "f9", "other-op") == ("other-op", 1)


def test_failed_work_frees_the_id_and_ids_expire(idem, redis_client):
    def failing():
        raise ValueError("bad")

    with pytest.raises(ValueError):
        idem.once("ann", "/S/M", "r1", "f1", failing, lambda r: r)
    assert run(idem, "ann", "/S/M", "r1", "f2", "fixed") == ("fixed", 1)
    short = Idempotency(redis_client, ttl_s=0.2)
    assert run(short, "ann", "/S/M", "r2", "f1", "a") == ("a", 1)
    threading.Event().wait(0.4)
    assert run(short, "ann", "/S/M", "r2", "f2", "b") == ("b", 1)


def test_concurrent_retries_do_the_work_once(idem):
    results, started = [], threading.Barrier(4)

    def call():
        started.wait()
        results.append(idem.once("ann", "/S/M", "race", "f", lambda: (threading.Event().wait(0.2), "op")[1],
                                 lambda r: r))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["op"] * 4


def test_fingerprints_ignore_the_request_id_only():
    a = probe_pb.SubmitProbeRequest(request_id="x", sleep=duration_pb2.Duration(seconds=1))
    b = probe_pb.SubmitProbeRequest(request_id="y", sleep=duration_pb2.Duration(seconds=1))
    c = probe_pb.SubmitProbeRequest(request_id="x", sleep=duration_pb2.Duration(seconds=2))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_a_result_deleted_since_lets_the_request_run_anew(idem):
    from gigaudit_server.api.idempotency import Gone

    existing = {"op-1"}

    def replay(result):
        if result not in existing:
            raise Gone(result)
        return result

    assert idem.once("ann", "/S/M", "r1", "f1", lambda: "op-1", replay) == "op-1"
    existing.clear()
    assert idem.once("ann", "/S/M", "r1", "f1", lambda: (existing.add("op-2"), "op-2")[1], replay) == "op-2"
    assert idem.once("ann", "/S/M", "r1", "f1", lambda: "op-3", replay) == "op-2"
