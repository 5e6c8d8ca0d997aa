"""DatasetService: upload or register (allow-listed URI) archives, checked torch-free before registration."""
from __future__ import annotations

import re

import grpc
from fsspec.core import url_to_fs
from google.protobuf import empty_pb2

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit_server import datasets, errors
from gigaudit_server.api import names, resources, uploads
from gigaudit_server.catalog import AlreadyExists

_SHA256 = re.compile(r"[0-9a-f]{64}")
CHUNK_BYTES = 1024**2


class DatasetServicer(dataset_grpc.DatasetServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def UploadDataset(self, request_iterator, context):
        header, chunks = uploads.split_upload(request_iterator)
        dataset_id = names.check_id("header.dataset_id", header.dataset_id)
        spec = header.dataset
        problems = {}
        if not _SHA256.fullmatch(spec.sha256):
            problems["header.dataset.sha256"] = "must be 64 lowercase hex digits"
        if spec.size_bytes < 1:
            problems["header.dataset.size_bytes"] = "must be the positive size of the archive"
        if problems:
            raise errors.invalid_argument(problems)
        self._check_size(spec.size_bytes, "header.dataset.size_bytes")
        if (retried := self._existing(dataset_id, header.request_id)) is not None:
            return retried
        return self._register(dataset_id, spec.display_name, header.request_id, "", chunks, spec.sha256,
                              spec.size_bytes)

    @errors.handle_errors
    def RegisterDataset(self, request, context):
        dataset_id = names.check_id("dataset_id", request.dataset_id)
        uri, allowed = request.dataset.uri, self.backend.settings.dataset_uri_allowlist
        if not any(uri.startswith(prefix) for prefix in allowed) or ".." in uri.split("/"):
            raise errors.ApiError(grpc.StatusCode.PERMISSION_DENIED if uri else
                                  grpc.StatusCode.INVALID_ARGUMENT,
                                  f"dataset.uri {uri!r} is not on an allowed location; allowed prefixes: "
                                  f"{', '.join(allowed) or '(none configured: --dataset-uri-allowlist)'}")
        if request.dataset.sha256 and not _SHA256.fullmatch(request.dataset.sha256):
            raise errors.invalid_argument({"dataset.sha256": "must be empty or 64 lowercase hex digits"})
        if (retried := self._existing(dataset_id, request.request_id)) is not None:
            return retried
        fs, path = url_to_fs(uri)
        if not fs.isfile(path):
            raise errors.not_found("dataset source", uri)
        self._check_size(fs.size(path), "dataset.uri")
        with fs.open(path, "rb") as source:
            chunks = iter(lambda: source.read(CHUNK_BYTES), b"")
            return self._register(dataset_id, request.dataset.display_name, request.request_id, uri, chunks,
                                  request.dataset.sha256 or None, None)

    @errors.handle_errors
    def GetDataset(self, request, context):
        return resources.dataset_message(self._record(names.dataset("name", request.name), request.name))

    @errors.handle_errors
    def ListDatasets(self, request, context):
        records, token = self.backend.catalog.list("datasets", page_size=request.page_size,
                                                   page_token=request.page_token)
        return dataset_pb.ListDatasetsResponse(datasets=[resources.dataset_message(r) for r in records],
                                               next_page_token=token)

    @errors.handle_errors
    def DeleteDataset(self, request, context):
        dataset_id = names.dataset("name", request.name)
        record = self._record(dataset_id, request.name)
        running = self.backend.in_use("datasets", dataset_id)
        if running:
            raise errors.failed_precondition(request.name, f"in use by running operations: {', '.join(running)}")
        self.backend.catalog.delete("datasets", dataset_id)
        self.backend.forget_artifact("datasets", record["sha256"])
        return empty_pb2.Empty()

    # ------------------------------------------------------------------ helpers
    def _register(self, dataset_id, display_name, request_id, uri, chunks, sha256, size) -> dataset_pb.Dataset:
        settings, store = self.backend.settings, self.backend.store
        try:
            sha, size = store.put_stream("datasets", chunks, expected_sha256=sha256, expected_size=size,
                                         max_bytes=settings.max_dataset_bytes)
        except ValueError as exc:
            raise errors.invalid_argument({"chunk": str(exc)}, str(exc)) from None
        limits = datasets.DatasetLimits(max_images=settings.max_dataset_images,
                                        max_total_bytes=settings.max_dataset_expanded_bytes,
                                        max_image_pixels=settings.max_image_pixels)
        try:
            with store.open("datasets", sha) as archive:
                info = datasets.inspect_archive(archive, limits)
            record = {"name": f"datasets/{dataset_id}", "display_name": display_name, "sha256": sha,
                      "size_bytes": size, "format": info.format, "n_images": info.n_images,
                      "class_names": list(info.class_names), "uri": uri, "request_id": request_id}
            record, _ = self.backend.catalog.create("datasets", dataset_id, record, request_id=request_id)
        except datasets.LimitExceeded as exc:
            self.backend.forget_artifact("datasets", sha)
            raise errors.resource_exhausted("chunk", str(exc)) from None
        except ValueError as exc:
            self.backend.forget_artifact("datasets", sha)
            raise errors.invalid_argument({"chunk": str(exc)}, f"not a valid dataset archive: {exc}") from None
        except AlreadyExists:
            self.backend.forget_artifact("datasets", sha)
            raise errors.already_exists("dataset", f"datasets/{dataset_id}") from None
        return resources.dataset_message(record)

    def _existing(self, dataset_id: str, request_id: str) -> dataset_pb.Dataset | None:
        """The dataset a retried request created; ALREADY_EXISTS when another request took the id."""
        try:
            record = self.backend.catalog.get("datasets", dataset_id)
        except KeyError:
            return None
        if request_id and record.get("request_id") == request_id:
            return resources.dataset_message(record)
        raise errors.already_exists("dataset", f"datasets/{dataset_id}")

    def _check_size(self, size: int, field: str) -> None:
        if size > self.backend.settings.max_dataset_bytes:
            raise errors.resource_exhausted(field, f"{size} bytes exceed the limit of "
                                                   f"{self.backend.settings.max_dataset_bytes} bytes per dataset")

    def _record(self, dataset_id: str, name: str) -> dict:
        try:
            return self.backend.catalog.get("datasets", dataset_id)
        except KeyError:
            raise errors.not_found("dataset", name) from None
