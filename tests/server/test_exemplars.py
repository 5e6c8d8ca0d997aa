"""Exemplar bundles: one zip per concept set, read back per concept without torch; only the shown concepts are
rendered, others on demand through the real gRPC API and a real worker."""
import io
import json
import zipfile

import grpc
import numpy as np
import pytest
from google.longrunning import operations_pb2_grpc as lro_grpc
from google.longrunning import operations_proto_pb2 as lro_pb
from google.protobuf import duration_pb2
from PIL import Image

import api_harness as h
from api_harness import server, store, worker  # noqa: F401  (fixtures)
from gigaudit import AuditClient
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit_server.storage.exemplars import (
    ierf_png,
    merge_bundles,
    read_bundle,
    read_exemplars,
    rendered_concepts,
    thumbnail_png,
    write_bundle,
)


def picture(h=8, w=6):
    return (np.arange(h * w * 3).reshape(h, w, 3) % 256).astype(np.uint8)


def test_round_trip_with_and_without_rendered_pngs():
    heat = np.zeros((8, 6))
    heat[2, 3] = 1.0
    rendered = {"image": 4, "image_name": "cat/4.png", "position": 7, "coefficient": 1.5,
                "thumbnail_png": thumbnail_png(picture()), "ierf_png": ierf_png(picture(), heat)}
    reference = {"image": 1, "image_name": "dog/1.png", "position": 0, "coefficient": 0.5}
    bundle = write_bundle({"layer1.0": [[rendered, reference], []], "layer2.0": [[reference]]})
    first = read_exemplars(bundle, "layer1.0", 0)
    assert [e["image"] for e in first] == [4, 1]
    assert first[0]["thumbnail_png"] == rendered["thumbnail_png"] and first[1]["ierf_png"] == b""
    assert read_exemplars(bundle, "layer1.0", 0, max_exemplars=1) == first[:1]
    assert read_exemplars(bundle, "layer1.0", 1) == []
    overlay = np.asarray(Image.open(io.BytesIO(first[0]["ierf_png"])))
    thumb = Image.open(io.BytesIO(first[0]["thumbnail_png"]))
    assert thumb.size == (72, 96)  # longer side 96, aspect kept
    hot, cold = overlay[2 * 12 + 6, 3 * 12 + 6], overlay[6 * 12 + 6, 6]  # pixels (2, 3) and (6, 0), scaled 12x
    source = np.asarray(Image.fromarray(picture()).resize((72, 96), Image.NEAREST)).astype(float)
    hot_source, cold_source = source[2 * 12 + 6, 3 * 12 + 6], source[6 * 12 + 6, 6]
    assert abs(hot.astype(float) - hot_source).max() < 40  # kept bright where the map is high (WebP: lossy)
    assert cold.astype(float).mean() < 0.7 * cold_source.mean()  # darkened where it is zero


def test_bad_requests_name_the_choices():
    bundle = write_bundle({"a": [[]], "b": [[], []]})
    with pytest.raises(ValueError, match="layers: a, b"):
        read_exemplars(bundle, "c", 0)
    with pytest.raises(ValueError, match=r"concepts 0\.\.1"):
        read_exemplars(bundle, "b", 2)
    with pytest.raises(ValueError, match="differs"):
        ierf_png(picture(), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="uint8"):
        thumbnail_png(np.zeros((4, 4, 3)))


def test_merge_adds_missing_pngs_and_is_deterministic():
    heat = np.ones((8, 6))
    pngs = {"thumbnail_png": thumbnail_png(picture()), "ierf_png": ierf_png(picture(), heat)}
    ref = lambda image, position: {"image": image, "image_name": f"c/{image}.png", "position": position,  # noqa: E731
                                   "coefficient": 1.0}
    base = write_bundle({"a": [[{**ref(0, 1), **pngs}], [ref(1, 2), ref(2, 3)], []]})
    update = write_bundle({"a": [[ref(0, 1)], [{**ref(1, 2), **pngs}, {**ref(2, 3), **pngs}], []]})
    assert rendered_concepts(base) == {"a": [0]} and rendered_concepts(update) == {"a": [1]}
    merged = merge_bundles(base, update)
    assert rendered_concepts(merged) == {"a": [0, 1]}
    assert merged == merge_bundles(update, base) == merge_bundles(merged, update)  # same content, same bytes
    assert read_bundle(merged)["a"][1][0]["thumbnail_png"] == pngs["thumbnail_png"]
    other = write_bundle({"a": [[], [{**ref(5, 5), **pngs}], []]})  # another exemplar: not taken
    assert rendered_concepts(merge_bundles(base, other)) == {"a": [0]}
    with pytest.raises(ValueError, match="not an exemplar bundle"):
        rendered_concepts(_zip({"manifest.json": json.dumps({"format": "other", "layers": {}})}))


def _zip(files: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.slow
def test_only_shown_concepts_are_rendered_and_others_on_demand(server, worker, store):
    """Real gRPC API and a real worker (which renders the 4 most frequent x strongest concepts per layer)."""
    channel = h.channel(server)
    models, datasets = model_grpc.ModelServiceStub(channel), dataset_grpc.DatasetServiceStub(channel)
    audits, ops = audit_grpc.AuditServiceStub(channel), lro_grpc.OperationsStub(channel)
    h.registered_model(channel, "parts", h.partsnet_bytes())
    datasets.UploadDataset(h.dataset_requests("shapes", h.parts_tar(12)))
    layers = ["features.2", "features.3"]
    made = wait(ops, audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
        parent="models/parts", concept_set_id="cs", dataset="datasets/shapes", layers=layers,
        options=audit_pb.ConceptOptions(n_concepts=6, seed=1))).name)
    concept_set = audit_pb.ConceptSet()
    made.response.Unpack(concept_set)
    name = concept_set.name
    rendered = {layer.layer: list(layer.rendered_concepts) for layer in concept_set.layers}
    assert [len(rendered[layer]) for layer in layers] == [4, 4]
    assert concept_set.options.method and concept_set.options.HasField("lam")  # the options gig used

    def exemplars_of(layer, k):
        return list(audits.GetConceptExemplars(audit_pb.GetConceptExemplarsRequest(
            concept_set=name, layer=layer, concept=k)).exemplars)

    references = {(layer, k): [(e.image, e.position, e.coefficient) for e in exemplars_of(layer, k)]
                  for layer in layers for k in range(6)}
    assert all(references.values())  # every concept keeps its references
    hidden = next(k for k in range(6) if k not in rendered["features.3"])
    assert all(not e.rendered and e.thumbnail_png == e.ierf_png == b"" for e in exemplars_of("features.3", hidden))
    shown = rendered["features.3"][0]
    assert all(e.rendered and e.thumbnail_png[8:12] == b"WEBP" for e in exemplars_of("features.3", shown))

    request = audit_pb.RenderExemplarsRequest(concept_set=name, layer="features.3", concepts=[hidden, shown],
                                              request_id="render-1")
    operation = audits.RenderExemplars(request)
    assert audits.RenderExemplars(request).name == operation.name  # a retry starts no second job
    done = wait(ops, operation.name)
    after = audit_pb.ConceptSet()
    done.response.Unpack(after)
    now = {layer.layer: list(layer.rendered_concepts) for layer in after.layers}
    assert now == {**rendered, "features.3": sorted({*rendered["features.3"], hidden})}
    found = exemplars_of("features.3", hidden)
    assert found and all(e.rendered and e.thumbnail_png[8:12] == e.ierf_png[8:12] == b"WEBP"
                         for e in found)
    assert {(layer, k): [(e.image, e.position, e.coefficient) for e in exemplars_of(layer, k)]
            for layer in layers for k in range(6)} == references

    # the client: render another concept on demand, then read it
    with AuditClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        other = next(k for k in range(6) if k not in now["features.2"])
        updated = client.render_exemplars(name, [f"features.2:{other}"], timeout=120)
        assert other in next(layer.rendered_concepts for layer in updated.layers if layer.layer == "features.2")
        shots = client.get_exemplars(name, f"features.2:{other}")
        assert shots and all(e.png[8:12] == b"WEBP" and e.ierf_png for e in shots)

    for bad, field in [(audit_pb.RenderExemplarsRequest(concept_set=name, layer="features.0", concepts=[0]), "layer"),
                       (audit_pb.RenderExemplarsRequest(concept_set=name, layer="features.3", concepts=[6]),
                        "concepts"),
                       (audit_pb.RenderExemplarsRequest(concept_set=name, layer="features.3"), "concepts")]:
        error = h.refused(lambda: audits.RenderExemplars(bad), grpc.StatusCode.INVALID_ARGUMENT)
        assert field in error.details()
    h.refused(lambda: audits.RenderExemplars(audit_pb.RenderExemplarsRequest(
        concept_set="models/parts/conceptSets/none", layer="features.3", concepts=[0])), grpc.StatusCode.NOT_FOUND)
    channel.close()


def wait(ops, name: str):
    operation = ops.WaitOperation(lro_pb.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=120)))
    assert operation.done and not operation.HasField("error"), operation.error
    return operation
