"""CLI paths that need no server: `gigaudit report`, usage errors, and torch-free imports."""
import json
import subprocess
import sys
import tarfile

import grpc
import pytest
from graph_factory import random_graph
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from gigaudit.cli import _resource_id, main
from gigaudit.client import _archive
from gigaudit.errors import GigauditError


def test_client_package_does_not_import_torch():
    code = ("import sys, gigaudit, gigaudit.cli, gigaudit.report, gigaudit.drift, gigaudit.embedded;"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'gig', 'gigaudit_server'));"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_report_command_gates_on_the_policy(tmp_path, graph):
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "loose.yaml").write_text("concentration:\n  max_share: 1.0\n")
    (tmp_path / "strict.yaml").write_text("name: strict\nevidence:\n  max_completeness_delta: 0.001\n")
    assert main(["report", str(tmp_path / "graph.json"), "--out", str(tmp_path / "a"),
                 "--policy", str(tmp_path / "loose.yaml")]) == 0
    assert json.loads((tmp_path / "a" / "policy.json").read_text())["passed"] is True
    assert json.loads((tmp_path / "a" / "graph.json").read_text()) == graph
    assert (tmp_path / "a" / "index.html").stat().st_size > 10_000
    assert main(["report", str(tmp_path / "graph.json"), "--out", str(tmp_path / "b"),
                 "--policy", str(tmp_path / "strict.yaml")]) == 1
    assert json.loads((tmp_path / "b" / "policy.json").read_text())["policy"] == "strict"


def test_report_command_with_drift(tmp_path, graph):
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    (tmp_path / "old.json").write_text(json.dumps(random_graph(seed=5)))
    (tmp_path / "drift.yaml").write_text("drift:\n  max_mean_edge_change: 0.1\n")
    args = ["report", str(tmp_path / "graph.json"), "--out", str(tmp_path / "r"), "--policy", str(tmp_path / "drift.yaml")]
    assert main(args + ["--reference", str(tmp_path / "graph.json")]) == 0
    assert main(args + ["--reference", str(tmp_path / "old.json")]) == 1


@pytest.mark.parametrize("content, message", [
    ("evidence:\n  max_delta: 1\n", "evidence.max_delta: Extra inputs"),
    (None, "policy file not found"),
])
def test_bad_policy_exits_2_and_names_the_field(tmp_path, graph, capsys, content, message):
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    if content is not None:
        (tmp_path / "p.yaml").write_text(content)
    code = main(["report", str(tmp_path / "graph.json"), "--out", str(tmp_path / "o"), "--policy", str(tmp_path / "p.yaml")])
    assert code == 2 and message in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--model", "m.safetensors"])
    assert exc.value.code == 2 and "--arch" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2


def test_server_status_details_are_described():
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="header.model.architecture", description="unknown: foo")])
    info = error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="gigaudit", metadata={"name": "m"})
    packed = []
    for d in (bad, info):
        packed.append(any_pb2.Any())
        packed[-1].Pack(d)
    error = GigauditError.from_status(status_pb2.Status(code=3, message="bad model", details=packed))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error.details[0], error_details_pb2.BadRequest)
    assert str(error).splitlines() == ["INVALID_ARGUMENT: bad model", "  field header.model.architecture: unknown: foo",
                                       "  reason INVALID_ARGUMENT (gigaudit): name=m"]


def test_folder_is_packed_deterministically(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "data" / cls / "a.png")
    (tmp_path / "data" / "notes.txt").write_text("ignored")
    with _archive(tmp_path / "data") as (first, _):
        digest = first.read_bytes()
        names = tarfile.open(first).getnames()
    with _archive(tmp_path / "data") as (second, _):
        assert second.read_bytes() == digest
    assert names == ["cat/a.png", "dog/a.png"] and not first.exists()
    assert _resource_id(tmp_path / "data") == _resource_id(tmp_path / "data")
    assert _resource_id(tmp_path / "data").startswith("data-")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        with _archive(tmp_path / "empty"):
            pass
    with pytest.raises(ValueError, match="folder or an archive"):
        with _archive(tmp_path / "data" / "notes.txt"):
            pass


def test_serve_is_forwarded_to_the_server_package(capfd):
    pytest.importorskip("gigaudit_server")
    assert main(["serve", "--help"]) == 0
    assert "--redis-url" in capfd.readouterr().out
