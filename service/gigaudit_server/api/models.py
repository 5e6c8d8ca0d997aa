"""ModelService: upload (safetensors only; a worker checks the weights in an operation), get, list, delete, layers."""
from __future__ import annotations

import difflib

import re

from google.protobuf import empty_pb2, json_format

from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit_server.api import (
    errors,
    idempotency,
    lifecycle,
    names,
    operations,
    ownership,
    resources,
    uploaded,
    uploads,
)
from gigaudit_server.observability import tracing
from gigaudit_server.queue import schemas
from gigaudit_server.queue.jobs import JobExistsError, JobState
from gigaudit_server.storage import settlement

MAX_INPUT_SIZE = 4096
MAX_NUM_CLASSES = 1_000_000
LAYERS_WAIT_S = 10.0  # how long ListLayers of an architecture waits for a worker's list_layers job
NOT_A_SOURCE = "its output is the model's logits: no layer follows it to attribute to"
_METHOD = "/gigaudit.v1.ModelService/UploadModel"
# what a worker needs to build the model (the record minus bookkeeping)
MODEL_FIELDS = ("name", "architecture", "num_classes", "class_names", "input_size", "mean", "std", "weights_sha256")


class ModelServicer(model_grpc.ModelServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def UploadModel(self, request_iterator, context):
        """Check the header, store the weights (format-checked on the way), register the model CREATING and queue
        its ``validate_model`` job; returns that operation at once. A retry of the same upload returns it again
        without reading the stream; the same request id with another upload is ALREADY_EXISTS."""
        header, chunks = uploads.split_upload(request_iterator)
        model_id = names.check_id("header.model_id", header.model_id)
        self._check_header(header)
        spec = header.model

        def make_record(size: int) -> dict:
            return {"name": f"models/{model_id}", "display_name": spec.display_name,
                    "architecture": spec.architecture, "num_classes": spec.num_classes,
                    "class_names": list(spec.class_names), "input_size": spec.input_size, "mean": list(spec.mean),
                    "std": list(spec.std), "weights_sha256": spec.sha256, "size_bytes": size, "state": "CREATING",
                    "operation": "", "layers": [], "default_layers": []}

        def queue_validation(record: dict) -> dict:
            params = schemas.to_params(schemas.ValidateModel(
                model_id=model_id, model=schemas.ModelSpec(**{k: record[k] for k in MODEL_FIELDS})))
            job = self.backend.queue.submit("validate_model", params, owner=ownership.owner(),
                                            request_id=f"{_METHOD}|{header.request_id}" if header.request_id else None,
                                            trace=tracing.current_traceparent())
            self.backend.catalog.add_user("models", model_id, job.id)
            return self.backend.catalog.update("models", model_id, operation=job.id)

        def work() -> str:
            store = lambda: uploaded.store(self.backend, "models", uploads.checked_safetensors(  # noqa: E731
                chunks, spec.size_bytes), spec.sha256, spec.size_bytes, self.backend.settings.max_model_bytes)[1]
            record = lifecycle.register_upload(self.backend, "models", model_id, spec.sha256, store, make_record,
                                               after=queue_validation)
            return record["operation"]

        def replay(job_id: str):
            """The first upload's operation; when its model was deleted since (or its id registered again), the
            request runs anew."""
            try:
                record = self.backend.catalog.get("models", model_id)
            except KeyError:
                record = None
            job = operations.job_of(self.backend, job_id)
            failed = job.finished and job.state.value != "SUCCEEDED"
            if not failed and (record is None or record.get("operation") != job_id):
                raise idempotency.Gone(model_id)
            return operations.to_operation(self.backend, job)

        return self.backend.idempotency.once(ownership.owner(), _METHOD, header.request_id,
                                             idempotency.fingerprint(header), work, replay)

    @errors.handle_errors
    def GetModel(self, request, context):
        return resources.model_message(self._get(names.model("name", request.name), request.name))

    @errors.handle_errors
    def ListModels(self, request, context):
        records, token = self.backend.catalog.list("models", page_size=request.page_size,
                                                   page_token=request.page_token)
        models = []
        for record in records:
            try:
                models.append(resources.model_message(settlement.model(self.backend, record["name"][7:])))
            except KeyError:  # its validation failed: removed
                continue
        return model_pb.ListModelsResponse(models=models, next_page_token=token)

    @errors.handle_errors
    def DeleteModel(self, request, context):
        lifecycle.delete(self.backend, "models", names.model("name", request.name), force=request.force)
        return empty_pb2.Empty()

    @errors.handle_errors
    def ListLayers(self, request, context):
        """The layers of a model (``parent``), or of an ``architecture`` with ``num_classes`` outputs built with
        random weights: listed by a worker in a short ``list_layers`` job and cached (``architecture_layers``)."""
        if not request.parent:
            return layers_response(self._architecture_layers(request.architecture, request.num_classes, context))
        if request.architecture or request.num_classes:
            raise errors.invalid_argument({"architecture": "give either parent (a model) or architecture and "
                                                           "num_classes, not both"})
        record = self._get(names.model("parent", request.parent), request.parent)
        if record.get("state", "ACTIVE") != "ACTIVE":
            raise errors.failed_precondition(request.parent, f"the model is {record['state']}: its layers are known "
                                             f"once its weights are checked (operations/{record['operation']})")
        return layers_response(record)

    @errors.handle_errors
    def ListArchitectures(self, request, context):
        descriptions = self.backend.catalog.architecture_descriptions()
        return model_pb.ListArchitecturesResponse(architectures=[
            model_pb.Architecture(name=n, description=descriptions.get(n, ""))
            for n in self.backend.catalog.architectures()])

    def _architecture_layers(self, architecture: str, num_classes: int, context) -> dict:
        """The cached listing, else the result of a ``list_layers`` job waited for up to ``LAYERS_WAIT_S``."""
        known = self.backend.catalog.architectures()
        problems = {}
        if not architecture:
            problems["architecture"] = "name an architecture (see ListArchitectures), or give parent (a model)"
        elif known and architecture not in known:
            problems["architecture"] = f"unknown architecture {architecture!r}; see ListArchitectures"
        if not 1 <= num_classes <= MAX_NUM_CLASSES:
            problems["num_classes"] = f"must be between 1 and {MAX_NUM_CLASSES}"
        if problems:
            raise errors.invalid_argument(problems)
        if not known:
            raise _no_worker("no worker has registered yet: start one (python -m gigaudit_server worker)")
        cached = self.backend.catalog.architecture_layers(architecture, num_classes)
        if cached is not None:
            return cached
        # one job per (architecture, num_classes): concurrent callers wait on the same one
        job_id = "layers-" + re.sub(r"[^A-Za-z0-9_-]", "_", architecture)[:100] + f"-{num_classes}"
        params = schemas.to_params(schemas.ListLayers(architecture=architecture, num_classes=num_classes))
        try:
            self.backend.queue.submit("list_layers", params, job_id=job_id, listed=False)
        except JobExistsError:
            pass
        wait = LAYERS_WAIT_S
        if context is not None and context.time_remaining() is not None:
            wait = max(0.0, min(wait, context.time_remaining() - 0.5))
        try:
            job = self.backend.queue.wait(job_id, wait)
        except KeyError:  # finished, cached and deleted by a concurrent call
            job = None
        cached = self.backend.catalog.architecture_layers(architecture, num_classes)
        if job is not None and job.state is JobState.SUCCEEDED and cached is None:
            cached = job.result
            self.backend.catalog.cache_architecture_layers(architecture, num_classes, cached)
        if job is not None and job.finished:
            self.backend.queue.delete(job_id)
        if cached is not None:
            return cached
        if job is not None and job.state is JobState.FAILED:
            raise errors.failed_precondition(f"architecture {architecture!r}", "its layers cannot be listed: "
                                             + (job.error or {}).get("message", "the worker's job failed"))
        raise _no_worker(f"no worker listed the layers of {architecture!r} within {wait:g} s (every worker may be "
                         "busy with other jobs); the request stays queued and its answer is kept: try again shortly")

    # ------------------------------------------------------------------ helpers
    def _get(self, model_id: str, name: str) -> dict:
        try:
            return settlement.model(self.backend, model_id)
        except KeyError:
            raise errors.not_found("model", name) from None

    def _check_header(self, header) -> None:
        spec, problems = header.model, {}
        known = self.backend.catalog.architectures()
        if not spec.architecture or (known and spec.architecture not in known):
            problems["header.model.architecture"] = _unknown_architecture(spec.architecture, known)
        if spec.num_classes < 1:
            problems["header.model.num_classes"] = "must be at least 1"
        if spec.class_names and len(spec.class_names) != spec.num_classes:
            problems["header.model.class_names"] = f"{len(spec.class_names)} names for {spec.num_classes} classes"
        if not 1 <= spec.input_size <= MAX_INPUT_SIZE:
            problems["header.model.input_size"] = f"must be between 1 and {MAX_INPUT_SIZE} pixels"
        for field in ("mean", "std"):
            values = list(getattr(spec, field))
            if len(values) != 3 or (field == "std" and min(values) <= 0):
                problems[f"header.model.{field}"] = "needs 3 values (RGB)" + (", all positive" if field == "std" else "")
        if not uploaded.SHA256.fullmatch(spec.sha256):
            problems["header.model.sha256"] = "must be 64 lowercase hex digits"
        if spec.size_bytes < 1:
            problems["header.model.size_bytes"] = "must be the positive size of the weights file"
        if problems:
            raise errors.invalid_argument(problems)
        if spec.size_bytes > self.backend.settings.max_model_bytes:
            raise errors.resource_exhausted("header.model.size_bytes", f"{spec.size_bytes} bytes exceed the limit of "
                                            f"{self.backend.settings.max_model_bytes} bytes per model")


def layers_response(listing: dict) -> model_pb.ListLayersResponse:
    """A ListLayersResponse of a layer listing (a model record's, or a ``list_layers`` result). A cut that can be
    no analysed layer (``can_be_source`` false: the classifier) is reported as not analysable, with the reason."""
    default = list(listing.get("default_layers") or [])
    response = model_pb.ListLayersResponse(default_layers=default)
    for layer in listing.get("layers") or []:
        message = json_format.ParseDict(layer, response.layers.add(), ignore_unknown_fields=True)
        message.is_default = layer["name"] in default
        if layer.get("is_cut") and layer.get("can_be_source") is False:
            message.is_cut, message.reason = False, NOT_A_SOURCE
    return response


def _no_worker(message: str) -> errors.ApiError:
    return errors.unavailable(message, "NO_WORKER")


def _unknown_architecture(name: str, known: list[str]) -> str:
    """Unknown ``name``: the closest known names (edit distance), and where to find them all."""
    if not known:
        return f"unknown architecture {name!r}; no worker has registered any yet (is a worker running?)"
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listed = ", ".join(known[:8]) + (", …" if len(known) > 8 else "")
    return f"unknown architecture {name!r}; {hint}{len(known)} are known ({listed}; ListArchitectures lists all)"
