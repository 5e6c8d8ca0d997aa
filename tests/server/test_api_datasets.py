"""DatasetService over real gRPC and Redis: uploads checked torch-free, registration by allow-listed URI."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import grpc
import pytest

import api_harness as h
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc


@pytest.fixture
def source_dir(tmp_path):
    (tmp_path / "allowed").mkdir()
    return tmp_path / "allowed"


@pytest.fixture
def server(redis_client, redis_url, tmp_path, source_dir):
    server = h.start_server(redis_url, f"file://{tmp_path}/store", max_dataset_images=50,
                            dataset_uri_allowlist=[f"file://{source_dir}/"], max_image_pixels=256 * 256, max_dataset_expanded_bytes=4 * 1024**2)
    yield server
    server.stop(0)


@pytest.fixture
def datasets(server):
    with h.channel(server) as channel:
        yield dataset_grpc.DatasetServiceStub(channel)


def zip_with(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("class0/ok.png", _png(8))
        archive.writestr(name, data)
    return out.getvalue()


def _png(side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_upload_describes_the_archive_and_retries_are_idempotent(datasets, tmp_path):
    data = h.parts_tar(12)
    dataset = datasets.UploadDataset(h.dataset_requests("parts", data, request_id="r-1"))
    assert dataset.name == "datasets/parts" and dataset.image_count == 12
    assert dataset.format == dataset_pb.DATASET_FORMAT_TAR
    assert list(dataset.class_names) == sorted({f"class{i}" for i in range(6)})
    assert dataset.sha256 == hashlib.sha256(data).hexdigest()
    assert datasets.UploadDataset(h.dataset_requests("parts", data, request_id="r-1")) == dataset
    h.refused(lambda: datasets.UploadDataset(h.dataset_requests("parts", data)), grpc.StatusCode.ALREADY_EXISTS)
    assert datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/parts")) == dataset
    assert [d.name for d in datasets.ListDatasets(dataset_pb.ListDatasetsRequest()).datasets] == ["datasets/parts"]
    datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/parts"))
    assert h.stored_files(tmp_path, "datasets") == []


@pytest.mark.parametrize("name, data, message", [
    ("../escape.png", _png(8), ".."),
    ("class1/bomb.png", _png(512), "pixels"),  # 512² > the 256² limit of this server
    ("class1/zeros.png", bytes(8 * 1024**2), "expands beyond"),  # ~8 KiB deflated, 8 MiB > the 4 MiB limit
    ("class1/corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt"),
], ids=["dotdot", "pixel-bomb", "zip-bomb", "corrupt"])
def test_unsafe_archives_are_refused_naming_the_member_and_nothing_is_kept(datasets, tmp_path, name, data, message):
    before = datasets.UploadDataset(h.dataset_requests("kept", h.parts_tar(6)))
    error = h.refused(lambda: datasets.UploadDataset(h.dataset_requests("bad", zip_with(name, data))),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert message in error.details() and name.split("/")[-1] in error.details()
    assert h.stored_files(tmp_path, "datasets") == [before.sha256], "only the earlier dataset remains"
    assert datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/kept")) == before
    h.refused(lambda: datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/bad")), grpc.StatusCode.NOT_FOUND)


def test_truncated_or_mislabelled_uploads_are_refused(datasets, tmp_path):
    data = h.parts_tar(6)
    error = h.refused(lambda: datasets.UploadDataset(h.dataset_requests("cut", data[:-700], size_bytes=len(data),
                                                                      sha256="0" * 64)),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "truncated" in error.details()
    h.refused(lambda: datasets.UploadDataset(h.dataset_requests("sha", data, sha256="1" * 64)),
            grpc.StatusCode.INVALID_ARGUMENT)
    error = h.refused(lambda: datasets.UploadDataset(h.dataset_requests("big", data, size_bytes=2**40)),
                    grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert h.details_of(error)["QuotaFailure"].violations[0].subject == "header.dataset.size_bytes"
    assert h.stored_files(tmp_path, "datasets") == []


def test_register_reads_in_place_only_allow_listed_locations(server, redis_url, source_dir, tmp_path, monkeypatch):
    """The API checks the URI and queues the inspection; a worker reads the data where it is (nothing is stored),
    and a URI that names nothing fails the operation and leaves nothing registered."""
    monkeypatch.setenv("GIGAUDIT_DATASET_URI_ALLOWLIST", json.dumps([f"file://{source_dir}/"]))
    _, stop = h.start_worker(redis_url, f"file://{tmp_path}/store")
    data = h.parts_tar(6)
    (source_dir / "parts.tar").write_bytes(data)
    (tmp_path / "secret.tar").write_bytes(data)
    try:
        with h.channel(server) as channel:
            datasets = dataset_grpc.DatasetServiceStub(channel)
            operation = datasets.RegisterDataset(dataset_pb.RegisterDatasetRequest(
                dataset_id="registered", dataset=dataset_pb.Dataset(uri=f"file://{source_dir}/parts.tar")))
            creating = datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/registered"))
            assert creating.operation == operation.name
            done = h.wait_operation(channel, operation.name)
            assert not done.HasField("error"), done.error
            dataset = dataset_pb.Dataset()
            done.response.Unpack(dataset)
            assert dataset.image_count == 6 and dataset.uri.endswith("parts.tar")
            assert dataset.state == 2 and dataset.format == dataset_pb.DATASET_FORMAT_TAR  # ACTIVE
            assert dataset.sha256 == hashlib.sha256(data).hexdigest()
            assert h.stored_files(tmp_path, "datasets") == [], "read in place: nothing copied into the store"
            for uri in (f"file://{tmp_path}/secret.tar", f"file://{source_dir}/../secret.tar"):
                h.refused(lambda: datasets.RegisterDataset(dataset_pb.RegisterDatasetRequest(
                    dataset_id="other", dataset=dataset_pb.Dataset(uri=uri))), grpc.StatusCode.PERMISSION_DENIED)
            missing = datasets.RegisterDataset(dataset_pb.RegisterDatasetRequest(
                dataset_id="missing", dataset=dataset_pb.Dataset(uri=f"file://{source_dir}/none.tar")))
            failed = h.wait_operation(channel, missing.name)
            assert failed.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "no dataset at" in failed.error.message
            h.refused(lambda: datasets.GetDataset(dataset_pb.GetDatasetRequest(name="datasets/missing")),
                      grpc.StatusCode.NOT_FOUND)
            datasets.DeleteDataset(dataset_pb.DeleteDatasetRequest(name="datasets/registered"))
            assert (source_dir / "parts.tar").read_bytes() == data, "deleting it leaves the data where it is"
    finally:
        stop.set()


def test_image_count_limit(datasets):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(51):
            h.add_member(tar, f"{i:03d}.png", _png(4))
    error = h.refused(lambda: datasets.UploadDataset(h.dataset_requests("many", out.getvalue())),
                    grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "50" in error.details()
