"""Every dataset format through the service: uploaded (checked by the API) or registered by URI (inspected and read
in place by a worker, never copied), to ACTIVE with the right counts and classes; bad inputs refused clearly with
nothing stored lost; an extraction over data read in place equals the one over the uploaded ImageFolder."""
from __future__ import annotations

import io
import json
import tarfile

import grpc
import pytest

import api_harness as h
import dataset_fixtures as F
from gigaudit.client import AuditClient
from gigaudit.errors import GigauditError
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import resource_state_pb2 as state_pb

ACTIVE = state_pb.RESOURCE_STATE_ACTIVE


@pytest.fixture
def source_dir(tmp_path):
    (tmp_path / "allowed").mkdir()
    return tmp_path / "allowed"


@pytest.fixture
def client(redis_client, redis_url, tmp_path, source_dir, monkeypatch):
    allowed = f"file://{source_dir}/"
    monkeypatch.setenv("GIGAUDIT_DATASET_URI_ALLOWLIST", json.dumps([allowed]))  # as the API reads it
    server = h.start_server(redis_url, f"file://{tmp_path}/store", dataset_uri_allowlist=[allowed])
    _, stop = h.start_worker(redis_url, f"file://{tmp_path}/store")
    with AuditClient(f"127.0.0.1:{server.port}") as client:
        yield client
    stop.set()
    server.stop(0)


def test_every_format_uploaded_or_registered_in_place_becomes_active(client, source_dir, tmp_path):
    items = F.in_imagefolder_order(F.images())
    local = tmp_path / "local"
    local.mkdir()
    hf = F.hf_saved(local / "hf", items)
    (local / "shards").mkdir()
    F.webdataset_shard(local / "shards" / "a.tar", items[:3])
    F.webdataset_shard(local / "shards" / "b.tar", items[3:])
    uploaded = {
        "folder": (F.imagefolder_tar(local / "f.tar", items), dataset_pb.DATASET_FORMAT_TAR, ["cat", "dog"]),
        "shard": (F.webdataset_shard(local / "s.tar", items), dataset_pb.DATASET_FORMAT_WEBDATASET, ["0", "1"]),
        "shards": (local / "shards", dataset_pb.DATASET_FORMAT_WEBDATASET, ["0", "1"]),  # packed into one shard
        "table": (F.parquet_file(local / "t.parquet", items, label_names=True), dataset_pb.DATASET_FORMAT_PARQUET,
                  ["cat", "dog"]),
        "saved": (hf, dataset_pb.DATASET_FORMAT_HF_DATASET, ["cat", "dog"]),  # a folder, packed into a tar
    }
    shas = {}
    for dataset_id, (path, fmt, classes) in uploaded.items():
        dataset = client.upload_dataset(path, dataset_id)
        assert (dataset.format, dataset.image_count, list(dataset.class_names), dataset.state) == \
               (fmt, 6, classes, ACTIVE), dataset_id
        shas[dataset_id] = dataset.sha256
    assert shas["shards"] == shas["shard"]  # the shards' members packed in order: the same bytes as one shard
    stored = h.stored_files(tmp_path, "datasets")
    assert len(stored) == 4

    images = F.image_files(source_dir / "images", items)[0].parent
    F.hf_saved(source_dir / "hf", items)
    (source_dir / "shards").mkdir()
    F.webdataset_shard(source_dir / "shards" / "a.tar", items[:3])
    F.webdataset_shard(source_dir / "shards" / "b.tar", items[3:])
    F.parquet_file(source_dir / "t.parquet", items)
    in_place = {
        "hf-folder": ("hf", dataset_pb.DATASET_FORMAT_HF_DATASET, ["cat", "dog"]),
        "shard-folder": ("shards", dataset_pb.DATASET_FORMAT_WEBDATASET, ["0", "1"]),
        "parquet-file": ("t.parquet", dataset_pb.DATASET_FORMAT_PARQUET, ["0", "1"]),
        "csv": (F.csv_manifest(images / "m.csv", items, images, relative=True).relative_to(source_dir),
                dataset_pb.DATASET_FORMAT_CSV_MANIFEST, ["cat", "dog"]),
        "jsonl": (F.jsonl_manifest(source_dir / "m.jsonl", items, images).name,
                  dataset_pb.DATASET_FORMAT_JSONL_MANIFEST, ["0", "1"]),
    }
    for dataset_id, (relative, fmt, classes) in in_place.items():
        uri = f"file://{source_dir}/{relative}"
        dataset = client.register_dataset(uri, dataset_id, progress=False)
        assert (dataset.format, dataset.image_count, list(dataset.class_names), dataset.state, dataset.uri) == \
               (fmt, 6, classes, ACTIVE, uri), dataset_id
        assert len(dataset.sha256) == 64 and dataset.size_bytes > 0
    assert h.stored_files(tmp_path, "datasets") == stored, "read in place: no dataset copied into the store"
    for dataset_id in in_place:
        client.delete_dataset(dataset_id)
    assert h.stored_files(tmp_path, "datasets") == stored, "deleting in-place datasets touches no stored blob"
    assert (source_dir / "t.parquet").exists()


def test_bad_inputs_are_refused_clearly_and_nothing_stored_is_lost(client, source_dir, tmp_path):
    items = F.in_imagefolder_order(F.images(2))
    kept = client.upload_dataset(F.imagefolder_tar(tmp_path / "k.tar", items), "kept")
    images = F.image_files(source_dir / "images", items)[0].parent
    manifest = F.jsonl_manifest(source_dir / "m.jsonl", items, images)
    with pytest.raises(GigauditError) as info:  # a manifest is read where its images are: by URI only
        client._upload(client.datasets.UploadDataset, lambda: iter(h.dataset_requests("up", manifest.read_bytes())))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "register it by URI" in str(info.value)

    (source_dir / "outside.csv").write_text("uri,label\ns3://elsewhere/a.png,cat\n")
    (source_dir / "gone.csv").write_text(f"uri,label\n{(images / 'gone.png').as_uri()},cat\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pixels": pa.array([items[0][2]]), "label": pa.array([0])}), source_dir / "x.parquet")
    for name, expected in (("outside.csv", "off the allowed locations"), ("gone.csv", "cannot be read"),
                           ("x.parquet", "has no image column")):
        with pytest.raises(GigauditError) as info:
            client.register_dataset(f"file://{source_dir}/{name}", "bad", progress=False)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and expected in str(info.value), str(info.value)
        with pytest.raises(GigauditError) as missing:
            client.get_dataset("bad")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND  # the failed registration left nothing
    with pytest.raises(GigauditError) as info:
        client.upload_dataset(source_dir / "x.parquet", "bad")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "pixels (binary)" in str(info.value)
    with pytest.raises(GigauditError) as info:
        client.register_dataset(f"file://{tmp_path}/k.tar", "bad", progress=False)
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert client.get_dataset("kept") == kept and h.stored_files(tmp_path, "datasets") == [kept.sha256]


@pytest.mark.slow
def test_extraction_over_a_webdataset_read_in_place_equals_the_uploaded_imagefolder(client, source_dir):
    """Same images, same order, labels as class indices: the concept sets agree layer by layer."""
    archive = h.parts_tar(12)
    shard = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as source, tarfile.open(fileobj=shard, mode="w") as out:
        for member in source:
            if member.isfile():
                folder, file = member.name.split("/")
                key = f"{folder}_{file.removesuffix('.png')}"
                h.add_member(out, f"{key}.png", source.extractfile(member).read())
                h.add_member(out, f"{key}.cls", folder.removeprefix("class").encode())
    (source_dir / "shards").mkdir()
    (source_dir / "shards" / "part-0.tar").write_bytes(shard.getvalue())
    channel = client.channel
    h.registered_model(channel, "parts", h.partsnet_bytes())
    client.upload_dataset(_write(source_dir.parent / "parts.tar", archive), "uploaded")
    client.register_dataset(f"file://{source_dir}/shards", "in-place", progress=False)
    audits, layers = audit_grpc.AuditServiceStub(channel), ["features.2", "features.3"]
    stats = {}
    for dataset in ("uploaded", "in-place"):
        done = h.wait_operation(channel, audits.ExtractConcepts(audit_pb.ExtractConceptsRequest(
            parent="models/parts", concept_set_id=f"cs-{dataset}", dataset=f"datasets/{dataset}", layers=layers,
            options=audit_pb.ConceptOptions(n_concepts=4, seed=1))).name)
        assert not done.HasField("error"), done.error
        concept_set = audit_pb.ConceptSet()
        done.response.Unpack(concept_set)
        stats[dataset] = [(layer.layer, round(layer.relative_error, 6), round(layer.l0, 6))
                          for layer in concept_set.layers]
    assert stats["uploaded"] == stats["in-place"] and len(stats["uploaded"]) == 2


def _write(path, data: bytes):
    path.write_bytes(data)
    return path
