"""Concept sets and graphs listed and deleted through the API; deletes that respect references, or force them."""
from __future__ import annotations

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro_pb

import api_harness as h
from api_harness import server, store, worker  # noqa: F401  (fixtures)
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import resource_state_pb2 as state_pb

LAYERS = ["features.2", "features.3"]


@pytest.fixture
def api(server, worker):
    with h.channel(server) as channel:
        h.registered_model(channel, "parts", h.partsnet_bytes())
        dataset_grpc.DatasetServiceStub(channel).UploadDataset(h.dataset_requests("shapes", h.parts_tar(8)))
        yield channel


def extract(channel, set_id: str):
    operation = audit_grpc.AuditServiceStub(channel).ExtractConcepts(audit_pb.ExtractConceptsRequest(
        parent="models/parts", concept_set_id=set_id, dataset="datasets/shapes", layers=LAYERS,
        options=audit_pb.ConceptOptions(n_concepts=4, seed=1)))
    done = h.wait_operation(channel, operation.name)
    assert not done.HasField("error"), done.error


def graph(channel, graph_id: str, set_id: str):
    operation = audit_grpc.AuditServiceStub(channel).BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
        parent="models/parts", concept_graph_id=graph_id, concept_set=f"models/parts/conceptSets/{set_id}",
        dataset="datasets/shapes", options=audit_pb.GraphOptions(steps=4, top_t=2)))
    done = h.wait_operation(channel, operation.name)
    assert not done.HasField("error"), done.error
    return operation.name


def test_list_and_delete_concept_sets_and_graphs_respecting_references(api):
    audits, models = audit_grpc.AuditServiceStub(api), model_grpc.ModelServiceStub(api)
    extract(api, "a")
    extract(api, "b")
    operation = graph(api, "g", "a")
    sets = audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts", page_size=1))
    rest = audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts",
                                                                  page_token=sets.next_page_token))
    assert [s.name.rsplit("/", 1)[1] for s in (*sets.concept_sets, *rest.concept_sets)] == ["a", "b"]
    assert all(s.state == state_pb.RESOURCE_STATE_ACTIVE for s in rest.concept_sets)
    graphs = audits.ListConceptGraphs(audit_pb.ListConceptGraphsRequest(parent="models/parts")).concept_graphs
    assert [g.name for g in graphs] == ["models/parts/conceptGraphs/g"]

    # the set a graph was built from cannot go alone; the model neither
    error = h.refused(lambda: audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(
        name="models/parts/conceptSets/a")), grpc.StatusCode.FAILED_PRECONDITION)
    assert "models/parts/conceptGraphs/g" in error.details() and "force" in error.details()
    error = h.refused(lambda: models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts")),
                      grpc.StatusCode.FAILED_PRECONDITION)
    assert "models/parts/conceptSets/a" in error.details()
    # deleting the graph's finished operation keeps the graph
    from google.longrunning import operations_pb2_grpc as lro_grpc
    lro_grpc.OperationsStub(api).DeleteOperation(lro_pb.DeleteOperationRequest(name=operation))
    kept = audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name="models/parts/conceptGraphs/g"))
    assert kept.state == state_pb.RESOURCE_STATE_ACTIVE
    audits.DeleteConceptGraph(audit_pb.DeleteConceptGraphRequest(name="models/parts/conceptGraphs/g"))
    audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(name="models/parts/conceptSets/a"))
    h.refused(lambda: audits.GetConceptSet(audit_pb.GetConceptSetRequest(name="models/parts/conceptSets/a")),
              grpc.StatusCode.NOT_FOUND)
    h.refused(lambda: audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(name="models/parts/conceptSets/a")),
              grpc.StatusCode.NOT_FOUND)


def test_force_deletes_the_children_and_a_reused_id_starts_empty(api, tmp_path):
    audits, models = audit_grpc.AuditServiceStub(api), model_grpc.ModelServiceStub(api)
    datasets = dataset_grpc.DatasetServiceStub(api)
    extract(api, "a")
    graph(api, "g", "a")
    h.refused(lambda: datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/shapes")),
              grpc.StatusCode.FAILED_PRECONDITION)
    models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts", force=True))
    assert h.stored_files(tmp_path, "weights") == []
    datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/shapes"))  # no children left
    h.registered_model(api, "parts", h.partsnet_bytes())
    listed = audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts"))
    assert not listed.concept_sets, "a model uploaded under a deleted id gets none of the old concept sets"
    h.refused(lambda: audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name="models/parts/conceptGraphs/g")),
              grpc.StatusCode.NOT_FOUND)


def test_bad_names_filters_and_tokens_are_invalid_argument(api):
    audits = audit_grpc.AuditServiceStub(api)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    h.refused(lambda: audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/index")), invalid)
    h.refused(lambda: audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent="models/parts",
                                                                             filter="state=ACTIVE")), invalid)
    h.refused(lambda: audits.ListConceptGraphs(audit_pb.ListConceptGraphsRequest(parent="models/parts",
                                                                                 page_token="forged")), invalid)
    h.refused(lambda: model_grpc.ModelServiceStub(api).GetModel(model_pb.GetModelRequest(name="models/index")),
              invalid)


def test_a_retried_request_whose_concept_set_was_deleted_runs_anew(api):
    audits = audit_grpc.AuditServiceStub(api)
    request = audit_pb.ExtractConceptsRequest(parent="models/parts", concept_set_id="r", dataset="datasets/shapes",
                                              layers=LAYERS, options=audit_pb.ConceptOptions(n_concepts=4, seed=1),
                                              request_id="extract-r")
    first = audits.ExtractConcepts(request)
    assert audits.ExtractConcepts(request).name == first.name  # a plain retry: the same operation
    h.wait_operation(api, first.name)
    audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(name="models/parts/conceptSets/r"))
    again = audits.ExtractConcepts(request)
    assert again.name != first.name
    assert not h.wait_operation(api, again.name).HasField("error")
    assert audits.GetConceptSet(audit_pb.GetConceptSetRequest(name="models/parts/conceptSets/r")).state == \
        state_pb.RESOURCE_STATE_ACTIVE
