"""CLI paths that need no server: `gigaudit report`, usage errors, and torch-free imports."""
import json
import re
import subprocess
import sys
import tarfile
from argparse import Namespace
from pathlib import Path

import grpc
import pytest
from graph_factory import random_graph
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from PIL import Image

from gigaudit.cli import _audit_options, _digest, _model_registration, _stem, main
from gigaudit.client import _archive, _child, _transport_failure, list_filter
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
    assert _stem(tmp_path / "data") == "data" and _stem(tmp_path / "2024 Set.tar") == "r-2024-set"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        with _archive(tmp_path / "empty"):
            pass
    with pytest.raises(ValueError, match="a folder, an archive"):
        with _archive(tmp_path / "data" / "notes.txt"):
            pass


def test_serve_becomes_the_server_process():
    pytest.importorskip("gigaudit_server")
    done = subprocess.run([sys.executable, "-m", "gigaudit.cli", "serve", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--redis-url" in done.stdout and "--shutdown-grace-s" in done.stdout
    assert "usage: gigaudit serve" in done.stdout
    help_ = " ".join(done.stdout.split())  # defaults and environment variables are shown, the data dir is not ./
    assert "(default: 50051; env GIGAUDIT_PORT)" in help_ and "(default: 5.0; env GIGAUDIT_SHUTDOWN_GRACE_S)" in help_
    data_dir = re.search(r"default store live \(default: (\S+);", help_).group(1)
    assert Path(data_dir).is_absolute() and "gigaudit" in data_dir


def _registration(tmp_path, **changed):
    weights = tmp_path / "Net.v2.safetensors"
    if not weights.exists():
        weights.write_bytes(b"weights")
    args = dict(model=weights, arch="resnet18", num_classes=10, class_names=[], input_size=224,
                mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return _model_registration(Namespace(**{**args, **changed}))


@pytest.mark.parametrize("changed", [dict(mean=[0.5, 0.5, 0.5]), dict(std=[0.2, 0.2, 0.2]), dict(input_size=32),
                                     dict(class_names=["a", "b"]), dict(arch="resnet50"), dict(num_classes=9)])
def test_a_models_ids_cover_every_setting_that_changes_the_audit(tmp_path, changed):
    model_id, request_id, wanted = _registration(tmp_path)
    assert model_id.startswith("net-") and _registration(tmp_path) == (model_id, request_id, wanted)
    other_id, other_request, _ = _registration(tmp_path, **changed)
    assert other_id != model_id and other_request != request_id
    (tmp_path / "Net.v2.safetensors").write_bytes(b"other weights")
    assert _registration(tmp_path)[0] != model_id


def test_an_audits_ids_cover_every_option():
    base = Namespace(layers=[], n_concepts=0, seed=0, steps=0, top_t=0)
    digest = _digest(_audit_options(base, "models/m", "datasets/d"))
    assert digest == _digest(_audit_options(Namespace(**vars(base)), "models/m", "datasets/d"))
    for change in (dict(layers=["layer4"]), dict(n_concepts=8), dict(seed=1), dict(steps=4), dict(top_t=2)):
        assert _digest(_audit_options(Namespace(**{**vars(base), **change}), "models/m", "datasets/d")) != digest
    assert _digest(_audit_options(base, "models/other", "datasets/d")) != digest
    assert _digest(_audit_options(base, "models/m", "datasets/other")) != digest


def test_list_filters_and_child_names():
    assert list_filter() == "" and list_filter(owner="ann") == "owner=ann"
    assert list_filter(state="running", owner="ann") == "state=RUNNING AND owner=ann"
    assert _child("conceptSets", "m/c") == "models/m/conceptSets/c"
    assert _child("conceptGraphs", "models/m/conceptGraphs/g") == "models/m/conceptGraphs/g"
    with pytest.raises(ValueError, match="MODEL/ID"):
        _child("conceptSets", "models/m/conceptGraphs/g")


def test_unreachable_server_is_one_line_exit_2_and_not_retried_as_an_answer(capsys):
    assert main(["models", "delete", "m", "--force", "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gigaudit: server error: UNAVAILABLE") and err.count("\n") == 1 and "Traceback" not in err
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(grpc.RpcError) as exc:
            channel.unary_unary("/x.Y/Z")(b"", timeout=2)
    assert _transport_failure(exc.value)  # no connection: the stream may be sent again


def test_new_commands_need_their_arguments(capsys):
    for argv in (["concept-sets", "list"], ["graphs", "delete"], ["dead-letters", "retry"], ["models", "delete"]):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--server", "127.0.0.1:1"])
        assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["operations", "list", "--state", "sleeping", "--server", "127.0.0.1:1"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["concept-sets", "delete", "just-one-part", "--server", "127.0.0.1:1"]) == 2
    assert "MODEL/ID" in capsys.readouterr().err


def test_one_line_keeps_the_details():
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="force", description="models/m has concept sets")])
    packed = any_pb2.Any()
    packed.Pack(bad)
    error = GigauditError.from_status(status_pb2.Status(code=9, message="in use", details=[packed]))
    assert error.one_line() == "FAILED_PRECONDITION: in use (field force: models/m has concept sets)"
