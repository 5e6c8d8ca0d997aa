"""DatasetService: upload a dataset file (checked and inspected torch-free before registration), or register one
by allow-listed URI (inspected where it is by a worker, in an operation; never copied through the API)."""
from __future__ import annotations

import os

import grpc
from google.protobuf import empty_pb2

from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit_server.api import errors, idempotency, lifecycle, names, ownership, resources, uploaded, uploads
from gigaudit_server.queue import schemas
from gigaudit_server.storage import settlement
from gigaudit_server.storage.datasets import archives, samples, sources

_UPLOAD = "/gigaudit.v1.DatasetService/UploadDataset"
_REGISTER = "/gigaudit.v1.DatasetService/RegisterDataset"
MAX_COLUMN_CHARS = 200
INSPECT_THREADS = max(1, min(4, os.cpu_count() or 1))


class DatasetServicer(dataset_grpc.DatasetServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def UploadDataset(self, request_iterator, context):
        header, chunks = uploads.split_upload(request_iterator)
        dataset_id = names.check_id("header.dataset_id", header.dataset_id)
        spec = header.dataset
        problems = _column_problems(spec, "header.dataset")
        if not uploaded.SHA256.fullmatch(spec.sha256):
            problems["header.dataset.sha256"] = "must be 64 lowercase hex digits"
        if spec.size_bytes < 1:
            problems["header.dataset.size_bytes"] = "must be the positive size of the dataset file"
        if problems:
            raise errors.invalid_argument(problems)
        self._check_size(spec.size_bytes, "header.dataset.size_bytes")
        return self._once(_UPLOAD, header, lambda: self._register(dataset_id, spec, chunks))

    @errors.handle_errors
    def RegisterDataset(self, request, context):
        """Check the URI against the allow-list, record the dataset CREATING and queue the ``inspect_dataset`` job
        that reads it where it is; returns that operation. Settled by ``storage.settlement.dataset``."""
        dataset_id = names.check_id("dataset_id", request.dataset_id)
        spec, allowed = request.dataset, self.backend.settings.dataset_uri_allowlist
        try:
            samples.check_uri(spec.uri, allowed)
        except samples.NotAllowed as exc:
            raise errors.ApiError(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None
        except ValueError as exc:
            raise errors.invalid_argument({"dataset.uri": str(exc) if spec.uri else "is required"}) from None
        problems = _column_problems(spec, "dataset")
        if spec.sha256 and not uploaded.SHA256.fullmatch(spec.sha256):
            problems["dataset.sha256"] = "must be empty or 64 lowercase hex digits"
        if problems:
            raise errors.invalid_argument(problems)
        record = {"name": f"datasets/{dataset_id}", "display_name": spec.display_name, "sha256": spec.sha256,
                  "size_bytes": 0, "format": "", "n_images": 0, "class_names": [], "uri": spec.uri,
                  "in_place": True, "image_sizes": {}, "image_column": spec.image_column,
                  "label_column": spec.label_column}
        params = schemas.to_params(schemas.InspectDataset(
            dataset_id=dataset_id, uri=spec.uri, sha256=spec.sha256, image_column=spec.image_column,
            label_column=spec.label_column))
        return lifecycle.start(self.backend, _REGISTER, request, "inspect_dataset", params,
                               [("datasets", dataset_id, record, [])], [])

    @errors.handle_errors
    def GetDataset(self, request, context):
        try:
            record = settlement.dataset(self.backend, names.dataset("name", request.name))
        except KeyError:
            raise errors.not_found("dataset", request.name) from None
        return resources.dataset_message(record)

    @errors.handle_errors
    def ListDatasets(self, request, context):
        datasets, token = resources.settled_page(self.backend, "datasets", settlement.dataset,
                                                 resources.dataset_message, request)
        return dataset_pb.ListDatasetsResponse(datasets=datasets, next_page_token=token)

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

    def _register(self, dataset_id: str, spec, chunks) -> str:
        """Store, check and register an uploaded dataset file; returns the dataset id. Nothing stays on a
        refusal."""
        settings, store = self.backend.settings, self.backend.store
        limits = archives.DatasetLimits(max_images=settings.max_dataset_images,
                                        max_total_bytes=settings.max_dataset_expanded_bytes,
                                        max_image_pixels=settings.max_image_pixels)

        def store_chunks() -> int:
            return uploaded.store(self.backend, "datasets", chunks, spec.sha256, spec.size_bytes,
                                  settings.max_dataset_bytes)[1]

        def make_record(stored_size: int) -> dict:
            location = store.fs.unstrip_protocol(store.path("datasets", spec.sha256))
            try:
                format = sources.detect_format(location, limits)
                if format in sources.MANIFESTS:
                    raise errors.invalid_argument({"chunk": "a manifest of image URIs is read where its images "
                                                            "are: register it by URI (RegisterDataset)"})
                info = sources.inspect_dataset(location, limits, format=format,
                                                       image_column=spec.image_column,
                                                       label_column=spec.label_column, threads=INSPECT_THREADS)
            except archives.LimitExceeded as exc:
                raise errors.resource_exhausted("chunk", str(exc)) from None
            except (ValueError, NotImplementedError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise errors.invalid_argument({"chunk": str(exc)}, f"not a valid dataset: {exc}") from None
            return {"name": f"datasets/{dataset_id}", "display_name": spec.display_name, "sha256": spec.sha256,
                    "size_bytes": stored_size, "format": info.format, "n_images": info.n_images,
                    "class_names": list(info.class_names), "uri": "", "image_sizes": dict(info.image_sizes),
                    "image_column": spec.image_column, "label_column": spec.label_column}

        lifecycle.register_upload(self.backend, "datasets", dataset_id, spec.sha256, store_chunks, make_record)
        return dataset_id

    def _check_size(self, size: int, field: str) -> None:
        if size > self.backend.settings.max_dataset_bytes:
            raise errors.resource_exhausted(field, f"{size} bytes exceed the limit of "
                                                   f"{self.backend.settings.max_dataset_bytes} bytes per dataset")


def _column_problems(spec, prefix: str) -> dict[str, str]:
    """Field violations of the image and label column names."""
    return {f"{prefix}.{field}": f"must be at most {MAX_COLUMN_CHARS} characters"
            for field in ("image_column", "label_column") if len(getattr(spec, field)) > MAX_COLUMN_CHARS}
