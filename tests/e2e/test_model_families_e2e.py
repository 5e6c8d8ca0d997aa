"""Bring-your-own models end to end: each architecture family registered through the client over real gRPC, Redis
and a worker, audited (concepts, graph, evaluation) on tiny planted images, and written out as a report.

Families: a timm ResNet, a timm ViT, ConvNeXt and EfficientNet (timm), a Hugging Face ViT config, an ONNX export of
a torchvision ResNet-18, and the example plugin (examples/gigaudit-example-plugin). Models are untrained (random
weights); what is checked is the path through the service: weights checked, the model's own preprocessing
resolved, every analysed layer present in the graph, GIG's completeness on the served graph, and a report.
"""
from __future__ import annotations

import importlib.metadata
import io
import math
import tarfile
from pathlib import Path

import pytest
import safetensors.torch
import torch

import api_harness as h
from gigaudit.client import AuditClient
from gigaudit.report import write_report
from gigaudit.v1 import model_service_pb2 as model_pb

pytestmark = pytest.mark.slow

N_IMAGES = 12
SIDE = 64
NON_SQUARE = (48, 64)  # height, width: the timm ResNet's input, shorter side resized and centre-cropped
CLASSES = [f"class{c}" for c in range(6)]
CONCEPTS = {"n_concepts": 3, "pfvs_per_image": 4, "seed": 0}
GRAPH: dict = {}  # gig's defaults (the quadrature rule and steps it chooses per segment)


def _safetensors(model: torch.nn.Module, path: Path) -> Path:
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def timm_model(name: str, **options):
    def make(tmp: Path):
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=len(CLASSES), **options).eval()
        return _safetensors(model, tmp / "model.safetensors"), {"architecture": f"timm:{name}",
                                                                "architecture_options": options}
    return make


def hf_vit(tmp: Path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=SIDE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(CLASSES))
    folder = tmp / "hf-vit"
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    # transformers' ViT is not torch.fx-traceable: its encoder layers are captured with hooks (docs/tracing.md)
    return folder, {"architecture": "huggingface",
                    "tracer": model_pb.TracerOptions(hooked_layers=["vit.layers.0", "vit.layers.1"])}


def onnx_resnet18(tmp: Path):
    import torchvision

    model = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()
    path = tmp / "resnet18.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, SIDE, SIDE), str(path), dynamo=False, opset_version=17)
    return path, {"architecture": "onnx"}


def example_plugin(tmp: Path):
    entry = next(e for e in importlib.metadata.entry_points(group="gigaudit.architectures"))
    model = entry.load()(len(CLASSES)).eval()
    return _safetensors(model, tmp / "plugin.safetensors"), {"architecture": entry.name}


FAMILIES = {
    "timm-resnet": (timm_model("resnet10t"), ["layer2", "layer3"]),
    "timm-vit": (timm_model("vit_tiny_patch16_224", img_size=SIDE, patch_size=8, depth=2), ["blocks.0", "blocks.1"]),
    "timm-convnext": (timm_model("convnext_atto"), ["stages.1", "stages.2"]),
    "timm-efficientnet": (timm_model("efficientnet_b0"), ["blocks.3", "blocks.5"]),
    "huggingface-vit": (hf_vit, ["vit.layers.0", "vit.layers.1"]),
    "onnx-resnet18": (onnx_resnet18, None),
    "plugin": (example_plugin, None),
}


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    store = f"file://{tmp_path_factory.mktemp('families')}/store"
    thread, stop = h.start_worker(redis_url, store)
    server = h.start_server(redis_url, store)
    client = AuditClient(f"127.0.0.1:{server.port}")
    client.wait_ready(30)
    data = tmp_path_factory.mktemp("data") / "parts.tar"
    data.write_bytes(h.parts_tar(N_IMAGES, SIDE))
    client.upload_dataset(data, "parts")
    yield client
    client.close()
    server.stop(0)
    stop.set()
    thread.join(30)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_is_audited_through_the_service(service: AuditClient, family: str, tmp_path):
    make, layers = FAMILIES[family]
    weights, spec = make(tmp_path)
    model_id = family
    size = NON_SQUARE if family == "timm-resnet" else (SIDE, SIDE)  # a CNN takes any input size
    model = service.upload_model(weights, model_id, num_classes=len(CLASSES), class_names=CLASSES,
                                 preprocessing=model_pb.Preprocessing(height=size[0], width=size[1]), **spec)
    assert model.state == 2, "ACTIVE once a worker checked the weights"
    assert (model.preprocessing.height, model.preprocessing.width) == size
    assert model.preprocessing.source, "the resolved preprocessing says where it came from"
    listing = service.list_layers(model_id)
    cuts = [layer.name for layer in listing.layers if layer.is_cut]
    layers = layers or list(listing.default_layers)[-2:] or cuts[-3:-1]
    assert set(layers) <= set(cuts), f"analysed layers are cuts: {layers} among {cuts}"

    op = service.audit(model_id, "parts", "audit", layers=layers, concept_options=CONCEPTS, graph_options=GRAPH,
                       metrics=["completeness"], evaluation_images=4)
    service.wait(op.name, timeout=600, progress=False)
    graph = service.get_graph(f"models/{model_id}/conceptGraphs/audit")
    assert [layer for layer in graph.data["layers"] if layer in layers] == layers, "every analysed layer is in it"
    nodes = [n for n in graph.data["nodes"] if n.get("kind", "concept") == "concept"]
    assert {n["layer"] for n in nodes} == set(layers) and len(nodes) > 0
    completeness = graph.evidence.get("completeness") or {}
    assert completeness, "the graph carries GIG's completeness per layer pair"
    for pair, entry in completeness.items():
        assert math.isfinite(entry["dataset_delta"]) and entry["dataset_delta"] < 0.2, (pair, entry)

    exemplars = service.graph_exemplars(graph, f"models/{model_id}/conceptSets/audit")
    assert exemplars, "exemplars rendered with the model's preprocessing"
    path = write_report(tmp_path / "report", graph, exemplars=exemplars, title=f"gigaudit: {family}")
    assert path.exists() and path.stat().st_size > 10_000
