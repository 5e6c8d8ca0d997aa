"""ModelService over real gRPC on loopback, a real Redis and a real worker: uploads, validation as an operation,
refusals, deletes."""
from __future__ import annotations

import io
import pickle
import zipfile

import grpc
import pytest
import torch
from safetensors.torch import save as save_safetensors

import api_harness as h
from api_harness import api_channel, server, store, worker  # noqa: F401 (fixtures)
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import resource_state_pb2 as state_pb


class PartsNetBytes:
    @staticmethod
    def other() -> bytes:
        """Valid safetensors of a PartsNet with 4 classes (does not fit a 6-class registration)."""
        from gig.synthetic import PartsNet

        return save_safetensors({k: v.contiguous() for k, v in PartsNet(num_classes=4).state_dict().items()})


@pytest.fixture
def channel(api_channel):
    return api_channel


@pytest.fixture
def models(channel):
    return model_grpc.ModelServiceStub(channel)


def validation_error(channel, operation):
    """The status a finished validation operation failed with."""
    done = h.wait_operation(channel, operation.name)
    assert done.HasField("error"), "the validation was expected to fail"
    return grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == done.error.code)), done.error.message


def test_upload_answers_an_operation_at_once_and_the_model_is_creating_until_validated(models, channel):
    data = h.partsnet_bytes()
    operation = models.UploadModel(h.model_requests("parts", data), timeout=10)  # no worker runs
    assert operation.name.startswith("operations/") and not operation.done
    model = models.GetModel(model_pb.GetModelRequest(name="models/parts"))
    assert model.state == state_pb.RESOURCE_STATE_CREATING and model.operation == operation.name
    h.refused(lambda: models.ListLayers(model_pb.ListLayersRequest(parent="models/parts")),
              grpc.StatusCode.FAILED_PRECONDITION)


def test_upload_registers_a_validated_model_and_lists_its_layers(models, channel, worker):
    data = h.partsnet_bytes()
    model = h.registered_model(channel, "parts", data)
    assert model.name == "models/parts" and model.sha256 and model.size_bytes == len(data)
    assert model.state == state_pb.RESOURCE_STATE_ACTIVE
    assert model.default_layers, "validation reports the default layers"
    assert models.GetModel(model_pb.GetModelRequest(name="models/parts")) == model
    layers = models.ListLayers(model_pb.ListLayersRequest(parent="models/parts"))
    cuts = {layer.name for layer in layers.layers if layer.is_cut}
    assert set(layers.default_layers) <= cuts
    assert all(layer.type and (layer.is_cut or layer.reason) for layer in layers.layers)
    assert [layer.name for layer in layers.layers if layer.is_default] == list(layers.default_layers)
    assert "partsnet" in {a.name for a in models.ListArchitectures(model_pb.ListArchitecturesRequest()).architectures}


def test_retried_upload_returns_the_original_and_another_request_is_refused(models, channel, worker):
    data = h.partsnet_bytes()
    first = models.UploadModel(h.model_requests("parts", data, request_id="r-1"))
    assert models.UploadModel(h.model_requests("parts", data, request_id="r-1")).name == first.name
    error = h.refused(lambda: models.UploadModel(h.model_requests("parts", data, request_id="r-2")),
                      grpc.StatusCode.ALREADY_EXISTS)
    assert h.details_of(error)["ResourceInfo"].resource_name == "models/parts"
    other = PartsNetBytes.other()
    error = h.refused(lambda: models.UploadModel(h.model_requests("parts", other, request_id="r-1")),
                      grpc.StatusCode.ALREADY_EXISTS)
    assert "r-1" in error.details() and "different" in error.details()


@pytest.mark.parametrize("kind", ["pickle", "torchscript", "garbage"])
def test_code_carrying_or_foreign_formats_are_refused_before_storing(models, tmp_path, kind):
    if kind == "pickle":
        data = pickle.dumps({"weight": [1.0, 2.0]}, protocol=4)
    elif kind == "torchscript":
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
        data = buffer.getvalue()
        assert zipfile.is_zipfile(io.BytesIO(data))
    else:
        data = b"\xff" * 64
    error = h.refused(lambda: models.UploadModel(h.model_requests("bad", data)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "safetensors" in error.details()
    assert {"pickle": "pickle", "torchscript": "zip"}.get(kind, "header") in error.details()
    assert h.details_of(error)["BadRequest"].field_violations[0].field == "chunk"
    assert h.stored_files(tmp_path, "weights") == []
    h.refused(lambda: models.GetModel(model_pb.GetModelRequest(name="models/bad")), grpc.StatusCode.NOT_FOUND)


def test_truncated_upload_and_wrong_sha256_store_nothing(models, tmp_path):
    data = h.partsnet_bytes()
    error = h.refused(lambda: models.UploadModel(h.model_requests("cut", data[:-100], size_bytes=len(data),
                                                                sha256="0" * 64)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "truncated" in error.details()
    error = h.refused(lambda: models.UploadModel(h.model_requests("sha", data, sha256="ab" * 32)),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "sha256 mismatch" in error.details()
    assert h.stored_files(tmp_path, "weights") == []
    assert not models.ListModels(model_pb.ListModelsRequest()).models


def test_weights_that_do_not_fit_the_architecture_fail_their_operation_listing_the_keys(models, channel, worker,
                                                                                      tmp_path):
    data = PartsNetBytes.other()
    code, message = validation_error(channel, models.UploadModel(h.model_requests("four", data, num_classes=6)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "mis-shaped keys" in message and "[4" in message, message
    assert h.stored_files(tmp_path, "weights") == [], "refused weights are removed again"
    h.refused(lambda: models.GetModel(model_pb.GetModelRequest(name="models/four")), grpc.StatusCode.NOT_FOUND)


def test_bad_headers_name_each_field(models, worker):
    error = h.refused(lambda: models.UploadModel(h.model_requests(
        "Bad_Id", b"x", architecture="nonesuch", num_classes=0, input_size=0)), grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in h.details_of(error)["BadRequest"].field_violations] == ["header.model_id"]
    error = h.refused(lambda: models.UploadModel(h.model_requests("ok", b"x", architecture="nonesuch", num_classes=0)),
                    grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v.field: v.description for v in h.details_of(error)["BadRequest"].field_violations}
    assert {"header.model.architecture", "header.model.num_classes"} <= set(fields)
    assert "ListArchitectures" in fields["header.model.architecture"], "where to find the valid architectures"
    error = h.refused(lambda: models.UploadModel(h.model_requests("ok", b"x", architecture="resnet19")),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "did you mean 'resnet18'" in error.details(), error.details()
    h.refused(lambda: models.UploadModel(iter([model_pb.UploadModelRequest(chunk=b"x")])),
            grpc.StatusCode.INVALID_ARGUMENT)


def test_list_pages_and_delete(models, channel, worker, tmp_path):
    data = h.partsnet_bytes()
    for name in ("a", "b", "c"):
        h.registered_model(channel, name, data)
    first = models.ListModels(model_pb.ListModelsRequest(page_size=2))
    second = models.ListModels(model_pb.ListModelsRequest(page_size=2, page_token=first.next_page_token))
    assert [m.name for m in (*first.models, *second.models)] == ["models/a", "models/b", "models/c"]
    assert not second.next_page_token
    h.refused(lambda: models.ListModels(model_pb.ListModelsRequest(page_token="nonsense")),
            grpc.StatusCode.INVALID_ARGUMENT)
    models.DeleteModel(model_pb.DeleteModelRequest(name="models/a"))
    assert len(h.stored_files(tmp_path, "weights")) == 1, "weights shared with other models stay"
    models.DeleteModel(model_pb.DeleteModelRequest(name="models/b"))
    models.DeleteModel(model_pb.DeleteModelRequest(name="models/c"))
    assert h.stored_files(tmp_path, "weights") == []
    h.refused(lambda: models.DeleteModel(model_pb.DeleteModelRequest(name="models/a")), grpc.StatusCode.NOT_FOUND)


def test_messages_over_the_configured_limit_are_refused(redis_client, redis_url, store):
    server = h.start_server(redis_url, store, max_message_bytes=128 * 1024)
    try:
        with h.channel(server) as channel:
            header, *_ = h.model_requests("big", b"x")
            big = iter([header, model_pb.UploadModelRequest(chunk=bytes(256 * 1024))])
            h.refused(lambda: model_grpc.ModelServiceStub(channel).UploadModel(big),
                    grpc.StatusCode.RESOURCE_EXHAUSTED)
    finally:
        server.stop(0)


def test_a_retried_upload_of_a_deleted_model_registers_it_again(models, channel, worker):
    data = h.partsnet_bytes()
    first = h.registered_model(channel, "again", data, request_id="up-1")
    models.DeleteModel(model_pb.DeleteModelRequest(name="models/again"))
    again = models.UploadModel(h.model_requests("again", data, request_id="up-1"))
    assert again.name != first.operation, "not the old operation, whose model is gone"
    h.wait_operation(channel, again.name)
    assert models.GetModel(model_pb.GetModelRequest(name="models/again")).state == state_pb.RESOURCE_STATE_ACTIVE
