"""Issue 8 §4, §5, §7 (archives): a refused upload stores and registers nothing; UploadModel answers with its
validation operation at once, even with no worker; broken archives are INVALID_ARGUMENT, never INTERNAL."""
from __future__ import annotations

import time

import bad_inputs
import grpc
import pytest
from adversary import ACTIVE, CREATING, assert_clean, error_code, meta, misfit_weights, refused
from google.rpc import code_pb2

import api_harness as h
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def assert_only_dataset(caller, tmp_path, kept: dataset_pb.Dataset, refused_id: str) -> None:
    """``kept`` is the one dataset listed and stored; ``refused_id`` is unknown."""
    refused(lambda: caller.datasets.GetDataset(dataset_pb.GetDatasetRequest(name=f"datasets/{refused_id}")),
            NOT_FOUND)
    listed = caller.datasets.ListDatasets(dataset_pb.ListDatasetsRequest())
    assert [d.name for d in listed.datasets] == [kept.name]
    assert h.stored_files(tmp_path, "datasets") == [kept.sha256]


@pytest.mark.parametrize("compressed", [False, True], ids=["tar", "tar-gz"])
def test_a_dataset_with_a_non_utf8_class_folder_is_refused_and_not_registered(admin, bob, tmp_path, compressed):
    kept = admin.upload_dataset("kept")
    refused(lambda: admin.upload_dataset("bad", bad_inputs.non_utf8_class_tar(compressed)), INVALID)
    for caller in (admin, bob):  # every caller's listing keeps working
        assert_only_dataset(caller, tmp_path, kept, "bad")


@pytest.mark.parametrize("kind", sorted(bad_inputs.BAD_ARCHIVES))
def test_broken_archives_are_invalid_argument_and_store_nothing(admin, tmp_path, kind):
    kept = admin.upload_dataset("kept")
    data = bad_inputs.BAD_ARCHIVES[kind]()  # announced with its own size and sha256: only its content is broken
    refused(lambda: admin.upload_dataset("broken", data), INVALID)
    assert_only_dataset(admin, tmp_path, kept, "broken")


def test_upload_model_answers_with_an_operation_at_once_while_no_worker_runs(admin, workers):
    started = time.monotonic()
    operation = admin.models.UploadModel(h.model_requests("parts", h.partsnet_bytes()), timeout=10)
    assert time.monotonic() - started < 5, "the upload does not wait for a worker"
    assert operation.name.startswith("operations/") and not operation.done
    assert meta(operation).owner == "ops"
    model = admin.models.GetModel(model_pb.GetModelRequest(name="models/parts"))
    assert model.state == CREATING and model.operation == operation.name
    workers.start()
    done = admin.succeeded(operation.name)
    registered = model_pb.Model()
    assert done.response.Unpack(registered) and registered.name == "models/parts"
    model = admin.models.GetModel(model_pb.GetModelRequest(name="models/parts"))
    assert model.state == ACTIVE and list(model.default_layers)


def test_weights_that_fail_validation_end_the_operation_invalid_argument_and_the_model_is_gone(admin, workers,
                                                                                                tmp_path):
    workers.start()
    operation = admin.wait(admin.upload_model("misfit", misfit_weights(), num_classes=6).name)
    assert error_code(operation) == code_pb2.INVALID_ARGUMENT, operation.error
    assert_clean(operation.error.message)
    refused(lambda: admin.models.GetModel(model_pb.GetModelRequest(name="models/misfit")), NOT_FOUND)
    assert not admin.models.ListModels(model_pb.ListModelsRequest()).models
    assert h.stored_files(tmp_path, "weights") == [], "the refused weights are removed"
