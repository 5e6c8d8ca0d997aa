"""DatasetService: upload or register (allow-listed URI) archives, checked torch-free before registration."""
from __future__ import annotations

import grpc
from fsspec.core import url_to_fs
from google.protobuf import empty_pb2

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit_server.storage import archives as datasets
from gigaudit_server.api import errors
from gigaudit_server.api import names, resources, uploaded, uploads

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
        if not uploaded.SHA256.fullmatch(spec.sha256):
            problems["header.dataset.sha256"] = "must be 64 lowercase hex digits"
        if spec.size_bytes < 1:
            problems["header.dataset.size_bytes"] = "must be the positive size of the archive"
        if problems:
            raise errors.invalid_argument(problems)
        self._check_size(spec.size_bytes, "header.dataset.size_bytes")
        if (retried := uploaded.retried(self.backend, "datasets", dataset_id, header.request_id)) is not None:
            return resources.dataset_message(retried)
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
        if request.dataset.sha256 and not uploaded.SHA256.fullmatch(request.dataset.sha256):
            raise errors.invalid_argument({"dataset.sha256": "must be empty or 64 lowercase hex digits"})
        if (retried := uploaded.retried(self.backend, "datasets", dataset_id, request.request_id)) is not None:
            return resources.dataset_message(retried)
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
        return resources.dataset_message(uploaded.get(self.backend, "datasets", names.dataset("name", request.name),
                                                      request.name))

    @errors.handle_errors
    def ListDatasets(self, request, context):
        records, token = self.backend.catalog.list("datasets", page_size=request.page_size,
                                                   page_token=request.page_token)
        return dataset_pb.ListDatasetsResponse(datasets=[resources.dataset_message(r) for r in records],
                                               next_page_token=token)

    @errors.handle_errors
    def DeleteDataset(self, request, context):
        uploaded.delete(self.backend, "datasets", names.dataset("name", request.name), request.name)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------ helpers
    def _register(self, dataset_id, display_name, request_id, uri, chunks, sha256, size) -> dataset_pb.Dataset:
        settings, store = self.backend.settings, self.backend.store
        sha, size = uploaded.store(self.backend, "datasets", chunks, sha256, size, settings.max_dataset_bytes)
        limits = datasets.DatasetLimits(max_images=settings.max_dataset_images,
                                        max_total_bytes=settings.max_dataset_expanded_bytes,
                                        max_image_pixels=settings.max_image_pixels)
        with uploaded.registering(self.backend, "datasets", dataset_id, sha):
            try:
                with store.open("datasets", sha) as archive:
                    info = datasets.inspect_archive(archive, limits)
            except datasets.LimitExceeded as exc:
                raise errors.resource_exhausted("chunk", str(exc)) from None
            except ValueError as exc:
                raise errors.invalid_argument({"chunk": str(exc)}, f"not a valid dataset archive: {exc}") from None
            record = {"name": f"datasets/{dataset_id}", "display_name": display_name, "sha256": sha,
                      "size_bytes": size, "format": info.format, "n_images": info.n_images,
                      "class_names": list(info.class_names), "uri": uri, "request_id": request_id}
            record, _ = self.backend.catalog.create("datasets", dataset_id, record, request_id=request_id)
        return resources.dataset_message(record)

    def _check_size(self, size: int, field: str) -> None:
        if size > self.backend.settings.max_dataset_bytes:
            raise errors.resource_exhausted(field, f"{size} bytes exceed the limit of "
                                                   f"{self.backend.settings.max_dataset_bytes} bytes per dataset")
