"""Tiny models of each architecture family and their upload files, for the tests of the families (unit and API)."""
from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile

import safetensors.torch
import torch
import torchvision
from onnx import TensorProto, helper

SIDE = 32


def weights(model: torch.nn.Module) -> bytes:
    return safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()})


def hf_vit(num_labels: int = 5, **config):
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(image_size=SIDE, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=num_labels,
                                               **config)).eval()


def hf_archive(model, tmp_path, kind: str = "tar", processor: bool = True, edit=None, extra=()) -> bytes:
    from transformers import ViTImageProcessor

    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    if processor:
        ViTImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    if edit:
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
    for name, data in extra:
        (folder / name).write_bytes(data)
    buffer = io.BytesIO()
    if kind == "tar":
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"model/{path.name}")
    else:
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in sorted(folder.iterdir()):
                archive.write(path, path.name)
    return buffer.getvalue()


def onnx_resnet18(opset: int = 17) -> tuple[torch.nn.Module, bytes]:
    model = torchvision.models.resnet18(num_classes=5).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, SIDE, SIDE), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return model, buffer.getvalue()


def unsupported_onnx() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Cosh", ["a"], ["b"]),
                               helper.make_node("Asinh", ["b"], ["c"]),
                               helper.make_node("Fancy", ["c"], ["y"], domain="com.example")], "odd", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    return model.SerializeToString()


def install_plugin(folder, distribution: str, entries: dict[str, str], module: str, source: str) -> None:
    """A distribution on ``folder`` (put on sys.path) with ``gigaudit.architectures`` entry points."""
    info = folder / f"{distribution.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.3\nSummary: test\n")
    (info / "entry_points.txt").write_text("[gigaudit.architectures]\n"
                                           + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    (folder / f"{module}.py").write_text(source)
