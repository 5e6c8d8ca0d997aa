"""Issue 8 §1: request ids (AIP-155) are scoped per caller and method and bound to the request they came with."""
from __future__ import annotations

import grpc
from adversary import meta, other_weights, refused, sha256
from google.longrunning import operations_proto_pb2 as lro_pb

import api_harness as h
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

EXISTS, NOT_FOUND = grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND


def test_a_request_id_reused_for_another_audit_is_already_exists_naming_it(parts, alice, admin):
    first = alice.audit("a", request_id="req-x", n_concepts=4)
    assert alice.audit("a", request_id="req-x", n_concepts=4).name == first.name, "a retry returns the original"
    for conflicting in (lambda: alice.audit("b", request_id="req-x", n_concepts=8),
                        lambda: alice.audit("a", request_id="req-x", n_concepts=8)):
        error = refused(conflicting, EXISTS)
        assert "req-x" in error.details() and "different" in error.details(), error.details()
    # the conflicting request made nothing, and the first one's concept set keeps its own options
    refused(lambda: alice.concept_set("models/parts/conceptSets/b"), NOT_FOUND)
    assert alice.concept_set("models/parts/conceptSets/a").options.n_concepts == 4
    assert admin.operation_names("owner=alice") == {first.name}, "nothing was queued twice"


def test_another_caller_with_the_same_request_id_gets_its_own_result(parts, alice, bob):
    mine = alice.audit("a", request_id="shared-id")
    theirs = bob.audit("b", request_id="shared-id")
    assert theirs.name != mine.name
    assert meta(theirs).owner == "bob" and meta(mine).owner == "alice"
    assert bob.concept_set("models/parts/conceptSets/b").owner == "bob"
    # bob replaying alice's exact request never obtains her operation: the id audit "a" is taken
    refused(lambda: bob.audit("a", request_id="shared-id"), EXISTS)
    refused(lambda: bob.ops.GetOperation(lro_pb.GetOperationRequest(name=mine.name)), NOT_FOUND)
    # probes: the same id from two callers gives two operations
    alice_probe, bob_probe = alice.probe("probe-id"), bob.probe("probe-id")
    assert alice_probe.name != bob_probe.name
    assert alice.probe("probe-id").name == alice_probe.name and bob.probe("probe-id").name == bob_probe.name


def test_a_request_id_reused_across_methods_is_independent(parts, alice):
    probe = alice.probe("multi-use")
    audit = alice.audit("a", request_id="multi-use")
    assert audit.name != probe.name and meta(audit).kind != meta(probe).kind
    assert alice.concept_set("models/parts/conceptSets/a").operation == audit.name, "the audit's set is readable"
    assert alice.audit("a", request_id="multi-use").name == audit.name, "and its retry is a retry, not a conflict"
    extract = alice.audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
        parent="models/parts", concept_set_id="e", dataset="datasets/shapes", request_id="multi-use"))
    assert extract.name not in (probe.name, audit.name)
    assert alice.probe("multi-use").name == probe.name


def test_a_retried_model_upload_with_other_content_is_already_exists(admin, workers):
    data, other = h.partsnet_bytes(), other_weights()
    first = admin.upload_model("m", data, request_id="up-1")
    assert admin.upload_model("m", data, request_id="up-1").name == first.name
    for weights, changed in ((other, {}), (data, {"class_names": [f"c{i}" for i in range(6)]}),
                             (data, {"input_size": 64})):
        refused(lambda: admin.upload_model("m", weights, request_id="up-1", **changed), EXISTS)
    error = refused(lambda: admin.upload_model("n", data, request_id="up-1"), EXISTS)
    assert "up-1" in error.details()
    refused(lambda: admin.models.GetModel(model_pb.GetModelRequest(name="models/n")), NOT_FOUND)
    workers.start()
    admin.succeeded(first.name)
    model = admin.models.GetModel(model_pb.GetModelRequest(name="models/m"))
    assert model.sha256 == sha256(data) and not model.class_names and model.input_size == 32


def test_a_retried_dataset_upload_with_other_content_is_already_exists(admin):
    data, other = h.parts_tar(6, seed=0), h.parts_tar(6, seed=1)
    assert data != other
    first = admin.upload_dataset("d", data, request_id="ds-1")
    assert admin.upload_dataset("d", data, request_id="ds-1") == first
    error = refused(lambda: admin.upload_dataset("d", other, request_id="ds-1"), EXISTS)
    assert "ds-1" in error.details()
    refused(lambda: admin.upload_dataset("e", data, request_id="ds-1"), EXISTS)
    assert admin.datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/d")).sha256 == sha256(data)
    refused(lambda: admin.datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/e")), NOT_FOUND)
