"""Discoverable layers and honest metadata over real gRPC, a real Redis and a real worker: ListLayers of an
architecture without weights, architecture descriptions, refusal of layers that can be no source, dataset image
sizes, queue positions and stage histories of operations."""
from __future__ import annotations

import io
import tarfile

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro_pb
from google.longrunning import operations_pb2_grpc as lro_grpc
from PIL import Image

import api_harness as h
from api_harness import api_channel, server, store, worker  # noqa: F401 (fixtures)
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit_server.api import models as models_api
from gigaudit_server.storage.catalog import Catalog
from gigaudit_server.worker.architectures import architecture_descriptions


@pytest.fixture
def channel(api_channel):
    return api_channel


@pytest.fixture
def models(channel):
    return model_grpc.ModelServiceStub(channel)


def test_layers_of_an_architecture_without_weights_come_from_a_worker_and_are_cached(models, worker, redis_client):
    request = model_pb.ListLayersRequest(architecture="partsnet", num_classes=6)
    layers = models.ListLayers(request, timeout=30)
    assert list(layers.default_layers) == ["features.0", "features.1", "features.2", "features.3"]
    by_name = {layer.name: layer for layer in layers.layers}
    assert [name for name, layer in by_name.items() if layer.is_default] == list(layers.default_layers)
    assert by_name["head"].type == "Linear" and not by_name["head"].is_cut  # its output is the logits
    assert by_name["head"].reason == models_api.NOT_A_SOURCE
    assert by_name["features.3"].is_cut and not by_name["features.3"].reason
    assert Catalog(redis_client).architecture_layers("partsnet", 6) is not None  # cached
    assert models.ListLayers(request, timeout=5) == layers
    assert not redis_client.keys("*job:layers-*"), "the internal job is deleted once its answer is cached"


def test_layers_of_an_architecture_are_unavailable_without_a_worker(models, redis_client, monkeypatch):
    Catalog(redis_client).publish_architectures(["partsnet"])  # a worker registered once, none runs now
    monkeypatch.setattr(models_api, "LAYERS_WAIT_S", 0.5)
    error = h.refused(lambda: models.ListLayers(model_pb.ListLayersRequest(architecture="partsnet", num_classes=3),
                                                timeout=10), grpc.StatusCode.UNAVAILABLE)
    assert "no worker listed the layers of 'partsnet'" in error.details()
    assert redis_client.keys("*job:layers-partsnet-3"), "the request stays queued for a worker to answer"


@pytest.mark.parametrize("request_fields, field", [
    ({"architecture": "", "num_classes": 3}, "architecture"),
    ({"architecture": "nope", "num_classes": 3}, "architecture"),
    ({"architecture": "partsnet", "num_classes": 0}, "num_classes"),
    ({"parent": "models/x", "architecture": "partsnet", "num_classes": 3}, "architecture"),
])
def test_layers_of_an_architecture_check_the_request(models, redis_client, request_fields, field):
    Catalog(redis_client).publish_architectures(["partsnet"])
    error = h.refused(lambda: models.ListLayers(model_pb.ListLayersRequest(**request_fields), timeout=10),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert field in error.details()


def test_architectures_carry_one_line_descriptions(models, redis_client):
    Catalog(redis_client).publish_architectures(architecture_descriptions())
    listed = {a.name: a.description for a in models.ListArchitectures(model_pb.ListArchitecturesRequest()).architectures}
    assert listed["resnet18"] == "ResNet-18 from Deep Residual Learning for Image Recognition."
    assert listed["partsnet"].startswith("PartsNet")
    assert all(description and "\n" not in description and "<http" not in description
               for description in listed.values())


def test_a_layer_that_can_be_no_source_is_refused_before_a_job_starts(channel, models, worker):
    h.registered_model(channel, "parts", h.partsnet_bytes())
    dataset_grpc.DatasetServiceStub(channel).UploadDataset(h.dataset_requests("parts", h.parts_tar(4)))
    audits = audit_grpc.AuditServiceStub(channel)
    error = h.refused(lambda: audits.Audit(audit_pb.AuditRequest(parent="models/parts", audit_id="a",
                                                                 dataset="datasets/parts",
                                                                 layers=["features.3", "head"])),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "'head' (its output is the model's logits" in error.details()
    assert "analysable layers: " in error.details() and error.details().count("head") == 1  # not among them
    listed = models.ListLayers(model_pb.ListLayersRequest(parent="models/parts"))
    assert {layer.name for layer in listed.layers if not layer.is_cut and layer.reason == models_api.NOT_A_SOURCE} \
        == {"head"}
    kinds = []
    for operation in lro_grpc.OperationsStub(channel).ListOperations(lro_pb.ListOperationsRequest()).operations:
        message = metadata_pb.OperationMetadata()
        operation.metadata.Unpack(message)
        kinds.append(message.kind)
    assert "audit" not in kinds and "list_layers" not in kinds


def _tar_of_sizes(sizes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i, (height, width) in enumerate(sizes):
            png = io.BytesIO()
            Image.new("RGB", (width, height), (i * 40 % 255, 0, 0)).save(png, format="PNG")
            h.add_member(tar, f"c{i % 2}/{i}.png", png.getvalue())
    return buffer.getvalue()


def test_a_dataset_records_the_sizes_of_its_images(channel):
    datasets = dataset_grpc.DatasetServiceStub(channel)
    dataset = datasets.UploadDataset(h.dataset_requests("sizes", _tar_of_sizes([(96, 64), (32, 48), (64, 200),
                                                                               (96, 64)])))
    sizes = dataset.image_sizes
    assert (sizes.min_height, sizes.max_height, sizes.median_height) == (32, 96, 64)
    assert (sizes.min_width, sizes.max_width, sizes.median_width) == (48, 200, 64)


def test_operations_show_queue_position_and_stage_history(channel, redis_url, store):
    from api_harness import start_worker

    from gigaudit.v1 import probe_service_pb2 as probe_pb
    from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc
    from google.protobuf import duration_pb2

    probes, operations = probe_grpc.ProbeServiceStub(channel), lro_grpc.OperationsStub(channel)
    names = [probes.SubmitProbe(probe_pb.SubmitProbeRequest(sleep=duration_pb2.Duration(nanos=200_000_000))).name
             for _ in range(3)]

    def meta(name):
        message = metadata_pb.OperationMetadata()
        operations.GetOperation(lro_pb.GetOperationRequest(name=name)).metadata.Unpack(message)
        return message

    assert [meta(name).queue_position for name in names] == [0, 1, 2]
    thread, stop = start_worker(redis_url, store)
    try:
        for name in names:
            assert not h.wait_operation(channel, name, timeout=60).HasField("error")
    finally:
        stop.set()
        thread.join(10)
    done = meta(names[-1])
    assert done.queue_position == 0
    assert [(event.stage, event.attempt, event.error) for event in done.history] == [("claimed", 1, ""),
                                                                                     ("sleep", 1, "")]
    assert done.history[0].worker == "test-worker" and done.history[0].start_time.seconds > 0
