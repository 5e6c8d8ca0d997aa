"""Issue 8 §2: every operation and resource records its creator. Auditors see, wait on, cancel and delete only their
own operations, concept sets and graphs (anyone else's answer NOT_FOUND, so their existence does not leak); admins
see everything and filter by owner; models and datasets are shared."""
from __future__ import annotations

import grpc
from adversary import ACTIVE, CREATING, error_code, meta, refused
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from google.rpc import code_pb2

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

NOT_FOUND = grpc.StatusCode.NOT_FOUND


def test_auditors_cannot_see_wait_on_cancel_or_delete_each_others_operations(api, alice, bob):
    operation = alice.probe()
    assert meta(operation).owner == "alice"
    name = operation.name
    ops = bob.ops
    refused(lambda: ops.GetOperation(lro_pb.GetOperationRequest(name=name)), NOT_FOUND)
    refused(lambda: ops.WaitOperation(lro_pb.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(
        seconds=1))), NOT_FOUND)
    refused(lambda: ops.CancelOperation(lro_pb.CancelOperationRequest(name=name)), NOT_FOUND)
    refused(lambda: ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=name)), NOT_FOUND)
    refused(lambda: list(bob.audits.WatchOperation(audit_pb.WatchOperationRequest(name=name), timeout=5)), NOT_FOUND)
    assert bob.operation_names() == set()
    assert bob.operation_names("state=QUEUED") == set()
    # untouched: still queued, no cancellation requested
    mine = alice.ops.GetOperation(lro_pb.GetOperationRequest(name=name))
    assert not mine.done and not meta(mine).cancel_requested
    assert alice.operation_names() == {name}


def test_admins_see_every_operation_and_filter_by_owner(api, admin, alice, bob):
    alice_ops = {alice.probe("a1").name, alice.probe("a2").name}
    bob_op = bob.probe("b1").name
    assert admin.operation_names() == alice_ops | {bob_op}
    assert admin.operation_names("owner=alice") == alice_ops
    assert admin.operation_names("state=QUEUED AND owner=bob") == {bob_op}
    assert admin.operation_names("state=SUCCEEDED AND owner=bob") == set()
    assert admin.operation_names("owner=nobody") == set()
    some = sorted(alice_ops)[0]
    assert meta(admin.ops.GetOperation(lro_pb.GetOperationRequest(name=some))).owner == "alice"
    admin.ops.CancelOperation(lro_pb.CancelOperationRequest(name=some))
    assert error_code(alice.wait(some)) == code_pb2.CANCELLED


def test_an_auditor_cannot_cancel_an_admins_upload_validation(admin, alice, workers):
    upload = admin.upload_model("parts")  # no worker yet: the validation waits
    assert meta(upload).owner == "ops"
    refused(lambda: alice.ops.CancelOperation(lro_pb.CancelOperationRequest(name=upload.name)), NOT_FOUND)
    refused(lambda: alice.ops.GetOperation(lro_pb.GetOperationRequest(name=upload.name)), NOT_FOUND)
    assert admin.models.GetModel(model_pb.GetModelRequest(name="models/parts")).state == CREATING
    workers.start()
    admin.succeeded(upload.name)
    model = alice.models.GetModel(model_pb.GetModelRequest(name="models/parts"))
    assert model.state == ACTIVE and model.owner == "ops"


def test_concept_sets_and_graphs_are_visible_to_their_creator_and_admins_only(parts, admin, alice, bob):
    alice.audit("a")
    set_name, graph_name = "models/parts/conceptSets/a", "models/parts/conceptGraphs/a"
    audits = bob.audits
    refused(lambda: audits.GetConceptSet(audit_pb.GetConceptSetRequest(name=set_name)), NOT_FOUND)
    refused(lambda: audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name=graph_name)), NOT_FOUND)
    refused(lambda: audits.GetConceptExemplars(audit_pb.GetConceptExemplarsRequest(
        concept_set=set_name, layer="features.0", concept=0)), NOT_FOUND)
    refused(lambda: audits.RenderExemplars(audit_pb.RenderExemplarsRequest(
        concept_set=set_name, layer="features.0", concepts=[0])), NOT_FOUND)
    refused(lambda: audits.BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
        parent="models/parts", concept_graph_id="g", concept_set=set_name, dataset="datasets/shapes")), NOT_FOUND)
    refused(lambda: audits.DeleteConceptGraph(audit_pb.DeleteConceptGraphRequest(name=graph_name, force=True)),
            NOT_FOUND)
    refused(lambda: audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(name=set_name, force=True)), NOT_FOUND)
    refused(lambda: audits.ExplainImage(audit_pb.ExplainImageRequest(concept_graph=graph_name, image=_png(),
                                                                     explain_predicted=True)), NOT_FOUND)
    assert not audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts")).concept_sets
    assert not audits.ListConceptGraphs(audit_pb.ListConceptGraphsRequest(parent="models/parts")).concept_graphs
    # the creator and the admins still see them, untouched by bob's attempts
    assert alice.concept_set(set_name).owner == "alice"
    assert alice.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name=graph_name)).owner == "alice"
    for caller in (alice, admin):
        sets = caller.audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts")).concept_sets
        graphs = caller.audits.ListConceptGraphs(audit_pb.ListConceptGraphsRequest(parent="models/parts"))
        assert [s.name for s in sets] == [set_name]
        assert [g.name for g in graphs.concept_graphs] == [graph_name]
    for owner, expected in (("alice", [set_name]), ("bob", [])):
        listed = admin.audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts",
                                                                              filter=f"owner={owner}"))
        assert [s.name for s in listed.concept_sets] == expected
    assert admin.concept_set(set_name).owner == "alice"


def test_models_and_datasets_are_shared_but_only_admins_write_them(parts, admin, bob):
    assert bob.models.GetModel(model_pb.GetModelRequest(name="models/parts")).owner == "ops"
    assert [m.name for m in bob.models.ListModels(model_pb.ListModelsRequest()).models] == ["models/parts"]
    assert bob.datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/shapes")).owner == "ops"
    assert bob.models.ListLayers(model_pb.ListLayersRequest(parent="models/parts")).default_layers
    assert meta(bob.audit("mine")).owner == "bob", "any auditor audits a shared model"
    denied = grpc.StatusCode.PERMISSION_DENIED
    refused(lambda: bob.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts", force=True)), denied)
    refused(lambda: bob.datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/shapes", force=True)),
            denied)
    refused(lambda: bob.upload_model("mine"), denied)


def test_deleting_ones_finished_audit_operation_keeps_its_concept_set_and_graph(running_parts, alice, bob):
    operation = alice.succeeded(alice.audit("a").name)
    refused(lambda: bob.ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=operation.name)), NOT_FOUND)
    alice.ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=operation.name))
    refused(lambda: alice.ops.GetOperation(lro_pb.GetOperationRequest(name=operation.name)), NOT_FOUND)
    assert alice.concept_set("models/parts/conceptSets/a").state == ACTIVE
    graph = alice.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name="models/parts/conceptGraphs/a"))
    assert graph.state == ACTIVE and graph.node_count > 0 and len(graph.nodes) > 0


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 60, 30)).save(out, format="PNG")
    return out.getvalue()
