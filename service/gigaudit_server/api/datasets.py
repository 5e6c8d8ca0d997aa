"""DatasetService: upload or register (allow-listed URI) archives, checked torch-free before registration."""
from __future__ import annotations

import hashlib

import grpc
from fsspec.core import url_to_fs
from google.protobuf import empty_pb2

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit_server.api import errors, idempotency, lifecycle, names, ownership, resources, uploaded, uploads
from gigaudit_server.storage import archives as datasets

CHUNK_BYTES = 1024**2
_UPLOAD = "/gigaudit.v1.DatasetService/UploadDataset"
_REGISTER = "/gigaudit.v1.DatasetService/RegisterDataset"


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
        return self._once(_UPLOAD, header, lambda: self._register(
            dataset_id, spec.display_name, "", chunks, spec.sha256, spec.size_bytes))

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
        return self._once(_REGISTER, request, lambda: self._register_uri(dataset_id, request))

    @errors.handle_errors
    def GetDataset(self, request, context):
        try:
            record = self.backend.catalog.get("datasets", names.dataset("name", request.name))
        except KeyError:
            raise errors.not_found("dataset", request.name) from None
        return resources.dataset_message(record)

    @errors.handle_errors
    def ListDatasets(self, request, context):
        records, token = self.backend.catalog.list("datasets", page_size=request.page_size,
                                                   page_token=request.page_token)
        return dataset_pb.ListDatasetsResponse(datasets=[resources.dataset_message(r) for r in records],
                                               next_page_token=token)

    @errors.handle_errors
    def DeleteDataset(self, request, context):
        lifecycle.delete(self.backend, "datasets", names.dataset("name", request.name), force=request.force)
        return empty_pb2.Empty()

    # ------------------------------------------------------------------ helpers
    def _once(self, method: str, message, register) -> dataset_pb.Dataset:
        """``register()`` once per request id; a retry gets the same dataset back, or runs anew when that dataset
        was deleted since (also when its id was registered again by another request)."""
        def work() -> str:
            dataset_id = register()
            return f"{dataset_id}@{self.backend.catalog.get('datasets', dataset_id)['create_time']!r}"

        def replay(result: str) -> dataset_pb.Dataset:
            dataset_id, _, created = result.partition("@")
            try:
                record = self.backend.catalog.get("datasets", dataset_id)
            except KeyError:
                record = None
            if record is None or repr(record["create_time"]) != created:
                raise idempotency.Gone(dataset_id)  # deleted since (perhaps its id taken again): run anew
            return resources.dataset_message(record)
        return self.backend.idempotency.once(ownership.owner(), method, message.request_id,
                                             idempotency.fingerprint(message), work, replay)

    def _register_uri(self, dataset_id: str, request) -> str:
        uri, sha = request.dataset.uri, request.dataset.sha256 or None
        fs, path = url_to_fs(uri)
        if not fs.isfile(path):
            raise errors.not_found("dataset source", uri)
        self._check_size(fs.size(path), "dataset.uri")
        if sha is None:  # the digest pins the artifact before it is stored: compute it first
            digest = hashlib.sha256()
            with fs.open(path, "rb") as source:
                for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
            sha = digest.hexdigest()
        with fs.open(path, "rb") as source:
            return self._register(dataset_id, request.dataset.display_name, uri,
                                  iter(lambda: source.read(CHUNK_BYTES), b""), sha, None)

    def _register(self, dataset_id, display_name, uri, chunks, sha256, size) -> str:
        """Store, check and register an archive; returns the dataset id. Nothing stays on a refusal."""
        settings, store = self.backend.settings, self.backend.store
        limits = datasets.DatasetLimits(max_images=settings.max_dataset_images,
                                        max_total_bytes=settings.max_dataset_expanded_bytes,
                                        max_image_pixels=settings.max_image_pixels)

        def store_chunks() -> int:
            return uploaded.store(self.backend, "datasets", chunks, sha256, size, settings.max_dataset_bytes)[1]

        def make_record(stored_size: int) -> dict:
            try:
                with store.open("datasets", sha256) as archive:
                    info = datasets.inspect_archive(archive, limits)
            except datasets.LimitExceeded as exc:
                raise errors.resource_exhausted("chunk", str(exc)) from None
            except ValueError as exc:
                raise errors.invalid_argument({"chunk": str(exc)}, f"not a valid dataset archive: {exc}") from None
            return {"name": f"datasets/{dataset_id}", "display_name": display_name, "sha256": sha256,
                    "size_bytes": stored_size, "format": info.format, "n_images": info.n_images,
                    "class_names": list(info.class_names), "uri": uri,
                    "image_sizes": dict(info.image_sizes)}

        lifecycle.register_upload(self.backend, "datasets", dataset_id, sha256, store_chunks, make_record)
        return dataset_id

    def _check_size(self, size: int, field: str) -> None:
        if size > self.backend.settings.max_dataset_bytes:
            raise errors.resource_exhausted(field, f"{size} bytes exceed the limit of "
                                                   f"{self.backend.settings.max_dataset_bytes} bytes per dataset")
