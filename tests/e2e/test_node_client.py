"""A Node.js client (@grpc/grpc-js) talks to the real server: architectures, a small upload, errors, operations."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import google.api
import google.longrunning
import google.rpc
import numpy as np
import pytest
from PIL import Image

from gigaudit import AuditClient
from gigaudit.embedded import embedded_server

NODE = shutil.which("node")
HERE = Path(__file__).parent / "node"
ROOT = Path(__file__).resolve().parents[2]
if NODE is None and os.environ.get("CI"):  # CI installs Node (scripts/setup.sh): missing there is a failure
    pytestmark = pytest.mark.usefixtures("node_is_required")
else:
    pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (scripts/setup.sh installs it)")


@pytest.fixture
def node_is_required():
    pytest.fail("node is not installed, and CI is set: scripts/setup.sh should have installed Node.js and npm")
gig_synthetic = pytest.importorskip("gig.synthetic")


def googleapis_includes(into: Path) -> Path:
    """The googleapis .proto files shipped by googleapis-common-protos, under their import paths."""
    for package in (google.api, google.longrunning, google.rpc):
        src = Path(package.__path__[0])
        (into / "google" / src.name).mkdir(parents=True, exist_ok=True)
        for proto in src.glob("*.proto"):
            name = "operations.proto" if proto.name == "operations_proto.proto" else proto.name
            shutil.copyfile(proto, into / "google" / src.name / name)
    return into


@pytest.fixture(scope="module")
def node_modules():
    if not (HERE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=300)
    return HERE / "node_modules"


@pytest.mark.slow
def test_node_client_against_the_server(node_modules, tmp_path):
    images, labels, _ = gig_synthetic.make_parts_dataset(6, size=32, seed=2)
    for i, (x, y) in enumerate(zip(images, labels)):
        (tmp_path / "data" / f"c{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "data" / f"c{int(y)}" / f"{i}.png")
    weights = gig_synthetic.ASSETS / "partsnet.safetensors"
    with embedded_server() as target, AuditClient(target) as client:
        client.upload_model(weights, "from-python", architecture="partsnet", num_classes=6, input_size=32,
                            mean=[0, 0, 0], std=[1, 1, 1])
        client.upload_dataset(tmp_path / "data", "tiny")
        op = client.audit("from-python", "tiny", "node-audit", concept_options={"n_concepts": 4},
                          graph_options={"steps": 2})
        done = subprocess.run([NODE, str(HERE / "client.js"), target, str(ROOT / "protos"),
                               str(googleapis_includes(tmp_path / "include")), str(weights), op.name],
                              capture_output=True, text=True, timeout=300, cwd=HERE)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
        python_view = client.get_model("from-node")
        final = client.get_operation(op.name)
    assert "partsnet" in seen["architectures"] and seen["validated"] is True
    assert seen["model"] == {"name": "models/from-node", "sha256": python_view.sha256,
                             "size_bytes": str(weights.stat().st_size)}
    assert set(seen["models"]) == {"models/from-node", "models/from-python"}
    assert seen["missing"]["code"] == 5 and seen["missing"]["has_status_details"]  # NOT_FOUND with details
    assert seen["operation"] == {"name": op.name, "metadata_type": "type.googleapis.com/gigaudit.v1.OperationMetadata"}
    assert seen["watched"]["done"] is True and final.done and not final.HasField("error")
    assert seen["watched"]["response_type"] == "type.googleapis.com/gigaudit.v1.AuditResult"
