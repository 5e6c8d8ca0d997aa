"""End to end over real gRPC, Redis and a real worker: upload the PartsNet demo model and a small dataset, audit it,
watch it, restart the API server mid-job, and check that the served graph is the one `gig.build_graph` gives."""
from __future__ import annotations

import math

import grpc
import pytest
from google.longrunning import operations_proto_pb2 as lro_pb
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.protobuf import duration_pb2, json_format

import api_harness as h
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.v1 import resource_state_pb2

N_IMAGES = 12
CONCEPTS = audit_pb.ConceptOptions(n_concepts=6, seed=1)


class Api:
    def __init__(self, server):
        self.server = server
        self.channel = h.channel(server)
        self.models = model_grpc.ModelServiceStub(self.channel)
        self.datasets = dataset_grpc.DatasetServiceStub(self.channel)
        self.audits = audit_grpc.AuditServiceStub(self.channel)
        self.ops = lro_grpc.OperationsStub(self.channel)

    def close(self):
        self.channel.close()
        self.server.stop(0)

    def wait(self, name: str) -> lro_pb.Operation:
        operation = self.ops.WaitOperation(lro_pb.WaitOperationRequest(name=name,
                                                                       timeout=duration_pb2.Duration(seconds=300)))
        assert operation.done, "the operation finishes"
        assert not operation.HasField("error"), operation.error
        return operation

    def graph(self, name: str, page_size: int) -> tuple[audit_pb.ConceptGraph, list, list]:
        """The whole graph, fetched page by page."""
        nodes, edges, token, pages = [], [], "", 0
        while True:
            page = self.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(name=name, page_size=page_size,
                                                                               page_token=token))
            nodes += page.nodes
            edges += page.edges
            pages += 1
            token = page.next_page_token
            if not token:
                assert pages > 1, "the graph spans several pages"
                return page, nodes, edges


@pytest.fixture
def store(tmp_path) -> str:
    return f"file://{tmp_path}/store"


@pytest.fixture
def api(redis_client, redis_url, store):
    thread, stop = h.start_worker(redis_url, store)
    api = Api(h.start_server(redis_url, store))
    model = h.registered_model(api.channel, "parts", h.partsnet_bytes())
    api.ops.DeleteOperation(lro_pb.DeleteOperationRequest(name=model.operation))  # the model stays registered
    api.datasets.UploadDataset(h.dataset_requests("shapes", h.parts_tar(N_IMAGES)))
    yield api
    api.close()
    stop.set()
    thread.join(30)


def direct_graph(api: Api, store: str, concept_set: str, layers, **options) -> dict:
    """The graph `gig.build_graph` gives for the same model, images and concept set, outside the service."""
    import gig
    from gig.concepts import ConceptSet
    from gig.synthetic import load_parts_net
    from gig.preprocessing import Preprocessing
    from gigaudit_server.worker.images import load_images
    from gigaudit_server.storage.artifacts import ArtifactStore

    artifacts = ArtifactStore(store)
    model, _ = load_parts_net()
    catalog = api.server.backend.catalog
    concepts = ConceptSet.from_bytes(artifacts.read("concepts", catalog.get("conceptSets", concept_set)["concept_set_sha"]))
    archive = artifacts.local_path("datasets", catalog.get("datasets", "shapes")["sha256"])
    images, labels, _ = load_images(archive, Preprocessing(32, 32, resize_mode="exact", mean=(0.0,) * 3, std=(1.0,) * 3))
    batches = [(images[i:i + 16], labels[i:i + 16]) for i in range(0, len(images), 16)]
    return gig.build_graph(model, batches, concepts, layers=layers, **options).to_dict()


def assert_same_graph(nodes, edges, expected: dict):
    assert sorted(n.id for n in nodes) == sorted(n["id"] for n in expected["nodes"])
    want = {(e["source"], e["target"]): e for e in expected["edges"]}
    assert {(e.source, e.target) for e in edges} == set(want)
    for edge in edges:
        reference = want[(edge.source, edge.target)]
        assert edge.count == reference["count"]
        assert math.isclose(edge.sum, reference["sum"], rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(edge.share, reference["share"], rel_tol=1e-5, abs_tol=1e-6)
        assert {k: (c.sum, c.count) for k, c in edge.class_sums.items()}.keys() == \
            {int(k) for k in reference.get("class_sums", {})}


@pytest.mark.slow
def test_audit_end_to_end_with_an_api_restart_mid_job(api, redis_url, store):
    layers = list(api.models.GetModel(model_pb.GetModelRequest(name="models/parts")).default_layers)
    request = audit_pb.AuditRequest(
        parent="models/parts", audit_id="first", dataset="datasets/shapes", request_id="audit-1",
        concept_options=audit_pb.ConceptOptions(n_concepts=6, seed=1, method="kmeans"),
        graph_options=audit_pb.GraphOptions(steps=4, top_t=2, method="riemann_middle"), evaluation_images=4)
    operation = api.audits.Audit(request)
    # a retried call returns the same operation and queues no second job
    assert api.audits.Audit(request).name == operation.name
    assert len(api.ops.ListOperations(lro_pb.ListOperationsRequest()).operations) == 1
    with pytest.raises(grpc.RpcError) as info:  # the same ids from another request
        api.audits.Audit(audit_pb.AuditRequest(parent="models/parts", audit_id="first", dataset="datasets/shapes"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS

    # watch until the job runs, then restart the API server: the operation survives and completes
    stages = []
    for update in api.audits.WatchOperation(audit_pb.WatchOperationRequest(name=operation.name), timeout=300):
        meta = metadata_pb.OperationMetadata()
        update.metadata.Unpack(meta)
        stages.append(meta.stage)
        if meta.state == metadata_pb.OPERATION_STATE_RUNNING and meta.stage:
            break
    with pytest.raises(grpc.RpcError) as info:
        api.models.DeleteModel(model_pb.DeleteModelRequest(name="models/parts"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and operation.name.split("/")[1] in \
        info.value.details()
    api.close()
    api = Api(h.start_server(redis_url, store))
    try:
        done = api.wait(operation.name)
        result = audit_pb.AuditResult()
        assert done.response.Unpack(result)
        assert result.concept_set.state == resource_state_pb2.RESOURCE_STATE_ACTIVE
        assert result.concept_graph.state == resource_state_pb2.RESOURCE_STATE_ACTIVE
        assert [layer.layer for layer in result.concept_set.layers] == layers
        assert result.concept_set.options.method == "kmeans"
        assert all(0 <= layer.relative_error < 1 for layer in result.concept_set.layers)
        assert "completeness" in json_format.MessageToDict(result.concept_graph.evidence)

        # the served graph equals gig.build_graph on the same inputs
        header, nodes, edges = api.graph(result.concept_graph.name, page_size=25)
        assert header.node_count == len(nodes) and header.edge_count == len(edges) > 0
        assert header.image_count == N_IMAGES
        expected = direct_graph(api, store, "parts/first", layers, steps=4, top_t=2, method="riemann_middle")
        assert_same_graph(nodes, edges, expected)

        # exemplars: WebP thumbnails and iERF views of a concept the audit rendered (one the report shows)
        first_layer = layers[0]
        rendered = next(layer.rendered_concepts for layer in result.concept_set.layers if layer.layer == first_layer)
        assert rendered
        found = api.audits.GetConceptExemplars(audit_pb.GetConceptExemplarsRequest(
            concept_set=result.concept_set.name, layer=first_layer, concept=rendered[0], max_exemplars=2))
        assert 1 <= len(found.exemplars) <= 2
        assert all(e.thumbnail_png[8:12] == b"WEBP" and e.ierf_png[8:12] == b"WEBP" for e in found.exemplars)
        with pytest.raises(grpc.RpcError) as info:
            api.audits.GetConceptExemplars(audit_pb.GetConceptExemplarsRequest(
                concept_set=result.concept_set.name, layer="nonesuch", concept=0))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and first_layer in info.value.details()
    finally:
        api.close()


@pytest.mark.slow
def test_extract_then_sharded_graph_equals_the_direct_graph(api, store):
    layers = list(api.models.GetModel(model_pb.GetModelRequest(name="models/parts")).default_layers)[-2:]
    extract = api.wait(api.audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
        parent="models/parts", concept_set_id="cs", dataset="datasets/shapes", layers=layers,
        options=CONCEPTS)).name)
    concept_set = audit_pb.ConceptSet()
    extract.response.Unpack(concept_set)
    assert concept_set.name == "models/parts/conceptSets/cs" and [x.layer for x in concept_set.layers] == layers
    build = api.audits.BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
        parent="models/parts", concept_graph_id="g", concept_set=concept_set.name, dataset="datasets/shapes",
        options=audit_pb.GraphOptions(steps=4, top_t=2, shard_count=2)))
    api.wait(build.name)
    _, nodes, edges = api.graph("models/parts/conceptGraphs/g", page_size=10)
    assert_same_graph(nodes, edges, direct_graph(api, store, "parts/cs", layers, steps=4, top_t=2))
    basic = api.audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
        name="models/parts/conceptGraphs/g", view=audit_pb.CONCEPT_GRAPH_VIEW_BASIC))
    assert not basic.nodes and basic.edge_count == len(edges)


def test_bad_audit_requests_are_refused_and_start_nothing(api):
    cases = [
        (audit_pb.AuditRequest(parent="models/parts", audit_id="a", dataset="datasets/shapes", layers=["nonesuch"]),
         grpc.StatusCode.INVALID_ARGUMENT, "analysable layers"),
        (audit_pb.AuditRequest(parent="models/ghost", audit_id="a", dataset="datasets/shapes"),
         grpc.StatusCode.NOT_FOUND, "models/ghost"),
        (audit_pb.AuditRequest(parent="models/parts", audit_id="a", dataset="datasets/ghost"),
         grpc.StatusCode.NOT_FOUND, "datasets/ghost"),
        (audit_pb.AuditRequest(parent="models/parts", audit_id="A!", dataset="datasets/shapes"),
         grpc.StatusCode.INVALID_ARGUMENT, "audit_id"),
        (audit_pb.AuditRequest(parent="models/parts", audit_id="a", dataset="datasets/shapes",
                               graph_options=audit_pb.GraphOptions(steps=-1)),
         grpc.StatusCode.INVALID_ARGUMENT, "graph_options.steps"),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.RpcError) as info:
            api.audits.Audit(request)
        assert info.value.code() == code and text in info.value.details(), info.value.details()
    assert not api.ops.ListOperations(lro_pb.ListOperationsRequest()).operations
    with pytest.raises(grpc.RpcError) as info:
        api.audits.BuildConceptGraph(audit_pb.BuildConceptGraphRequest(
            parent="models/parts", concept_graph_id="g", concept_set="models/parts/conceptSets/none",
            dataset="datasets/shapes"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
