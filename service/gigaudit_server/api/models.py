"""ModelService: upload (the architecture's weights format, checked on the way; a worker checks the weights against
the architecture in an operation), get, list, delete, layers, architectures."""
from __future__ import annotations

import difflib
import hashlib
import json
import math
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
MODEL_FIELDS = ("name", "architecture", "num_classes", "class_names", "input_size", "mean", "std", "weights_sha256",
                "architecture_options", "preprocessing", "tracer")
FAMILIES = ("torchvision", "gigaudit", "timm", "huggingface", "onnx", "plugin")  # worker.architectures.FAMILIES
OWN_CONFIG_FAMILIES = ("timm", "huggingface", "onnx")  # their models say their input size (input_size may be 0)
MAX_OPTIONS = 32
MAX_TRACER_NAMES = 64
MAX_NAME_CHARS = 200


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
        detail = self._check_header(header)
        spec = header.model
        options, tracer = architecture_options(spec.architecture_options), tracer_spec(spec.tracer)

        def make_record(size: int) -> dict:
            return {"name": f"models/{model_id}", "display_name": spec.display_name,
                    "architecture": spec.architecture, "num_classes": spec.num_classes,
                    "class_names": list(spec.class_names), "input_size": spec.input_size, "mean": list(spec.mean),
                    "std": list(spec.std), "weights_sha256": spec.sha256, "size_bytes": size, "state": "CREATING",
                    "operation": "", "layers": [], "default_layers": [], "architecture_options": options,
                    "preprocessing": resources.preprocessing_spec(spec.preprocessing), "tracer": tracer,
                    "family": detail.get("family", "")}

        def queue_validation(record: dict) -> dict:
            params = schemas.to_params(schemas.ValidateModel(
                model_id=model_id, model=schemas.ModelSpec(**{k: record[k] for k in MODEL_FIELDS})))
            job = self.backend.queue.submit("validate_model", params, owner=ownership.owner(),
                                            request_id=f"{_METHOD}|{header.request_id}" if header.request_id else None,
                                            trace=tracing.current_traceparent())
            self.backend.catalog.add_user("models", model_id, job.id)
            return self.backend.catalog.update("models", model_id, operation=job.id)

        def work() -> str:
            checked = uploads.checked_weights(detail.get("weights_format") or "safetensors", chunks, spec.size_bytes)
            store = lambda: uploaded.store(self.backend, "models", checked, spec.sha256,  # noqa: E731
                                           spec.size_bytes, self.backend.settings.max_model_bytes)[1]
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
        models, token = resources.settled_page(self.backend, "models", settlement.model, resources.model_message,
                                               request)
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
            return layers_response(self._architecture_layers(request.architecture, request.num_classes, context,
                                                             request.architecture_options, request.tracer))
        if request.architecture or request.num_classes or request.architecture_options.fields \
                or request.HasField("tracer"):
            raise errors.invalid_argument({"architecture": "give either parent (a model) or architecture and "
                                                           "num_classes (and options), not both"})
        record = self._get(names.model("parent", request.parent), request.parent)
        if record.get("state", "ACTIVE") != "ACTIVE":
            raise errors.failed_precondition(request.parent, f"the model is {record['state']}: its layers are known "
                                             f"once its weights are checked (operations/{record['operation']})")
        return layers_response(record)

    @errors.handle_errors
    def ListArchitectures(self, request, context):
        """Every architecture the workers published, or those of one ``family``, with where each comes from."""
        if request.family and request.family not in FAMILIES:
            raise errors.invalid_argument({"family": f"unknown family {request.family!r}; valid families are: "
                                                     f"{', '.join(FAMILIES)}"})
        descriptions = self.backend.catalog.architecture_descriptions()
        details = self.backend.catalog.architecture_details()
        listed = []
        for name in self.backend.catalog.architectures():
            detail = details.get(name, {})
            if request.family and detail.get("family") != request.family:
                continue
            listed.append(model_pb.Architecture(
                name=name, description=detail.get("description") or descriptions.get(name, ""),
                family=detail.get("family", ""), source=detail.get("source", ""),
                weights_format=detail.get("weights_format", "")))
        return model_pb.ListArchitecturesResponse(architectures=listed)

    def _architecture_layers(self, architecture: str, num_classes: int, context, options_struct=None,
                             tracer_message=None) -> dict:
        """The cached listing, else the result of a ``list_layers`` job waited for up to ``LAYERS_WAIT_S``."""
        known = self.backend.catalog.architectures()
        problems = {}
        options, tracer = {}, {}
        try:
            options = architecture_options(options_struct) if options_struct is not None else {}
        except ValueError as exc:
            problems["architecture_options"] = str(exc)
        try:
            tracer = tracer_spec(tracer_message) if tracer_message is not None else {}
        except ValueError as exc:
            problems["tracer"] = str(exc)
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
        # the listing of an architecture built with options is cached and listed under its own key
        variant = "" if not (options or any(tracer.values())) else "-" + hashlib.sha256(json.dumps(
            [options, tracer], sort_keys=True).encode()).hexdigest()[:16]
        key = architecture + variant
        cached = self.backend.catalog.architecture_layers(key, num_classes)
        if cached is not None:
            return cached
        # one job per (architecture, options, num_classes): concurrent callers wait on the same one
        job_id = "layers-" + re.sub(r"[^A-Za-z0-9_-]", "_", architecture)[:100] + f"{variant}-{num_classes}"
        params = schemas.to_params(schemas.ListLayers(architecture=architecture, num_classes=num_classes,
                                                      architecture_options=options, tracer=tracer))
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
        cached = self.backend.catalog.architecture_layers(key, num_classes)
        if job is not None and job.state is JobState.SUCCEEDED and cached is None:
            cached = job.result
            self.backend.catalog.cache_architecture_layers(key, num_classes, cached)
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

    def _check_header(self, header) -> dict:
        """INVALID_ARGUMENT listing every bad field of the header; returns the architecture's published details."""
        spec, problems = header.model, {}
        known = self.backend.catalog.architectures()
        if not spec.architecture or (known and spec.architecture not in known):
            problems["header.model.architecture"] = _unknown_architecture(spec.architecture, known)
        detail = (self.backend.catalog.architecture_detail(spec.architecture) if spec.architecture else None) or {}
        if spec.num_classes < 1:
            problems["header.model.num_classes"] = "must be at least 1"
        if spec.class_names and len(spec.class_names) != spec.num_classes:
            problems["header.model.class_names"] = f"{len(spec.class_names)} names for {spec.num_classes} classes"
        sized = spec.preprocessing.height > 0 and spec.preprocessing.width > 0
        if spec.input_size == 0 and not sized and detail.get("family") not in OWN_CONFIG_FAMILIES:
            problems["header.model.input_size"] = (
                f"give input_size (1 to {MAX_INPUT_SIZE} pixels) or preprocessing height and width: only "
                f"{', '.join(OWN_CONFIG_FAMILIES)} models say their own input size")
        elif not 0 <= spec.input_size <= MAX_INPUT_SIZE:
            problems["header.model.input_size"] = f"must be between 1 and {MAX_INPUT_SIZE} pixels (0: from preprocessing)"
        for field in ("mean", "std"):
            problem = _rgb_problem(list(getattr(spec, field)), positive=field == "std")
            if problem:
                problems[f"header.model.{field}"] = problem
        problems.update(_preprocessing_problems(spec.preprocessing, "header.model.preprocessing"))
        for field, check in (("architecture_options", architecture_options), ("tracer", tracer_spec)):
            try:
                check(getattr(spec, field))
            except ValueError as exc:
                problems[f"header.model.{field}"] = str(exc)
        if not uploaded.SHA256.fullmatch(spec.sha256):
            problems["header.model.sha256"] = "must be 64 lowercase hex digits"
        if spec.size_bytes < 1:
            problems["header.model.size_bytes"] = "must be the positive size of the weights file"
        if problems:
            raise errors.invalid_argument(problems)
        if spec.size_bytes > self.backend.settings.max_model_bytes:
            raise errors.resource_exhausted("header.model.size_bytes", f"{spec.size_bytes} bytes exceed the limit of "
                                            f"{self.backend.settings.max_model_bytes} bytes per model")
        return detail


def architecture_options(struct) -> dict:
    """The builder options of a ``google.protobuf.Struct``: at most ``MAX_OPTIONS`` keys, each a keyword name with a
    JSON number, string, boolean or a list of them (whole numbers become ints); ``ValueError`` otherwise."""
    options = json_format.MessageToDict(struct) if struct is not None else {}
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"{len(options)} keys, more than the limit of {MAX_OPTIONS}")
    checked = {}
    for key, value in options.items():
        if not key.isidentifier() or len(key) > 64:
            raise ValueError(f"{key[:80]!r} is not a keyword argument name")
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, (str, bool, int, float)) for v in values):
            raise ValueError(f"{key!r} must be a number, string, boolean or a list of them (not objects or null)")
        if any(isinstance(v, float) and not math.isfinite(v) for v in values) \
                or any(isinstance(v, str) and len(v) > MAX_NAME_CHARS for v in values) or len(values) > 64:
            raise ValueError(f"{key!r} has a value out of bounds (finite numbers, strings up to {MAX_NAME_CHARS} "
                             "characters, lists up to 64 values)")
        whole = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        checked[key] = whole if isinstance(value, list) else whole[0]
    return checked


def tracer_spec(message) -> dict:
    """The ``TracerSpec`` dict of a TracerOptions message; ``ValueError`` for lists too long or bad names."""
    spec = {}
    for field in ("leaf_modules", "autowrap_functions", "hooked_layers"):
        values = list(getattr(message, field)) if message is not None else []
        if len(values) > MAX_TRACER_NAMES:
            raise ValueError(f"{field} lists {len(values)} names, more than the limit of {MAX_TRACER_NAMES}")
        bad = [v for v in values if not v or len(v) > MAX_NAME_CHARS or not v.isprintable() or " " in v]
        if bad:
            raise ValueError(f"{field} holds bad names {[b[:40] for b in bad[:3]]} (non-empty, at most "
                             f"{MAX_NAME_CHARS} printable characters, no spaces)")
        if len(set(values)) != len(values):
            raise ValueError(f"{field} lists a name twice")
        spec[field] = values
    return spec


def _rgb_problem(values: list[float], positive: bool) -> str | None:
    if not values:
        return None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        return "needs 3 finite values (RGB), or none (then from the model's configuration or ImageNet's)"
    if positive and min(values) <= 0:
        return "needs 3 positive values (RGB), or none"
    return None


def _preprocessing_problems(message, prefix: str) -> dict[str, str]:
    problems = {}
    for field in ("height", "width"):
        if not 0 <= getattr(message, field) <= MAX_INPUT_SIZE:
            problems[f"{prefix}.{field}"] = f"must be between 1 and {MAX_INPUT_SIZE} pixels (0: unset)"
    if (message.height > 0) != (message.width > 0):
        problems[f"{prefix}.height"] = "give height and width together (or neither)"
    if not (0 <= message.crop_pct <= 1):  # NaN fails too
        problems[f"{prefix}.crop_pct"] = "must be in (0, 1] (0: unset)"
    for field, enum in (("resize_mode", model_pb.ResizeMode), ("interpolation", model_pb.Interpolation)):
        if getattr(message, field) not in enum.values():
            problems[f"{prefix}.{field}"] = f"unknown value {getattr(message, field)}; valid: {', '.join(enum.keys())}"
    for field in ("mean", "std"):
        problem = _rgb_problem(list(getattr(message, field)), positive=field == "std")
        if problem:
            problems[f"{prefix}.{field}"] = problem
    return problems


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
