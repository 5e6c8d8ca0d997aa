"""Architecture families through the real API (gRPC on loopback, Redis, a worker): ListArchitectures says where each
architecture comes from; timm, Hugging Face, ONNX and plugin models register with their own preprocessing; bad
models get clear errors and leave what was stored before untouched."""
from __future__ import annotations

import hashlib
import importlib
import io
import sys
import tarfile
import warnings

import grpc
import pytest
import safetensors.torch
import torch

import api_harness as h
from api_harness import api_channel, server, store  # noqa: F401 (fixtures)
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import resource_state_pb2 as state_pb
from model_families import (
    SIDE,
    hf_archive,
    hf_vit,
    install_plugin,
    onnx_resnet18,
    unsupported_onnx,
    weights,
)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A plugin whose import raises, on the path before the worker publishes its architectures."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    install_plugin(folder, "failing-plugin", {"failing_net": "failing_plugin_mod:build"}, "failing_plugin_mod",
                   "raise ImportError('libcuda.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield folder
    sys.modules.pop("failing_plugin_mod", None)


@pytest.fixture
def worker(plugin_dir, redis_client, redis_url, store):  # noqa: F811 - this module's worker sees the plugin
    thread, stop = h.start_worker(redis_url, store)
    yield
    stop.set()
    thread.join(10)


@pytest.fixture
def models(api_channel):
    return model_grpc.ModelServiceStub(api_channel)


def requests(model_id: str, data: bytes, architecture: str, num_classes: int = 5, input_size: int = 0,
             options: dict | None = None, **model):
    spec = model_pb.Model(architecture=architecture, num_classes=num_classes, input_size=input_size,
                          size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), **model)
    if options:
        spec.architecture_options.update(options)
    yield model_pb.UploadModelRequest(header=model_pb.UploadModelHeader(model_id=model_id, model=spec))
    for start in range(0, len(data), 64 * 1024):
        yield model_pb.UploadModelRequest(chunk=data[start:start + 64 * 1024])


def register(channel, models, model_id: str, data: bytes, architecture: str, **spec) -> model_pb.Model:
    operation = h.wait_operation(channel, models.UploadModel(requests(model_id, data, architecture, **spec),
                                                             timeout=60).name)
    assert not operation.HasField("error"), operation.error.message
    model = model_pb.Model()
    operation.response.Unpack(model)
    return model


def test_list_architectures_says_the_family_and_source_of_each(models, worker):
    import timm

    listed = {a.name: a for a in models.ListArchitectures(model_pb.ListArchitecturesRequest()).architectures}
    assert {a.family for a in listed.values()} == {"torchvision", "gigaudit", "timm", "huggingface", "onnx", "plugin"}
    assert (listed["timm:convnext_atto"].family, listed["timm:convnext_atto"].source) == ("timm", f"timm {timm.__version__}")
    assert listed["resnet18"].description.startswith("ResNet-18 from Deep Residual Learning")
    assert (listed["tiny_cnn"].source, listed["failing_net"].source) == ("gigaudit-example-plugin 0.1.0",
                                                                          "failing-plugin 0.3")
    assert (listed["huggingface"].weights_format, listed["onnx"].weights_format, listed["tiny_cnn"].weights_format) \
        == ("huggingface", "onnx", "safetensors")
    plugins = models.ListArchitectures(model_pb.ListArchitecturesRequest(family="plugin")).architectures
    assert {a.name for a in plugins} == {"tiny_cnn", "failing_net"}
    error = h.refused(lambda: models.ListArchitectures(model_pb.ListArchitecturesRequest(family="keras")),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "valid families are: torchvision, gigaudit, timm, huggingface, onnx, plugin" in error.details()


def test_each_family_registers_with_its_own_preprocessing(models, api_channel, worker, tmp_path):
    import timm

    vit_options = {"img_size": SIDE, "patch_size": 8, "depth": 2}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **vit_options)
    model = register(api_channel, models, "timm-vit", weights(vit), "timm:vit_tiny_patch16_224", options=vit_options)
    assert model.state == state_pb.RESOURCE_STATE_ACTIVE and model.family == "timm"
    assert dict(model.architecture_options) == vit_options and isinstance(vit_options["depth"], int)
    assert (model.preprocessing.height, model.preprocessing.width) == (SIDE, SIDE)
    assert model.preprocessing.interpolation == model_pb.INTERPOLATION_BICUBIC
    assert model.preprocessing.source.startswith("timm pretrained_cfg")
    assert "blocks.1" in {layer.name for layer in models.ListLayers(
        model_pb.ListLayersRequest(parent="models/timm-vit")).layers}

    # fx cannot trace transformers' ViT: its blocks are captured with hooks (gig.configure_tracing, set by the worker)
    hooked = ["vit.layers.0", "vit.layers.1"]
    model = register(api_channel, models, "hf-vit", hf_archive(hf_vit(), tmp_path), "huggingface",
                     tracer=model_pb.TracerOptions(hooked_layers=hooked))
    assert model.family == "huggingface" and model.preprocessing.source.startswith("preprocessor_config.json")
    assert list(model.tracer.hooked_layers) == hooked
    layers = {layer.name: layer for layer in models.ListLayers(model_pb.ListLayersRequest(parent="models/hf-vit")).layers}
    assert {layers[name].capture for name in hooked} == {"hook"}
    assert model.preprocessing.resize_mode == model_pb.RESIZE_MODE_EXACT

    _, data = onnx_resnet18()
    model = register(api_channel, models, "onnx-resnet", data, "onnx",
                     preprocessing=model_pb.Preprocessing(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))
    assert model.family == "onnx" and (model.preprocessing.height, model.preprocessing.width) == (SIDE, SIDE)
    assert list(model.preprocessing.std) == [0.25, 0.25, 0.25]

    from gigaudit_example_plugin import tiny_cnn

    model = register(api_channel, models, "plugin", weights(tiny_cnn(5, width=4)), "tiny_cnn", input_size=SIDE,
                     options={"width": 4})
    assert model.family == "plugin" and model.preprocessing.source


def test_a_model_without_an_input_size_is_refused_where_the_family_has_no_config(models, worker):
    from gigaudit_example_plugin import tiny_cnn

    error = h.refused(lambda: models.UploadModel(requests("plugin", weights(tiny_cnn(5)), "tiny_cnn")),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "input_size" in error.details() and "timm, huggingface, onnx" in error.details()
    for options, message in (({"x": {"nested": 1}}, "'x' must be a number, string, boolean"),
                             ({f"k{i}": i for i in range(33)}, "33 keys, more than the limit of 32")):
        error = h.refused(lambda: models.UploadModel(requests("plugin", b"x" * 16, "tiny_cnn", input_size=SIDE,
                                                              options=options)), grpc.StatusCode.INVALID_ARGUMENT)
        assert message in error.details()
    error = h.refused(lambda: models.UploadModel(requests(
        "plugin", b"x" * 16, "tiny_cnn", preprocessing=model_pb.Preprocessing(height=SIDE, crop_pct=2.0),
        tracer=model_pb.TracerOptions(leaf_modules=["a b"]))), grpc.StatusCode.INVALID_ARGUMENT)
    assert "height and width together" in error.details() and "crop_pct" in error.details()
    assert "leaf_modules holds bad names" in error.details()


def _bad_hf(tmp_path) -> bytes:
    return hf_archive(hf_vit(), tmp_path, edit=lambda c: c.update(auto_map={"AutoConfig": "x.Y"}))


def _not_an_hf_archive(tmp_path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        h.add_member(tar, "config.json", b'{"model_type": "vit"}')
        h.add_member(tar, "pytorch_model.bin", b"\x80\x04pickle")
    return buffer.getvalue()


def _resnet18_weights(tmp_path) -> bytes:
    import torchvision

    return weights(torchvision.models.resnet18(num_classes=5))


# (name, make(tmp_path) -> bytes, architecture, where it is refused, status, message)
BAD = {
    "unknown-timm-name": (lambda _: b"x" * 64, "timm:convnext_ato", "upload", grpc.StatusCode.INVALID_ARGUMENT,
                          "unknown architecture 'timm:convnext_ato'; did you mean 'timm:convnext_atto'"),
    "hf-remote-code": (_bad_hf, "huggingface", "upload", grpc.StatusCode.INVALID_ARGUMENT,
                       "config.json asks for remote code (auto_map)"),
    "hf-other-members": (_not_an_hf_archive, "huggingface", "upload", grpc.StatusCode.INVALID_ARGUMENT,
                         "holds pytorch_model.bin; only config.json, model.safetensors"),
    "onnx-unsupported-ops": (lambda _: unsupported_onnx(), "onnx", "validation", grpc.StatusCode.INVALID_ARGUMENT,
                             "cannot convert: Asinh (domain 'ai.onnx', opset 17), Cosh (domain 'ai.onnx', opset 17), "
                             "Fancy (domain 'com.example', opset 1)"),
    "not-onnx": (lambda _: safetensors.torch.save({"w": torch.zeros(3)}), "onnx", "upload",
                 grpc.StatusCode.INVALID_ARGUMENT, "not an ONNX model"),
    "plugin-import-fails": (_resnet18_weights, "failing_net", "validation", grpc.StatusCode.INVALID_ARGUMENT,
                            "plugin architecture 'failing_net' (failing-plugin 0.3, failing_plugin_mod:build) failed "
                            "to import: ImportError: libcuda.so.1"),
    "weights-of-another-architecture": (_resnet18_weights, "timm:resnet10t", "validation",
                                        grpc.StatusCode.INVALID_ARGUMENT,
                                        "weights do not match timm:resnet10t with 5 classes: missing keys: "
                                        "conv1.0.weight, "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_models_get_clear_errors_and_what_was_stored_stays(models, api_channel, worker, tmp_path, case):
    make, architecture, where, code, message = BAD[case]
    kept = h.partsnet_bytes()
    h.registered_model(api_channel, "kept", kept)
    data = make(tmp_path)
    spec = {"input_size": SIDE} if architecture == "failing_net" else {}
    if where == "upload":
        error = h.refused(lambda: models.UploadModel(requests("bad", data, architecture, **spec), timeout=60), code)
        details = error.details()
    else:
        operation = models.UploadModel(requests("bad", data, architecture, **spec), timeout=60)
        done = h.wait_operation(api_channel, operation.name)
        assert done.HasField("error"), "the weights check was expected to fail"
        assert done.error.code == code.value[0]
        details = done.error.message
    assert message in details, details
    h.refused(lambda: models.GetModel(model_pb.GetModelRequest(name="models/bad")), grpc.StatusCode.NOT_FOUND)
    assert models.GetModel(model_pb.GetModelRequest(name="models/kept")).state == state_pb.RESOURCE_STATE_ACTIVE
    stored = h.stored_files(tmp_path, "weights")
    assert any(hashlib.sha256(kept).hexdigest() in name for name in stored), stored
    assert not any(hashlib.sha256(data).hexdigest() in name for name in stored), "nothing of the refused upload"


def test_list_layers_of_an_architecture_with_options(models, worker):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        request = model_pb.ListLayersRequest(architecture="timm:vit_tiny_patch16_224", num_classes=3)
        request.architecture_options.update({"img_size": SIDE, "patch_size": 8, "depth": 2})
        listing = models.ListLayers(request, timeout=60)
    names = {layer.name for layer in listing.layers}
    assert "blocks.1" in names and "blocks.2" not in names, "built with depth 2"
    error = h.refused(lambda: models.ListLayers(model_pb.ListLayersRequest(architecture="onnx", num_classes=3),
                                                timeout=60), grpc.StatusCode.FAILED_PRECONDITION)
    assert "register the model" in error.details()
