"""`gigaudit audit` registers by everything that changes the audit: other settings give a new model, dataset or audit
id, and an id already taken with other settings is a clear error, never a silent reuse (real embedded server)."""
from argparse import Namespace

import grpc
import numpy as np
import pytest
from PIL import Image

from gigaudit import AuditClient, GigauditError
from gigaudit.cli import _model_registration, _register_dataset, _register_model, main

gig_synthetic = pytest.importorskip("gig.synthetic")
from gigaudit.embedded import embedded_server  # noqa: E402

WEIGHTS = gig_synthetic.ASSETS / "partsnet.safetensors"
SETTINGS = dict(model=WEIGHTS, arch="partsnet", num_classes=6, class_names=[], input_size=32, mean=[0.0, 0.0, 0.0],
                std=[1.0, 1.0, 1.0], timeout=120.0)


@pytest.fixture(scope="module")
def server():
    with embedded_server() as target:
        yield target


@pytest.fixture
def client(server):
    with AuditClient(server, timeout=60) as c:
        yield c


def _images(folder, seed: int):
    images, labels, _ = gig_synthetic.make_parts_dataset(6, size=32, seed=seed)
    for i, (x, y) in enumerate(zip(images, labels)):
        (folder / f"c{int(y)}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"c{int(y)}" / f"{i}.png")
    return folder


def test_other_normalisation_is_another_model_and_the_same_is_reused(client):
    first = _register_model(Namespace(**SETTINGS), client, progress=False)
    assert first.name.startswith("models/partsnet-") and list(first.mean) == [0, 0, 0]
    again = _register_model(Namespace(**SETTINGS), client, progress=False)
    assert again.name == first.name
    other = _register_model(Namespace(**{**SETTINGS, "mean": [0.5, 0.5, 0.5]}), client, progress=False)
    assert other.name != first.name and list(other.mean) == [0.5, 0.5, 0.5]
    resized = _register_model(Namespace(**{**SETTINGS, "input_size": 48}), client, progress=False)
    assert resized.name not in (first.name, other.name) and resized.input_size == 48


def test_an_id_taken_with_other_settings_is_an_error_naming_them(client):
    wanted = Namespace(**{**SETTINGS, "std": [0.25, 0.25, 0.25]})
    model_id, _, _ = _model_registration(wanted)
    client.upload_model(WEIGHTS, model_id, architecture="partsnet", num_classes=6, input_size=32, mean=[0, 0, 0],
                        std=[1, 1, 1], request_id="someone-else")  # the derived id, registered by hand otherwise
    with pytest.raises(ValueError, match=r"other settings \(std: \[1, 1, 1\] registered vs \[0.25, 0.25, 0.25\]"):
        _register_model(wanted, client, progress=False)


def test_other_images_are_another_dataset_and_a_taken_id_is_an_error(client, tmp_path):
    args = Namespace(dataset=_images(tmp_path / "parts", seed=1))
    first = _register_dataset(args, client, progress=False)
    assert _register_dataset(args, client, progress=False).name == first.name
    other = _register_dataset(Namespace(dataset=_images(tmp_path / "more" / "parts", seed=2)), client, progress=False)
    assert other.name != first.name and other.sha256 != first.sha256
    # the first id taken by other content (a hand registration): refused, not reused
    client.delete_dataset(first.name)
    client.upload_dataset(tmp_path / "more" / "parts", first.name.split("/")[1], request_id="someone-else")
    with pytest.raises(ValueError, match="holds other content"):
        _register_dataset(args, client, progress=False)


def test_a_chosen_audit_id_with_other_options_is_refused(server, client, tmp_path, capsys):
    data = _images(tmp_path / "d", seed=3)
    # the CLI names the classes after the dataset's folders (c0…c5), which is part of the model it registers
    model = _register_model(Namespace(**{**SETTINGS, "class_names": [f"c{i}" for i in range(6)]}), client,
                            progress=False)
    dataset = _register_dataset(Namespace(dataset=data), client, progress=False)
    first = client.audit(model.name, dataset.name, "chosen", graph_options={"steps": 2}, request_id="first-run")
    try:
        argv = ["audit", "--server", server, "--model", str(WEIGHTS), "--arch", "partsnet", "--num-classes", "6",
                "--dataset", str(data), "--input-size", "32", "--mean", "0", "0", "0", "--std", "1", "1", "1",
                "--steps", "3", "--audit-id", "chosen", "--out", str(tmp_path / "out"), "--no-progress"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "audit id 'chosen' is taken" in err and "--audit-id" in err and err.count("is taken") == 1
        assert err.count("\n") <= 4  # the transform, the class names, the error (and the embedded server's line)
        assert not (tmp_path / "out").exists()
    finally:
        client.cancel_operation(first.name)
        with pytest.raises(GigauditError) as exc:
            client.wait(first.name, timeout=60, progress=False)
        assert exc.value.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.OK)
