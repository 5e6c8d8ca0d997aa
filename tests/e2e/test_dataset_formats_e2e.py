"""Every dataset format end to end: uploaded, or registered by URI and read in place by the worker, then audited
(concepts, graph, evaluation) with the PartsNet demo model and written out as a report.

The same twelve planted images in each format; labelled formats name the model's classes (folders, parquet and
Hugging Face label names, manifests) or give class indices (WebDataset `.cls`, integer columns).
"""
from __future__ import annotations

import io
import json
import tarfile

import pytest

import api_harness as h
import dataset_fixtures as F
from gigaudit.client import AuditClient
from gigaudit.report import write_report
from gigaudit.v1 import dataset_service_pb2 as dataset_pb

pytestmark = pytest.mark.slow

N_IMAGES = 12
CLASSES = [f"class{c}" for c in range(6)]
LAYERS = ["features.2", "features.3"]


def planted_items() -> list[tuple[str, int, bytes]]:
    """``(file name, class index, PNG)`` of the planted parts images, in ImageFolder order (class, then name)."""
    items = []
    with tarfile.open(fileobj=io.BytesIO(h.parts_tar(N_IMAGES))) as archive:
        for member in archive:
            if member.isfile():
                folder, file = member.name.split("/")
                items.append((f"{folder}_{file}", CLASSES.index(folder), archive.extractfile(member).read()))
    return sorted(items, key=lambda item: (item[1], item[0]))


@pytest.fixture(scope="module")
def service(tmp_path_factory, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    root = tmp_path_factory.mktemp("formats")
    allowed = root / "allowed"
    allowed.mkdir()
    prefix = f"file://{allowed}/"
    patch = pytest.MonkeyPatch()
    patch.setenv("GIGAUDIT_DATASET_URI_ALLOWLIST", json.dumps([prefix]))  # the worker's allow-list
    server = h.start_server(redis_url, f"file://{root}/store", dataset_uri_allowlist=[prefix])
    thread, stop = h.start_worker(redis_url, f"file://{root}/store")
    client = AuditClient(f"127.0.0.1:{server.port}")
    h.registered_model(client.channel, "parts", h.partsnet_bytes(), class_names=CLASSES)
    yield client, root, allowed
    client.close()
    server.stop(0)
    stop.set()
    thread.join(30)
    patch.undo()


def _datasets(root, allowed) -> dict[str, tuple[str, object]]:
    """``{dataset id: ("upload", path) or ("uri", uri)}``: one per format and way in."""
    items, named = planted_items(), {"classes": CLASSES}
    local = root / "local"
    local.mkdir(exist_ok=True)
    images = F.image_files(allowed / "images", items)[0].parent
    (allowed / "shards").mkdir(exist_ok=True)
    F.webdataset_shard(allowed / "shards" / "a.tar", items[: N_IMAGES // 2])
    F.webdataset_shard(allowed / "shards" / "b.tar", items[N_IMAGES // 2:])
    return {
        "imagefolder": ("upload", F.imagefolder_tar(local / "f.tar", items, **named)),
        "webdataset": ("upload", F.webdataset_shard(local / "s.tar", items)),
        "parquet": ("upload", F.parquet_file(local / "t.parquet", items, label_names=True, **named)),
        "hf-saved": ("upload", F.hf_saved(local / "hf", items, **named)),
        "webdataset-uri": ("uri", f"file://{allowed}/shards"),
        "parquet-uri": ("uri", f"file://{F.parquet_file(allowed / 't.parquet', items)}"),
        "hf-uri": ("uri", f"file://{F.hf_saved(allowed / 'hf', items, **named)}"),
        "csv-manifest": ("uri", f"file://{F.csv_manifest(allowed / 'm.csv', items, images, **named)}"),
        "jsonl-manifest": ("uri", f"file://{F.jsonl_manifest(allowed / 'm.jsonl', items, images)}"),
    }


@pytest.fixture(scope="module")
def registered(service):
    client, root, allowed = service
    registered = {}
    for dataset_id, (way, source) in _datasets(root, allowed).items():
        dataset = (client.upload_dataset(source, dataset_id) if way == "upload"
                   else client.register_dataset(source, dataset_id, progress=False))
        assert dataset.image_count == N_IMAGES, dataset_id
        registered[dataset_id] = dataset
    return registered


@pytest.mark.parametrize("dataset_id", ["imagefolder", "webdataset", "parquet", "hf-saved", "webdataset-uri",
                                        "parquet-uri", "hf-uri", "csv-manifest", "jsonl-manifest"])
def test_each_format_is_audited_through_the_service(service, registered, dataset_id, tmp_path):
    client, _, _ = service
    dataset = registered[dataset_id]
    op = client.audit("parts", dataset_id, f"audit-{dataset_id}", layers=LAYERS,
                      concept_options={"n_concepts": 4, "seed": 1}, metrics=["completeness"], evaluation_images=4)
    client.wait(op.name, timeout=300, progress=False)
    graph = client.get_graph(f"models/parts/conceptGraphs/audit-{dataset_id}")
    assert graph.n_images == N_IMAGES, "every image of the dataset was read"
    assert {n["layer"] for n in graph.data["nodes"] if n.get("kind", "concept") == "concept"} == set(LAYERS)
    for pair, entry in graph.evidence["completeness"].items():
        assert entry["dataset_delta"] < 0.05, (pair, entry)
    if dataset_id != "imagefolder":  # same images, same order, same classes: the same graph as from the folders
        reference = client.get_graph("models/parts/conceptGraphs/audit-imagefolder")
        assert _edges(graph) == pytest.approx(_edges(reference), rel=1e-5, abs=1e-9)
    exemplars = client.graph_exemplars(graph, f"models/parts/conceptSets/audit-{dataset_id}")
    assert exemplars
    path = write_report(tmp_path / "report", graph, exemplars=exemplars, title=f"gigaudit: {dataset.name}")
    assert path.stat().st_size > 10_000


def _edges(graph) -> list[float]:
    return [value for edge in sorted(graph.edges, key=lambda e: (e["source"], e["target"]))
            for key, value in sorted(edge.items()) if isinstance(value, float)]
