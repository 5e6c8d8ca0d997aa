"""`gigaudit status` against a real server and worker (real gRPC, real Redis): JSON with every field, the table
with the worker's job and stage, the newest dead letters."""
import json
import time

import pytest

from api_harness import server, store, worker  # noqa: F401 (fixtures)
from gigaudit import AuditClient
from gigaudit.cli import main
from gigaudit_server.queue.jobs import JobQueue


@pytest.fixture
def target(server, monkeypatch):  # noqa: F811
    for name in ("GIGAUDIT_SERVER", "GIGAUDIT_CONTEXT", "GIGAUDIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIGAUDIT_CONFIG", "/nonexistent/gigaudit-config.yaml")
    return f"127.0.0.1:{server.port}"


def status_json(target: str, capsys) -> dict:
    assert main(["status", "--server", target, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def dead_letter(server) -> str:  # noqa: F811
    queue = JobQueue(server.backend.queue.redis, max_attempts=1)
    job = queue.submit("audit", {}, owner="ci")
    context = None
    while context is None:
        context = queue.claim_next("gpu-7", 100)
    queue.settle(context.job, "retry", {"code": "INTERNAL", "message": "CUDA error: out of memory"})
    return job.id


def test_status_json_and_table_show_the_worker_with_its_job_and_stage(server, worker, target, capsys):  # noqa: F811
    with AuditClient(target) as client:
        op = client.probe(sleep=20)
        deadline = time.monotonic() + 30
        while True:
            view = status_json(target, capsys)
            mine = [w for w in view["workers"] if w["operation"] == op.name and w["done"] > 0]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert mine, view
        row = mine[0]
        assert (row["name"], row["device"], row["alive"], row["stage"], row["total"]) == \
            ("test-worker", "cpu", True, "sleep", 200)
        assert row["heartbeat_time"].endswith("Z")
        assert view["queue"] == {"queued": 0, "running": 1, "lag": 0, "pending": 1}  # zeros present, as numbers
        assert view["dead_letters"] == 0 and view["recent_dead_letters"] == []

        assert main(["status", "--server", target, "-o", "table"]) == 0
        text = capsys.readouterr().out
        lines = text.splitlines()
        assert lines[0] == "QUEUE  queued 0  running 1  lag 0  pending 1"
        header = next(line for line in lines if line.startswith("WORKER"))
        assert header.split() == ["WORKER", "DEVICE", "ALIVE", "HEARTBEAT", "OPERATION", "STAGE", "PROGRESS"]
        worker_row = next(line for line in lines if line.startswith("test-worker")).split()
        assert worker_row[:3] == ["test-worker", "cpu", "yes"] and worker_row[4:7] == ["ago", op.name, "sleep"]
        assert worker_row[7].endswith("/200")
        assert lines[-1] == "DEAD LETTERS  0"
        client.cancel_operation(op.name)


def test_status_shows_the_newest_dead_letters_and_no_workers(server, target, capsys):  # noqa: F811
    dead = [dead_letter(server) for _ in range(3)]  # no worker here: nothing else takes them
    view = status_json(target, capsys)
    assert view["workers"] == [] and view["dead_letters"] == 3
    assert [d["operation"] for d in view["recent_dead_letters"]] == [f"operations/{i}" for i in reversed(dead)]
    assert main(["status", "--server", target, "-o", "table", "--dead-letters", "2"]) == 0
    text = capsys.readouterr().out
    assert "No workers" in text and "DEAD LETTERS  3 (newest 2 below; all: `gigaudit dead-letters list`)" in text
    assert f"operations/{dead[2]}" in text and f"operations/{dead[0]}" not in text and "out of memory" in text
    assert main(["status", "--server", target, "-o", "yaml", "--dead-letters", "0"]) == 0
    out = capsys.readouterr().out
    assert "dead_letters: 3" in out and "recent_dead_letters: []" in out
    assert main(["status", "--server", target, "--dead-letters", "-1"]) == 2
    assert "--dead-letters must be between 0 and 1000" in capsys.readouterr().err
