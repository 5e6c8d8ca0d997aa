"""Every architecture family builds and loads tiny weights (timm, Hugging Face, ONNX, plugins), checked against the
architecture, with clear errors for what does not fit."""
from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import warnings
import zipfile

import onnx
import pytest
import safetensors.torch
import torch
import torchvision
from onnx import TensorProto, helper

from gigaudit_server.worker import architectures as arch
from gigaudit_server.worker.architectures import onnx_models
from gigaudit_server.worker.models import load
from model_families import SIDE, hf_archive, hf_vit, install_plugin, onnx_resnet18, unsupported_onnx, weights



def same_outputs(a: torch.nn.Module, b: torch.nn.Module, atol: float = 1e-6) -> float:
    x = torch.rand(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (a(x) - b(x)).abs().max().item()
    assert difference <= atol, difference
    return difference


# ---------------------------------------------------------------------- listing
def test_every_family_is_listed_with_its_source_and_weights_format():
    listed = {a.name: a for a in arch.architectures()}
    assert {a.family for a in listed.values()} == set(arch.FAMILIES)
    assert listed["resnet18"].family == "torchvision" and listed["resnet18"].source.startswith("torchvision 0.")
    assert listed["partsnet"].family == "gigaudit"
    import timm

    timm_names = [n for n, a in listed.items() if a.family == "timm"]
    assert len(timm_names) == len(timm.list_models()) and "timm:convnext_atto" in timm_names
    assert listed["timm:resnet10t"].source == f"timm {timm.__version__}"
    assert listed["timm:resnet10t"].description == "Constructs a ResNet-10-T model."
    assert (listed["huggingface"].weights_format, listed["onnx"].weights_format) == ("huggingface", "onnx")
    assert listed["tiny_cnn"].family == "plugin" and listed["tiny_cnn"].source == "gigaudit-example-plugin 0.1.0"
    assert {a.weights_format for n, a in listed.items() if a.family not in ("huggingface", "onnx")} == {"safetensors"}
    assert [a.name for a in arch.architectures("plugin")] == ["tiny_cnn"]
    with pytest.raises(ValueError, match="unknown architecture family 'keras'.*timm.*plugin"):
        arch.architectures("keras")


# ---------------------------------------------------------------------- timm
@pytest.mark.parametrize("name, options", [
    ("resnet10t", {}),
    ("vit_tiny_patch16_224", {"img_size": SIDE, "patch_size": 8, "depth": 2}),
    ("convnext_atto", {}),
    ("efficientnet_b0", {}),
])
def test_timm_models_load_their_safetensors_and_say_their_preprocessing(name, options):
    import timm

    original = timm.create_model(name, pretrained=False, num_classes=5, **options).eval()
    loaded = load(f"timm:{name}", 5, weights(original), options=options)
    assert loaded.family == "timm" and not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    same_outputs(loaded.model, original, atol=0)
    assert loaded.config["source"] == "timm pretrained_cfg" and loaded.config["height"] > 0
    if "img_size" in options:
        assert (loaded.config["height"], loaded.config["width"]) == (SIDE, SIDE)


def test_an_unknown_timm_name_gets_close_matches_and_the_count():
    import timm

    with pytest.raises(ValueError, match=rf"unknown timm model 'convnext_ato'; did you mean 'timm:convnext_atto'.*"
                                         rf"has {len(timm.list_models())} models"):
        arch.build_architecture("timm:convnext_ato", 3)


def test_timm_options_are_checked():
    with pytest.raises(ValueError, match=r"refuses the architecture_options colour.*unexpected keyword.*colour"):
        arch.build_architecture("timm:resnet10t", 3, {"colour": "blue"})
    with pytest.raises(ValueError, match=r"checkpoint_path, pretrained cannot be set"):
        arch.build_architecture("timm:resnet10t", 3, {"pretrained": True, "checkpoint_path": "/etc/passwd"})
    with pytest.raises(ValueError, match=r"option 'img_size' must be a JSON number.*dict"):
        arch.build_architecture("timm:resnet10t", 3, {"img_size": {"h": 1}})
    with pytest.raises(ValueError, match="torchvision architectures take no architecture_options"):
        arch.build_architecture("resnet18", 3, {"dropout": 0.1})


def test_weights_for_another_architecture_list_the_keys():
    other = weights(torchvision.models.resnet18(num_classes=5))
    with pytest.raises(ValueError) as info:
        load("timm:resnet10t", 5, other)
    message = str(info.value)
    assert message.startswith("weights do not match timm:resnet10t with 5 classes")
    assert "missing keys: conv1.0.weight, " in message
    assert re.search(r"unexpected keys: [^;]*\bconv1\.weight\b", message)
    assert re.search(r"mis-shaped keys: .*\(weights \[\d+(, \d+)*\], timm:resnet10t with 5 classes \[", message)
    assert re.search(r"and \d+ more", message), "long lists are cut after the first few"


# ---------------------------------------------------------------------- Hugging Face
class Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_a_hugging_face_vit_loads_from_its_archive_and_returns_logits(tmp_path, kind):
    original = hf_vit()
    loaded = load("huggingface", 5, hf_archive(original, tmp_path, kind))
    assert loaded.family == "huggingface"
    assert isinstance(loaded.model, type(original)), "module paths stay transformers' own"
    assert "vit.embeddings.patch_embeddings.projection" in dict(loaded.model.named_modules())
    same_outputs(loaded.model, Logits(original), atol=1e-6)
    assert loaded.config["source"] == "preprocessor_config.json"
    assert (loaded.config["height"], loaded.config["width"]) == (SIDE, SIDE)


def test_a_hugging_face_model_without_processor_takes_its_config_image_size(tmp_path):
    loaded = load("huggingface", 5, hf_archive(hf_vit(), tmp_path, processor=False))
    assert loaded.config == {"height": SIDE, "width": SIDE}


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(auto_map={"AutoModelForImageClassification": "evil.Model"}), "asks for remote code \\(auto_map"),
    (lambda c: c.update(trust_remote_code=True), "asks for remote code \\(trust_remote_code"),
    (lambda c: c.update(model_type="bert"), "model_type 'bert' is not a transformers image classifier"),
    (lambda c: c.update(architectures=["ViTForMaskedImageModeling"]), "are not image classifiers"),
])
def test_a_hugging_face_config_that_is_not_a_plain_image_classifier_is_refused(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load("huggingface", 5, hf_archive(hf_vit(), tmp_path, edit=edit))


def test_hugging_face_weights_are_checked_against_the_config(tmp_path):
    data = hf_archive(hf_vit(), tmp_path)
    with pytest.raises(ValueError, match="num_labels 5.*num_classes 4"):
        load("huggingface", 4, data)
    small = hf_archive(hf_vit(), tmp_path / "small", edit=lambda c: c.update(hidden_size=48))  # weights of 32
    with pytest.raises(ValueError, match=r"weights do not match huggingface with 5 classes: mis-shaped keys: "
                                         r"classifier.weight \(weights \[5, 32\], huggingface with 5 classes \[5, 48\]"):
        load("huggingface", 5, small)


@pytest.mark.parametrize("extra, message", [
    ([("tokenizer.json", b"{}")], "holds tokenizer.json; only config.json, model.safetensors"),
    ([("modeling_evil.py", b"import os")], "holds modeling_evil.py"),
])
def test_a_hugging_face_archive_with_other_members_is_refused(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        load("huggingface", 5, hf_archive(hf_vit(), tmp_path, extra=extra))


# ---------------------------------------------------------------------- ONNX
def test_an_onnx_export_of_resnet18_equals_the_original():
    original, data = onnx_resnet18()
    assert "Identity" in {n.op_type for n in onnx.load_from_string(data).graph.node}, "the export emits Identity"
    loaded = load("onnx", 5, data)
    assert loaded.family == "onnx" and loaded.config == {"height": SIDE, "width": SIDE}
    same_outputs(loaded.model, original, atol=1e-5)


def test_onnx_operators_onnx2torch_lacks_are_all_named():
    with pytest.raises(ValueError) as info:
        load("onnx", 3, unsupported_onnx())
    message = str(info.value)
    assert "cannot convert: Asinh (domain 'ai.onnx', opset 17), Cosh (domain 'ai.onnx', opset 17), " \
           "Fancy (domain 'com.example', opset 1)" in message, message
    assert "Relu" not in message


def test_opset_19_identity_is_named_with_the_way_out():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ValueError, match=r"Identity \(domain 'ai.onnx', opset 19\).*export with opset_version=17"):
        onnx_models.convert(model.SerializeToString())


@pytest.mark.parametrize("data", [b"definitely not onnx", safetensors.torch.save({"w": torch.zeros(2)}),
                                  b"PK\x03\x04rest of a zip", b"\x80\x04pickle"])
def test_a_file_that_is_not_onnx_is_named_so(data):
    with pytest.raises(ValueError, match="not an ONNX model"):
        load("onnx", 3, data)


def test_onnx_tensors_in_external_files_are_refused():
    _, data = onnx_resnet18()
    model = onnx.load_from_string(data)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/passwd")
    with pytest.raises(ValueError, match="keeps tensors in external files"):
        load("onnx", 5, model.SerializeToString())


# ---------------------------------------------------------------------- plugins
def test_the_example_plugin_builds_with_its_options():
    from gigaudit_example_plugin import tiny_cnn

    original = tiny_cnn(4, width=8).eval()
    loaded = load("tiny_cnn", 4, weights(original), options={"width": 8})
    assert loaded.family == "plugin" and loaded.config is None
    same_outputs(loaded.model, original, atol=0)
    with pytest.raises(ValueError, match=r"weights do not match tiny_cnn with 4 classes: mis-shaped keys"):
        load("tiny_cnn", 4, weights(original))  # width 16 by default


@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    install_plugin(tmp_path, "broken-plugin", {"broken_import": "broken_plugin_mod:build",
                                               "broken_build": "broken_plugin_ok:build",
                                               "resnet18": "broken_plugin_ok:build"},
                   "broken_plugin_mod", "raise RuntimeError('no GPU driver in this image')\n")
    (tmp_path / "broken_plugin_ok.py").write_text("def build(num_classes, **options):\n"
                                                  "    raise KeyError('layers')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for module in ("broken_plugin_mod", "broken_plugin_ok"):
        sys.modules.pop(module, None)


def test_a_plugin_that_raises_is_named_and_the_others_still_build(broken_plugin, caplog):
    listed = {a.name: a for a in arch.architectures("plugin")}
    assert set(listed) == {"tiny_cnn", "broken_import", "broken_build"}, "listed from metadata, nothing imported"
    assert listed["broken_import"].source == "broken-plugin 0.3"
    assert "broken_plugin_mod" not in sys.modules
    assert "clashes with a built-in architecture" in caplog.text  # the plugin's "resnet18" is skipped
    with pytest.raises(ValueError, match=r"plugin architecture 'broken_import' \(broken-plugin 0.3, "
                                         r"broken_plugin_mod:build\) failed to import: RuntimeError: no GPU driver"):
        arch.build_architecture("broken_import", 3)
    with pytest.raises(ValueError, match=r"'broken_build' .* failed to build with num_classes=3: KeyError: 'layers'"):
        arch.build_architecture("broken_build", 3)
    assert isinstance(arch.build_architecture("resnet18", 3), torchvision.models.ResNet), "the built-in wins"
    assert arch.build_architecture("tiny_cnn", 3) is not None
