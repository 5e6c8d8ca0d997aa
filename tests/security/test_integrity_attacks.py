"""Issue 8 §3: deletes respect children and unfinished jobs (FAILED_PRECONDITION listing them; ``force`` deletes the
children and cancels the jobs), races between audits, uploads and deletes lose nothing, and an id reused after a
delete never brings back old children."""
from __future__ import annotations

import grpc
from adversary import ACTIVE, audit_request, error_code, paused_upload, refused, sha256
from google.rpc import code_pb2, error_details_pb2

import api_harness as h
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

NOT_FOUND, IN_USE = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION
SET, GRAPH = "models/parts/conceptSets/a", "models/parts/conceptGraphs/a"
RACE_ROUNDS = 20


def listed(error: grpc.RpcError) -> str:
    """The message of a refusal and the subjects and descriptions of its PreconditionFailure."""
    texts = [error.details() or ""]
    for detail in h.status_of(error).details:
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(failure):
            texts += [f"{v.subject} {v.description}" for v in failure.violations]
    return "\n".join(texts)


def assert_gone(caller, model: str, audit_id: str) -> None:
    refused(lambda: caller.concept_set(f"{model}/conceptSets/{audit_id}"), NOT_FOUND)
    refused(lambda: caller.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
        name=f"{model}/conceptGraphs/{audit_id}")), NOT_FOUND)


def test_deleting_a_model_in_use_is_refused_listing_its_children_and_force_deletes_them(parts, admin, alice):
    operation = alice.audit("a")  # no worker: stays queued
    error = refused(lambda: admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts")), IN_USE)
    text = listed(error)
    assert SET in text and GRAPH in text and operation.name.split("/")[1] in text, text
    assert admin.models.GetModel(model_pb.GetModelRequest(name="models/parts")).state == ACTIVE
    assert alice.concept_set(SET).operation == operation.name
    admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts", force=True))
    refused(lambda: admin.models.GetModel(model_pb.GetModelRequest(name="models/parts")), NOT_FOUND)
    assert_gone(alice, "models/parts", "a")
    assert error_code(alice.wait(operation.name)) == code_pb2.CANCELLED


def test_deleting_a_dataset_in_use_is_refused_listing_its_children_and_force_deletes_them(parts, admin, alice):
    operation = alice.audit("a")
    error = refused(lambda: admin.datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/shapes")),
                    IN_USE)
    text = listed(error)
    assert SET in text and operation.name.split("/")[1] in text, text
    admin.datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/shapes", force=True))
    refused(lambda: admin.datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/shapes")), NOT_FOUND)
    assert_gone(alice, "models/parts", "a")
    assert error_code(alice.wait(operation.name)) == code_pb2.CANCELLED
    assert admin.models.GetModel(model_pb.GetModelRequest(name="models/parts")).state == ACTIVE, "the model stays"


def test_finished_children_block_a_delete_and_never_come_back_under_a_reused_id(running_parts, admin, alice):
    alice.succeeded(alice.audit("a").name)
    assert alice.concept_set(SET).state == ACTIVE
    error = refused(lambda: admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts")), IN_USE)
    assert SET in listed(error) and GRAPH in listed(error)
    admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts", force=True))
    admin.registered_model("parts")  # the same id and bytes again
    assert not admin.audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts")).concept_sets
    assert not admin.audits.ListConceptGraphs(audit_pb.ListConceptGraphsRequest(
        parent="models/parts")).concept_graphs
    assert_gone(alice, "models/parts", "a")
    assert_gone(admin, "models/parts", "a")
    again = alice.succeeded(alice.audit("a").name)  # the id is free again, for a new audit
    assert alice.concept_set(SET).operation == again.name


def test_an_audit_racing_a_delete_never_leaves_an_audit_on_a_deleted_model(admin, alice, workers):
    workers.start()
    admin.upload_dataset("shapes")
    for i in range(RACE_ROUNDS):
        admin.registered_model(f"r{i}")
    deleted, survivors = [], []
    for i in range(RACE_ROUNDS):
        model = f"models/r{i}"
        request = audit_request("a", model)
        start_audit = lambda: alice.audits.Audit.future(request)  # noqa: E731
        start_delete = lambda: admin.models.DeleteModel.future(model_pb.DeleteModelRequest(name=model))  # noqa: E731
        if i % 2:  # both in flight at once, sent in either order
            audit, delete = start_audit(), start_delete()
        else:
            delete, audit = start_delete(), start_audit()
        try:
            delete.result()
        except grpc.RpcError as error:
            assert error.code() == IN_USE, (model, error.code(), error.details())
            survivors.append(audit.result())  # the delete lost: the audit must have been accepted
            continue
        deleted.append(model)
        try:
            operation = audit.result()
        except grpc.RpcError as error:
            assert error.code() == NOT_FOUND, (model, error.code(), error.details())
        else:  # both were accepted: the audit must not run on the deleted model
            assert error_code(alice.wait(operation.name)) == code_pb2.CANCELLED, model
        refused(lambda: admin.models.GetModel(model_pb.GetModelRequest(name=model)), NOT_FOUND)
        assert_gone(alice, model, "a")
    for operation in survivors:
        alice.succeeded(operation.name)
    for i in range(RACE_ROUNDS):
        model = f"models/r{i}"
        if model not in deleted:
            assert alice.concept_set(f"{model}/conceptSets/a").state == ACTIVE
    print(f"audit vs delete: {len(deleted)} deletes won, {len(survivors)} audits won, of {RACE_ROUNDS}")


def test_deleting_a_model_while_an_upload_of_the_same_bytes_is_in_flight_keeps_the_blob(admin, alice, workers,
                                                                                           tmp_path):
    data = h.partsnet_bytes()
    workers.start()
    admin.registered_model("first", data)
    admin.registered_model("second", data)
    admin.upload_dataset("shapes")
    workers.stop()
    requests, paused, resume = paused_upload("third", data, pause_after=3)
    upload = admin.models.UploadModel.future(requests)
    assert paused.wait(15), "the upload started"
    admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/first"))  # while the stream is half sent
    resume.set()
    operation = upload.result()
    admin.models.DeleteModel(model_pb.DeleteModelRequest(name="models/second"))  # while its validation waits
    assert h.stored_files(tmp_path, "weights") == [sha256(data)], "the blob the upload needs is kept"
    workers.start_process()  # another process reads the blob from the store
    admin.succeeded(operation.name, timeout=90)
    assert admin.models.GetModel(model_pb.GetModelRequest(name="models/third")).state == ACTIVE
    alice.succeeded(alice.audit("a", model="models/third").name, timeout=90)
    assert alice.concept_set("models/third/conceptSets/a").state == ACTIVE
    assert h.stored_files(tmp_path, "weights") == [sha256(data)]
