"""ModelService: upload (safetensors only, validated by a worker before registration), get, list, delete, layers."""
from __future__ import annotations

import grpc
from google.protobuf import empty_pb2, json_format

from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit_server.api import errors
from gigaudit_server.api import names, resources, uploaded, uploads
from gigaudit_server.queue.jobs import JobState

MAX_INPUT_SIZE = 4096


class ModelServicer(model_grpc.ModelServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def UploadModel(self, request_iterator, context):
        header, chunks = uploads.split_upload(request_iterator)
        model_id = names.check_id("header.model_id", header.model_id)
        self._check_header(header)
        # a retry of a finished upload returns the model without reading the weights again
        if (existing := uploaded.retried(self.backend, "models", model_id, header.request_id)) is not None:
            return resources.model_message(existing)
        spec = header.model
        sha, size = uploaded.store(self.backend, "models", uploads.checked_safetensors(chunks, spec.size_bytes),
                                   spec.sha256, spec.size_bytes, self.backend.settings.max_model_bytes)
        record = {"name": f"models/{model_id}", "display_name": spec.display_name, "architecture": spec.architecture,
                  "num_classes": spec.num_classes, "class_names": list(spec.class_names),
                  "input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std),
                  "weights_sha256": sha, "size_bytes": size, "request_id": header.request_id}
        with uploaded.registering(self.backend, "models", model_id, sha):
            layers = self._validate(record)
            record, _ = self.backend.catalog.create("models", model_id, {**record, **layers},
                                                    request_id=header.request_id)
        return resources.model_message(record)

    @errors.handle_errors
    def GetModel(self, request, context):
        return resources.model_message(uploaded.get(self.backend, "models", names.model("name", request.name),
                                                    request.name))

    @errors.handle_errors
    def ListModels(self, request, context):
        records, token = self.backend.catalog.list("models", page_size=request.page_size,
                                                   page_token=request.page_token)
        return model_pb.ListModelsResponse(models=[resources.model_message(r) for r in records],
                                           next_page_token=token)

    @errors.handle_errors
    def DeleteModel(self, request, context):
        uploaded.delete(self.backend, "models", names.model("name", request.name), request.name)
        return empty_pb2.Empty()

    @errors.handle_errors
    def ListLayers(self, request, context):
        record = uploaded.get(self.backend, "models", names.model("parent", request.parent), request.parent)
        response = model_pb.ListLayersResponse(default_layers=record["default_layers"])
        for layer in record["layers"]:
            message = json_format.ParseDict(layer, response.layers.add(), ignore_unknown_fields=True)
            message.is_default = layer["name"] in record["default_layers"]
        return response

    @errors.handle_errors
    def ListArchitectures(self, request, context):
        return model_pb.ListArchitecturesResponse(
            architectures=[model_pb.Architecture(name=n) for n in self.backend.catalog.architectures()])

    # ------------------------------------------------------------------ helpers
    def _check_header(self, header) -> None:
        spec, problems = header.model, {}
        known = self.backend.catalog.architectures()
        if not spec.architecture or (known and spec.architecture not in known):
            problems["header.model.architecture"] = (f"unknown architecture {spec.architecture!r}; valid: "
                                                     f"{', '.join(known) or '(no worker has registered any yet)'}")
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

    def _validate(self, record: dict) -> dict:
        """Run a ``validate_model`` job and wait for it: ``{layers, default_layers}`` or an error status."""
        settings, queue = self.backend.settings, self.backend.queue
        job = queue.submit("validate_model", {"model": {k: v for k, v in record.items() if k != "request_id"}})
        job = queue.wait(job.id, settings.validate_timeout_s)
        if job.state is JobState.SUCCEEDED:
            queue.delete(job.id)
            return {"layers": job.result["layers"], "default_layers": job.result["default_layers"]}
        if not job.finished:
            queue.cancel(job.id)
            raise errors.ApiError(grpc.StatusCode.UNAVAILABLE,
                                  f"no worker validated the weights within {settings.validate_timeout_s:g} s; "
                                  "is a worker running? nothing was registered")
        queue.delete(job.id)
        error = job.error or {}
        if error.get("code") == "INVALID_ARGUMENT":
            raise errors.invalid_argument({"chunk": error.get("message", "")}, error.get("message"))
        raise errors.ApiError(grpc.StatusCode.INTERNAL, f"validating the weights failed: {error.get('message')}")
