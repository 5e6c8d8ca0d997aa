"""AuditClient and the CLI against the real server (`python -m gigaudit_server serve`, embedded Redis + worker)."""
import json
import re
import pickle

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from PIL import Image

from gigaudit import AuditClient, GigauditError
from gigaudit.cli import main
from gigaudit.embedded import embedded_server
from gigaudit.v1 import resource_state_pb2

gig_synthetic = pytest.importorskip("gig.synthetic")
WEIGHTS = gig_synthetic.ASSETS / "partsnet.safetensors"
MODEL = dict(architecture="partsnet", num_classes=6, input_size=32, mean=[0, 0, 0], std=[1, 1, 1])


@pytest.fixture(scope="module")
def server():
    with embedded_server() as target:
        yield target


@pytest.fixture
def client(server):
    with AuditClient(server, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    images, labels, _ = gig_synthetic.make_parts_dataset(12, size=32, seed=1)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / f"c{int(y)}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def test_architectures_are_listed(client):
    assert "partsnet" in [a.name for a in client.list_architectures()]


def test_upload_model_is_idempotent_per_request_id(client):
    first = client.upload_model(WEIGHTS, "parts-a", request_id="req-parts-a", **MODEL)
    assert first.name == "models/parts-a" and first.size_bytes == WEIGHTS.stat().st_size and len(first.sha256) == 64
    again = client.upload_model(WEIGHTS, "parts-a", request_id="req-parts-a", **MODEL)
    assert again == first
    with pytest.raises(GigauditError) as exc:
        client.upload_model(WEIGHTS, "parts-a", request_id="another", **MODEL)
    assert exc.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert any(isinstance(d, error_details_pb2.ResourceInfo) for d in exc.value.details)
    assert client.get_model("parts-a") == first
    assert "parts-a" in [m.name.split("/")[1] for m in client.list_models()]
    layers = client.list_layers("parts-a")
    assert layers.default_layers and all(any(l.name == d for l in layers.layers) for d in layers.default_layers)


def test_upload_is_sent_once_then_waits_on_the_operation_while_the_worker_is_busy(client, monkeypatch):
    import gigaudit.client as client_module

    sent = []
    chunks = client_module._chunks
    monkeypatch.setattr(client_module, "_chunks", lambda *a: (sent.append(a[0]), chunks(*a))[1])
    busy = client.probe(sleep=4.0)  # the only (embedded) worker
    with pytest.raises(GigauditError) as exc:
        client.upload_model(WEIGHTS, "parts-busy", request_id="req-parts-busy", timeout=0.5, **MODEL)
    assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and len(sent) == 1  # waited, did not re-send
    creating = client.get_model("parts-busy")
    assert creating.state == resource_state_pb2.RESOURCE_STATE_CREATING and creating.operation
    op = client.upload_model(WEIGHTS, "parts-busy", request_id="req-parts-busy", wait=False, **MODEL)
    assert op.name == creating.operation  # the same upload again: the same operation, nothing registered twice
    model = client.wait(op.name, progress=False)
    assert model.name == "models/parts-busy" and client.get_model("parts-busy").state == \
        resource_state_pb2.RESOURCE_STATE_ACTIVE
    client.wait(busy.name, progress=False)


def test_errors_carry_the_servers_details(client, tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(GigauditError) as exc:
        client.upload_model(fake, "pickled", **MODEL)
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "pickle" in exc.value.message
    with pytest.raises(GigauditError) as exc:
        client.upload_model(WEIGHTS, "bad-arch", **{**MODEL, "architecture": "nope"})
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "architecture" in str(exc.value)
    with pytest.raises(GigauditError) as exc:
        client.get_model("pickled")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND


def test_dataset_folder_upload_list_delete(client, dataset_dir):
    dataset = client.upload_dataset(dataset_dir, "parts-data")
    assert dataset.image_count == 12 and set(dataset.class_names) <= {f"c{i}" for i in range(6)}
    assert dataset.name in [d.name for d in client.list_datasets()]
    client.delete_dataset("parts-data")
    with pytest.raises(GigauditError) as exc:
        client.get_dataset("parts-data")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND


def test_unreachable_server_is_unavailable():
    with AuditClient("127.0.0.1:1", timeout=2) as c:
        with pytest.raises(GigauditError) as exc:
            c.wait_ready(timeout=1)
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.slow
def test_cli_audit_writes_report_and_gates(server, dataset_dir, tmp_path, capsys):
    (tmp_path / "policy.yaml").write_text("concentration:\n  max_share: 1.0\n")
    args = ["audit", "--server", server, "--model", str(WEIGHTS), "--arch", "partsnet", "--num-classes", "6",
            "--dataset", str(dataset_dir), "--input-size", "32", "--mean", "0", "0", "0", "--std", "1", "1", "1",
            "--n-concepts", "6", "--steps", "4", "--exemplars", "3", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "a"), "--policy", str(tmp_path / "policy.yaml")]) == 0
    graph = json.loads((tmp_path / "a" / "graph.json").read_text())
    assert graph["n_images"] == 12 and graph["layers"][-1] == "logits" and graph["edges"]
    concepts = [n for n in graph["nodes"] if n["kind"] == "concept"]
    assert concepts and all(n["exemplars"] for n in concepts if n["count"])
    html = (tmp_path / "a" / "index.html").read_text()
    gallery = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))["gallery"]
    assert gallery and all(ex["name"] for shots in gallery.values() for ex in shots)
    embedded = [ex for shots in gallery.values() for ex in shots if ex.get("src")]
    assert embedded and all(ex["src"].startswith("data:image/webp;base64,") for ex in embedded)
    assert json.loads((tmp_path / "a" / "policy.json").read_text())["passed"] is True
    # the same audit again reuses model, dataset and operation; a strict policy fails it with exit code 1
    (tmp_path / "strict.yaml").write_text("concentration:\n  max_share: 0.01\n")
    assert main(args + ["--out", str(tmp_path / "b"), "--policy", str(tmp_path / "strict.yaml")]) == 1
    assert json.loads((tmp_path / "b" / "graph.json").read_text()) == graph
    err = capsys.readouterr().err
    assert "policy check failed: concentration" in err
    audit_id = re.search(r"audit (audit-[0-9a-f]+): operation", err).group(1)
    model = _only_model(server)
    # the resources it made: listed, refused while in use, deleted with --force
    assert main(["concept-sets", "list", model, "--server", server]) == 0
    assert f"{model}/conceptSets/{audit_id}" in [c["name"] for c in json.loads(capsys.readouterr().out)]
    assert main(["graphs", "list", model, "--server", server]) == 0
    assert f"{model}/conceptGraphs/{audit_id}" in [g["name"] for g in json.loads(capsys.readouterr().out)]
    assert main(["concept-sets", "delete", f"{model}/conceptSets/{audit_id}", "--server", server]) == 2
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert main(["graphs", "delete", f"{model.split('/')[1]}/{audit_id}", "--server", server]) == 0
    assert main(["models", "delete", model, "--server", server]) == 2  # its concept set still uses it
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert main(["models", "delete", model, "--force", "--server", server]) == 0
    assert main(["models", "get", model, "--server", server]) == 2


def _only_model(server) -> str:
    with AuditClient(server) as c:
        (model,) = [m.name for m in c.list_models() if m.name.startswith("models/partsnet-")]
    return model


def test_cli_reports_server_errors_with_exit_2(server, tmp_path, capsys):
    args = ["audit", "--server", server, "--model", str(WEIGHTS), "--arch", "no-such-arch", "--num-classes", "6",
            "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown architecture 'no-such-arch'" in err and "gigaudit architectures" in err  # before any upload
    assert err.count("\n") == 1 and len(err) < 400
    args[args.index("no-such-arch")] = "partsnett"
    assert main(args) == 2 and "did you mean partsnet?" in capsys.readouterr().err
    assert main(["models", "get", "missing-model", "--server", server]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_cli_manages_operations(server, client, capsys):
    op = client.probe(sleep=0.2)
    assert main(["operations", "wait", op.name, "--server", server]) == 0
    assert json.loads(capsys.readouterr().out)["done"] is True
    assert main(["operations", "list", "--server", server]) == 0
    assert op.name in [o["name"] for o in json.loads(capsys.readouterr().out)]
    assert main(["operations", "list", "--state", "succeeded", "--server", server]) == 0
    assert op.name in [o["name"] for o in json.loads(capsys.readouterr().out)]
    assert main(["operations", "list", "--state", "running", "--owner", "nobody", "--server", server]) == 0
    assert op.name not in [o["name"] for o in json.loads(capsys.readouterr().out)]
    assert main(["operations", "delete", op.name, "--server", server]) == 0
    assert main(["operations", "get", op.name, "--server", server]) == 2


def test_wait_times_out_then_finishes_and_cancel_is_reported(client):
    op = client.probe(sleep=2.0)
    with pytest.raises(GigauditError) as exc:
        client.wait(op.name, timeout=0.3, progress=False)
    assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not client.get_operation(op.name).done  # still running: waiting gave up, not the job
    stages = []
    client.wait(op.name, progress=False, on_update=lambda meta: stages.append(meta.state))
    assert client.get_operation(op.name).done and stages
    assert op.name in [o.name for o in client.list_operations()]
    slow = client.probe(sleep=5.0)
    client.cancel_operation(slow.name)
    with pytest.raises(GigauditError) as exc:
        client.wait(slow.name, timeout=30, progress=False)
    assert exc.value.code == grpc.StatusCode.CANCELLED


@pytest.mark.slow
def test_cli_audit_with_probes_names_concepts_and_reports_unmatched_probes(server, dataset_dir, tmp_path, capsys):
    """`gigaudit audit --probes DIR` end to end: the probe of a planted part names concepts in graph.json, and a
    probe like any audit image is reported as matching nothing."""
    probes = tmp_path / "probes"
    (probes / "part1" / "masks").mkdir(parents=True)
    (probes / "ordinary").mkdir()
    images, _, parts = gig_synthetic.make_parts_dataset(60, size=32, seed=7)
    shown = [i for i in range(len(images)) if (parts[i] == 1).any()][:10]
    for j, i in enumerate(shown):
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            probes / "part1" / f"{j:03d}.png")
        Image.fromarray(((parts[i] == 1).numpy() * 255).astype(np.uint8)).save(probes / "part1" / "masks" / f"{j:03d}.png")
    ordinary, _, _ = gig_synthetic.make_parts_dataset(10, size=32, seed=11)
    for j, x in enumerate(ordinary):
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(probes / "ordinary" / f"{j:03d}.png")
    args = ["audit", "--server", server, "--model", str(WEIGHTS), "--arch", "partsnet", "--num-classes", "6",
            "--dataset", str(dataset_dir), "--input-size", "32", "--mean", "0", "0", "0", "--std", "1", "1", "1",
            "--n-concepts", "6", "--steps", "4", "--exemplars", "3", "--no-progress", "--probes", str(probes),
            "--out", str(tmp_path / "out"), "--explain", str(probes / "part1" / "000.png")]
    assert main(args) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert "Image explanations" in html and "000.png" in html  # the explained image is in the report
    graph = json.loads((tmp_path / "out" / "graph.json").read_text())
    labels = {n.get("label") for n in graph["nodes"]}
    assert "part1" in labels and "ordinary" not in labels
    assert graph["evidence"]["naming"]["unmatched"] == ["ordinary"]
    printed = capsys.readouterr()
    assert "part1" in printed.out + printed.err and "ordinary" in printed.out + printed.err
