"""The CLI's build flags (--arch-option, --leaf-module, --autowrap-function, --hooked-layer): parsed into the
builder's options and TracerOptions, part of the model's id, and a whole `gigaudit audit` of a Hugging Face model
folder whose layers are captured with hooks, on the embedded server."""
from __future__ import annotations

import json

import pytest

from gigaudit import cli
from gigaudit.commands.build_options import architecture_options, build_settings, tracer_options


def _args(*flags: str, model: str = "m.safetensors"):
    return cli._parser().parse_args(["audit", "--model", model, "--arch", "timm:vit_tiny_patch16_224",
                                     "--num-classes", "6", "--dataset", "d", "--out", "o", *flags])


def test_flags_become_builder_options_and_tracer_options():
    args = _args("--arch-option", "img_size=64", "--arch-option", "patch_size=8", "--arch-option", "act=gelu",
                 "--arch-option", "dims=[1, 2]", "--leaf-module", "PatchEmbed", "--hooked-layer", "blocks.0")
    assert architecture_options(args) == {"img_size": 64, "patch_size": 8, "act": "gelu", "dims": [1, 2]}
    tracer = tracer_options(args)
    assert (list(tracer.leaf_modules), list(tracer.hooked_layers), list(tracer.autowrap_functions)) == \
           (["PatchEmbed"], ["blocks.0"], [])
    assert build_settings(args)["architecture_options"]["img_size"] == 64
    assert tracer_options(_args()) is None and build_settings(_args()) == {}


def test_the_flags_change_the_model_id(tmp_path):
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"weights")
    given = ("--input-size", "64", "--mean", "0", "0", "0", "--std", "1", "1", "1")
    plain = cli._model_registration(_args(*given, model=str(weights)))[0]
    sized = cli._model_registration(_args(*given, "--arch-option", "img_size=64", model=str(weights)))[0]
    hooked = cli._model_registration(_args(*given, "--hooked-layer", "blocks.0", model=str(weights)))[0]
    assert len({plain, sized, hooked}) == 3


def test_an_option_without_a_value_is_refused():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        architecture_options(_args("--arch-option", "img_size"))


@pytest.mark.slow
def test_a_hugging_face_folder_is_audited_with_hooked_layers(tmp_path, monkeypatch, capsys):
    transformers = pytest.importorskip("transformers")
    synthetic = pytest.importorskip("gig.synthetic")
    monkeypatch.setenv("GIGAUDIT_CONFIG", str(tmp_path / "config.yaml"))  # no saved context: the embedded server
    monkeypatch.delenv("GIGAUDIT_SERVER", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=6)
    folder = tmp_path / "hf-vit"
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    images = tmp_path / "images"
    _image_folder(images, synthetic)
    out = tmp_path / "report"
    code = cli.main(["audit", "--model", str(folder), "--arch", "huggingface", "--num-classes", "6",
                     "--input-size", "32", "--hooked-layer", "vit.layers.0", "--hooked-layer", "vit.layers.1",
                     "--layers", "vit.layers.0", "vit.layers.1", "--n-concepts", "3", "--dataset", str(images),
                     "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    graph = json.loads((out / "graph.json").read_text())
    assert [layer for layer in graph["layers"] if layer.startswith("vit.")] == ["vit.layers.0", "vit.layers.1"]
    assert (out / "index.html").stat().st_size > 10_000


def _image_folder(folder, synthetic) -> None:
    import io
    import tarfile

    archive = synthetic.parts_archive(12, 32, 0, [f"class{c}" for c in range(6)])
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
