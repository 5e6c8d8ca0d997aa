"""The CLI against a real server (real gRPC, real Redis; a real worker where named): -o json numbers, --timeout kept
to a second, queue position and stage history, cancel's wording, delete --force, and delete right after cancel."""
import json
import time

import pytest

from api_harness import server, store, worker  # noqa: F401 (fixtures)
from gigaudit import AuditClient, GigauditError
from gigaudit.cli import main


@pytest.fixture
def target(server, monkeypatch):  # noqa: F811
    for name in ("GIGAUDIT_SERVER", "GIGAUDIT_CONTEXT", "GIGAUDIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIGAUDIT_CONFIG", "/nonexistent/gigaudit-config.yaml")
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def client(target):
    with AuditClient(target, timeout=30) as c:
        yield c


def test_wait_honours_its_timeout_within_a_second_while_nothing_changes(client, target, capsys):
    op = client.probe(sleep=0.1)  # no worker: it stays queued and no update ever comes
    start = time.monotonic()
    with pytest.raises(GigauditError) as exc:
        client.wait(op.name, timeout=1.0, progress=True)
    assert exc.value.code.name == "DEADLINE_EXCEEDED" and time.monotonic() - start < 2.0
    start = time.monotonic()
    assert main(["operations", "wait", op.name, "--timeout", "1", "--server", target, "-o", "json"]) == 2
    assert time.monotonic() - start < 2.5
    out, err = capsys.readouterr()
    assert json.loads(out)["metadata"]["state"] == "QUEUED" and "DEADLINE_EXCEEDED" in err


def test_list_json_has_numbers_and_describe_shows_the_queue(client, target, capsys):
    first, second = client.probe(sleep=0.1), client.probe(sleep=0.1)
    assert main(["operations", "list", "--server", target, "-o", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    meta = rows[second.name]["metadata"]
    assert rows[first.name]["metadata"]["kind"] == "noop" and meta["state"] == "QUEUED"
    assert isinstance(meta.get("queue_position", 0), int)  # a number, never proto-JSON's string
    assert main(["operations", "describe", second.name, "--server", target, "-o", "table"]) == 0
    text = capsys.readouterr().out
    assert f"Name:        {second.name}" in text and "State:       QUEUED" in text and "ahead" in text
    assert main(["operations", "logs", second.name, "--server", target]) == 0


def test_cancel_says_cancelled_and_delete_force_cancels_then_deletes(client, target, capsys):
    op = client.probe(sleep=0.1)
    assert main(["operations", "delete", op.name, "--server", target]) == 2
    err = capsys.readouterr().err
    assert "cancel it first" in err and err.count("cancel it first") == 1  # printed once
    assert main(["operations", "delete", op.name, "--force", "--server", target]) == 0
    assert f"deleted {op.name}" in capsys.readouterr().err
    other = client.probe(sleep=0.1)
    assert main(["operations", "cancel", other.name, "--server", target]) == 0
    err = capsys.readouterr().err
    assert "cancelled" in err and "canceld" not in err


@pytest.mark.slow
def test_delete_right_after_cancel_waits_for_the_job_to_stop(client, target, worker, capsys):  # noqa: F811
    op = client.probe(sleep=3.0)
    deadline = time.monotonic() + 30
    while client.get_operation(op.name).metadata and time.monotonic() < deadline:
        from gigaudit.client import operation_metadata

        if operation_metadata(client.get_operation(op.name)).state == 2:  # RUNNING on the worker
            break
        time.sleep(0.05)
    assert main(["operations", "cancel", op.name, "--server", target]) == 0
    assert main(["operations", "delete", op.name, "--server", target]) == 0, capsys.readouterr().err
    with pytest.raises(GigauditError) as exc:
        client.get_operation(op.name)
    assert exc.value.code.name == "NOT_FOUND"
