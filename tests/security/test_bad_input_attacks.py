"""Issue 8 §7: bad input gets a clear status, never INTERNAL: the reserved id ``index`` anywhere an id goes, forged
page tokens in every listing, malformed filters. Each test collects every call that answers another status than
the one expected, so that one run names them all."""
from __future__ import annotations

import bad_inputs
import grpc
from adversary import assert_clean
from google.longrunning import operations_proto_pb2 as lro_pb

import api_harness as h
from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import model_service_pb2 as model_pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
INDEX = bad_inputs.RESERVED_ID


def answer(call) -> str:
    """The status name of ``call()``, with its message when that leaks server internals."""
    try:
        call()
    except grpc.RpcError as error:
        try:
            assert_clean(error.details() or "")
        except AssertionError as leak:
            return f"{error.code().name} ({leak})"
        return error.code().name
    return "OK"


def unexpected(calls: dict, expected: grpc.StatusCode) -> dict:
    """``{call name: answer}`` of the calls that did not answer ``expected`` with a clean message."""
    answers = {name: answer(call) for name, call in calls.items()}
    return {name: found for name, found in answers.items() if found != expected.name}


def test_the_reserved_id_index_is_invalid_argument_everywhere(parts, admin, alice):
    alice.audit("a")  # so that every collection of the catalog exists
    audits = alice.audits
    calls = {
        "GetModel": lambda: admin.models.GetModel(model_pb.GetModelRequest(name=f"models/{INDEX}")),
        "DeleteModel": lambda: admin.models.DeleteModel(model_pb.DeleteModelRequest(name=f"models/{INDEX}")),
        "DeleteModel(force)": lambda: admin.models.DeleteModel(model_pb.DeleteModelRequest(name=f"models/{INDEX}",
                                                                                           force=True)),
        "ListLayers": lambda: admin.models.ListLayers(model_pb.ListLayersRequest(parent=f"models/{INDEX}")),
        "UploadModel": lambda: admin.upload_model(INDEX),
        "GetDataset": lambda: admin.datasets.GetDataset(dataset_pb.GetDatasetRequest(name=f"datasets/{INDEX}")),
        "DeleteDataset": lambda: admin.datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(
            name=f"datasets/{INDEX}")),
        "UploadDataset": lambda: admin.upload_dataset(INDEX),
        "GetConceptSet(model)": lambda: audits.GetConceptSet(audit_pb.GetConceptSetRequest(
            name=f"models/{INDEX}/conceptSets/a")),
        "GetConceptSet(set)": lambda: audits.GetConceptSet(audit_pb.GetConceptSetRequest(
            name=f"models/parts/conceptSets/{INDEX}")),
        "GetConceptGraph": lambda: audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
            name=f"models/parts/conceptGraphs/{INDEX}")),
        "DeleteConceptSet": lambda: audits.DeleteConceptSet(audit_pb.DeleteConceptSetRequest(
            name=f"models/parts/conceptSets/{INDEX}")),
        "DeleteConceptGraph": lambda: audits.DeleteConceptGraph(audit_pb.DeleteConceptGraphRequest(
            name=f"models/parts/conceptGraphs/{INDEX}")),
        "ListConceptSets": lambda: audits.ListConceptSets(audit_pb.ListConceptSetsRequest(parent=f"models/{INDEX}")),
        "GetConceptExemplars": lambda: audits.GetConceptExemplars(audit_pb.GetConceptExemplarsRequest(
            concept_set=f"models/parts/conceptSets/{INDEX}", layer="features.0")),
        "Audit(audit_id)": lambda: alice.audit(INDEX),
        "Audit(parent)": lambda: alice.audit("b", model=f"models/{INDEX}"),
        "Audit(dataset)": lambda: alice.audit("c", dataset=f"datasets/{INDEX}"),
        "ExtractConcepts(concept_set_id)": lambda: audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
            parent="models/parts", concept_set_id=INDEX, dataset="datasets/shapes")),
    }
    assert unexpected(calls, INVALID) == {}


def test_forged_page_tokens_are_invalid_argument_in_every_listing(parts, admin, alice):
    alice.audit("a")
    alice.probe("p1")
    alice.probe("p2")
    admin.upload_dataset("more", h.parts_tar(4, seed=3))
    real = {  # genuine tokens, each sent to the other listings
        "datasets": admin.datasets.ListDatasets(dataset_pb.ListDatasetsRequest(page_size=1)).next_page_token,
        "operations": alice.ops.ListOperations(lro_pb.ListOperationsRequest(page_size=1)).next_page_token,
    }
    assert all(real.values()), real
    listings = {
        "ListModels": ("datasets", lambda t: admin.models.ListModels(model_pb.ListModelsRequest(page_token=t))),
        "ListDatasets": ("operations", lambda t: admin.datasets.ListDatasets(dataset_pb.ListDatasetsRequest(
            page_token=t))),
        "ListOperations(auditor)": ("datasets", lambda t: alice.ops.ListOperations(lro_pb.ListOperationsRequest(
            page_token=t))),
        "ListOperations(admin)": ("datasets", lambda t: admin.ops.ListOperations(lro_pb.ListOperationsRequest(
            page_token=t))),
        "ListConceptSets": ("datasets", lambda t: alice.audits.ListConceptSets(audit_pb.ListConceptSetsRequest(
            parent="models/parts", page_token=t))),
        "ListConceptGraphs": ("datasets", lambda t: alice.audits.ListConceptGraphs(
            audit_pb.ListConceptGraphsRequest(parent="models/parts", page_token=t))),
        "ListDeadLetters": ("datasets", lambda t: admin.admin.ListDeadLetters(admin_pb.ListDeadLettersRequest(
            page_token=t))),
    }
    calls = {}
    for method, (foreign, listing) in listings.items():
        tokens = {**{f"forged{i}": t for i, t in enumerate(bad_inputs.FORGED_PAGE_TOKENS)},
                  f"{foreign}-token": real[foreign]}
        for label, token in tokens.items():
            calls[f"{method}[{label}]"] = (lambda listing, token: lambda: listing(token))(listing, token)
    assert unexpected(calls, INVALID) == {}


def test_forged_page_tokens_of_a_concept_graph_are_invalid_argument(running_parts, alice):
    alice.succeeded(alice.audit("a").name)
    name = "models/parts/conceptGraphs/a"
    first = alice.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name=name, page_size=2))
    assert first.next_page_token, "the graph spans several pages"
    calls = {f"forged{i}": (lambda token: lambda: alice.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
        name=name, page_size=2, page_token=token)))(token) for i, token in enumerate(bad_inputs.FORGED_PAGE_TOKENS)}
    calls["a ListDatasets token"] = lambda: alice.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
        name=name, page_token=bad_inputs.json_token({"o": 0, "s": "datasets"})))
    assert unexpected(calls, INVALID) == {}


def test_malformed_filters_are_invalid_argument(parts, admin, alice):
    calls = {}
    for text in ("owner=", "owner=alice AND", "state=QUEUED OR owner=bob", "owner==alice", "color=red",
                 "state=QUEUED AND", "AND owner=alice", "owner=alice AND state=NOPE"):
        for who, caller in (("admin", admin), ("auditor", alice)):
            calls[f"ListOperations[{who}, {text!r}]"] = (lambda c, f: lambda: c.ops.ListOperations(
                lro_pb.ListOperationsRequest(filter=f)))(caller, text)
    for text in ("owner=", "state=ACTIVE", "nonsense", "owner=alice AND owner=bob x"):
        calls[f"ListConceptSets[{text!r}]"] = (lambda f: lambda: admin.audits.ListConceptSets(
            audit_pb.ListConceptSetsRequest(parent="models/parts", filter=f)))(text)
        calls[f"ListConceptGraphs[{text!r}]"] = (lambda f: lambda: admin.audits.ListConceptGraphs(
            audit_pb.ListConceptGraphsRequest(parent="models/parts", filter=f)))(text)
    assert unexpected(calls, INVALID) == {}
