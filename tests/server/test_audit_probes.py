"""Audits with probe sets, end to end through the service: real gRPC, Redis, worker thread and gig.naming.

A probe set of one planted part (with masks) and one of ordinary audit-like images go up as a dataset; the audit
names concepts after them, the graph's nodes carry the names over the API, and the ordinary probe is reported as unmatched. Bad probes
(another image size, greyscale, a mask missing, loose images, an unknown dataset) are refused with the folder
named."""
from __future__ import annotations

import io
import tarfile

import grpc
import numpy as np
import pytest
from api_harness import (server, store, worker)  # noqa: F401 - fixtures
from api_harness import channel, dataset_requests, parts_tar, partsnet_bytes, refused, registered_model, wait_operation
from google.protobuf import json_format
from PIL import Image

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc

PART = 1  # gig.synthetic part id of the probe "part1"
OPTIONS = dict(concept_options=audit_pb.ConceptOptions(n_concepts=6, method="kmeans", pfvs_per_image=2, seed=3),
               graph_options=audit_pb.GraphOptions(steps=4, top_t=2), metrics=["reconstruction"],
               evaluation_images=4, layers=["features.2", "features.3"])


def _png(pixels: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    (image.convert(mode) if mode else image).save(out, format="PNG")
    return out.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _part_probe(n: int = 10, size: int = 32, masks: bool = True, seed: int = 7,
                folder: str = "part1") -> dict[str, bytes]:
    """``<folder>/<i>.png`` images that show planted part 1, with ``<folder>/masks/<i>.png`` where it is drawn."""
    from gig.synthetic import make_parts_dataset

    images, _, parts = make_parts_dataset(6 * n, size=size, seed=seed)
    chosen = [i for i in range(len(images)) if (parts[i] == PART).any()][:n]
    members = {}
    for j, i in enumerate(chosen):
        pixels = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        members[f"{folder}/{j:03d}.png"] = _png(pixels)
        if masks:
            members[f"{folder}/masks/{j:03d}.png"] = _png(((parts[i] == PART).numpy() * 255).astype(np.uint8))
    return members


def _ordinary_probe(n: int = 10, size: int = 32) -> dict[str, bytes]:
    """``ordinary/<i>.png``: images like the audit's, of every class: no concept tells them apart."""
    from gig.synthetic import make_parts_dataset

    images, _, _ = make_parts_dataset(n, size=size, seed=11)
    return {f"ordinary/{j:03d}.png": _png((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            for j, image in enumerate(images)}


def _noise_probe(n: int = 8, size: int = 32) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {f"noise/{j:03d}.png": _png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for j in range(n)}


@pytest.fixture
def api(server, worker):  # noqa: F811
    ch = channel(server)
    registered_model(ch, "parts", partsnet_bytes())
    datasets = dataset_grpc.DatasetServiceStub(ch)

    def upload(dataset_id: str, data: bytes) -> str:
        return datasets.UploadDataset(dataset_requests(dataset_id, data), timeout=60).name

    upload("parts", parts_tar(n=12))
    yield ch, audit_grpc.AuditServiceStub(ch), upload
    ch.close()


def _audit(audits, audit_id: str, probes: str):
    return audits.Audit(audit_pb.AuditRequest(parent="models/parts", audit_id=audit_id, dataset="datasets/parts",
                                              probes=probes, **OPTIONS), timeout=30)


def test_probes_name_concepts_on_the_graph_and_report_the_unmatched(api):
    ch, audits, upload = api
    upload("probes", _tar({**_part_probe(), **_ordinary_probe()}))
    operation = wait_operation(ch, _audit(audits, "named", "datasets/probes").name, timeout=300)
    assert not operation.HasField("error"), operation.error
    graph = audits.GetConceptGraph(audit_pb.GetConceptGraphRequest(
        name="models/parts/conceptGraphs/named", view=audit_pb.CONCEPT_GRAPH_VIEW_FULL), timeout=30)
    naming = json_format.MessageToDict(graph.evidence)["naming"]
    assert set(naming["probes"]) == {"part1", "ordinary"}
    assert naming["unmatched"] == ["ordinary"], naming["probes"]["ordinary"]["best"]  # reported, not silent
    assert not naming["matches"]["ordinary"]
    assert "part1" not in naming["unmatched"], naming["probes"]["part1"]["best"]
    best = naming["matches"]["part1"][0]
    assert best["score"] >= 0.6 and best["heldout_score"] >= 0.6  # the held-out check of the naming
    labelled = {node.id: (node.label, node.label_score) for node in graph.nodes if node.label}
    assert labelled == {node: (name, pytest.approx(score)) for node, (name, score) in naming["labels"].items()}
    assert labelled[best["node"]][0] == "part1"
    assert all(node.kind == "concept" for node in graph.nodes if node.label)


@pytest.mark.parametrize("members, words", [
    (lambda: {**_part_probe(masks=False), **_part_probe(size=48, masks=False, seed=8, folder="large")},
     ["'large'", "48x48", "32x32"]),
    (lambda: {**_noise_probe(), "grey/000.png": _png(np.zeros((32, 32, 3), np.uint8), "L"),
              "grey/001.png": _png(np.zeros((32, 32, 3), np.uint8), "L")},
     ["'grey'", "greyscale (mode L)", "colour"]),
    (lambda: {k: v for k, v in _part_probe().items() if k != "part1/masks/002.png"},
     ["'part1'", "part1/002.png", "no mask"]),
    (lambda: {"part1/000.png": _part_probe(masks=False)["part1/000.png"],
              "part1/masks/000.png": _png(np.zeros((16, 16), np.uint8))},
     ["'part1'", "16x16", "32x32"]),
    (lambda: {**_part_probe(masks=False), "empty/masks/000.png": _png(np.zeros((32, 32), np.uint8))},
     ["'empty'", "without an image", "empty/masks/000.png"]),
])
def test_bad_probes_fail_the_audit_naming_the_folder(api, members, words):
    ch, audits, upload = api
    upload("bad", _tar(members()))
    operation = wait_operation(ch, _audit(audits, "bad", "datasets/bad").name, timeout=120)
    assert operation.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], operation.error
    for word in words:
        assert word in operation.error.message, operation.error.message


def test_probe_datasets_are_checked_by_the_api(api):
    ch, audits, upload = api
    upload("loose", _tar({"a.png": _noise_probe()["noise/000.png"]}))
    error = refused(lambda: _audit(audits, "loose", "datasets/loose"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "one folder per named concept" in error.details()
    error = refused(lambda: _audit(audits, "missing", "datasets/nothing"), grpc.StatusCode.NOT_FOUND)
    assert "datasets/nothing" in error.details()
    refused(lambda: _audit(audits, "malformed", "probes/x"), grpc.StatusCode.INVALID_ARGUMENT)


def test_a_probe_archive_with_masks_reads_as_an_ordinary_dataset_elsewhere(tmp_path):
    from gigaudit_server.storage.datasets.archives import Archive, DatasetLimits, inspect_archive

    data = _tar(_part_probe(n=3))
    info = inspect_archive(io.BytesIO(data))
    assert (info.n_images, info.n_masks, info.class_names) == (3, 3, ["part1"])
    with Archive(io.BytesIO(data), DatasetLimits()) as archive:
        assert [m.name for m in archive.images()] == [f"part1/{j:03d}.png" for j in range(3)]
    with Archive(io.BytesIO(data), DatasetLimits()) as archive:
        assert sum(m.mask for m in archive.images(masks=True)) == 3
    loose = _noise_probe()
    for members in ({"a.png": loose["noise/000.png"], "x/masks/a.png": loose["noise/001.png"]},
                    {"x/masks/a.png": loose["noise/001.png"], "a.png": loose["noise/000.png"]}):
        with pytest.raises(ValueError, match="breaks the layout|need a labelled archive"):
            inspect_archive(io.BytesIO(_tar(members)))
    with pytest.raises(ValueError, match="breaks the layout"):
        inspect_archive(io.BytesIO(_tar({"x/b/a.png": loose["noise/000.png"]})))
    assert info.image_sizes["max_height"] == info.image_sizes["min_width"] == 32
