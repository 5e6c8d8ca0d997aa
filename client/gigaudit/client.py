"""`AuditClient`: the thin gRPC client of the gigaudit service (no torch).

Uploads stream the file once, in chunks after a header carrying its size and sha256; the stream is sent again (with
the same `request_id`, so the server never registers twice) only when the transport failed before the server
answered. Long work returns an operation: `wait` follows it (with a progress bar) and re-attaches when the stream
breaks; a model upload waits on its validation operation. Every failure is a `GigauditError` carrying the server's
status code, message and details.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator, Sequence

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc

from gigaudit import convert, explanations
from gigaudit.errors import GigauditError
from gigaudit.progress import OperationProgress
from gigaudit.results import ConceptGraph, Exemplar
from gigaudit.v1 import admin_service_pb2 as admin_pb
from gigaudit.v1 import admin_service_pb2_grpc as admin_grpc
from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit.v1 import dataset_service_pb2 as dataset_pb
from gigaudit.v1 import dataset_service_pb2_grpc as dataset_grpc
from gigaudit.v1 import model_service_pb2 as model_pb
from gigaudit.v1 import model_service_pb2_grpc as model_grpc
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb
from gigaudit.v1 import probe_service_pb2 as probe_pb
from gigaudit.v1 import probe_service_pb2_grpc as probe_grpc

CHUNK_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 64 << 20
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED)
HF_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
DATASET_FORMATS = {".zip": dataset_pb.DATASET_FORMAT_ZIP, ".tar": dataset_pb.DATASET_FORMAT_TAR,
                   ".tgz": dataset_pb.DATASET_FORMAT_TAR, ".gz": dataset_pb.DATASET_FORMAT_TAR,
                   ".parquet": dataset_pb.DATASET_FORMAT_PARQUET}
DATASET_URI_SCHEMES = ("s3://", "gs://", "hf://", "file://")  # what register_dataset reads in place
HF_DATASET_FILES = ("dataset_info.json", "state.json")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class AuditClient:
    """A connection to a gigaudit server.

    `tls`: None for plain text, True for TLS with the system's roots, a path to a CA bundle (PEM), or
    `grpc.ChannelCredentials`. `token` is sent as `authorization: Bearer <token>`. `timeout` is the deadline of
    each unary call in seconds; uploads get `upload_timeout`.
    """

    def __init__(self, target: str, token: str | None = None, tls=None, *, timeout: float = 60.0,
                 upload_timeout: float = 3600.0, retries: int = 3):
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if tls is None or tls is False:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, _credentials(tls), options=options)
        self.target, self.timeout, self.upload_timeout, self.retries = target, timeout, upload_timeout, retries
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.models = model_grpc.ModelServiceStub(self.channel)
        self.datasets = dataset_grpc.DatasetServiceStub(self.channel)
        self.audits = audit_grpc.AuditServiceStub(self.channel)
        self.operations = operations_pb2_grpc.OperationsStub(self.channel)
        self.probes = probe_grpc.ProbeServiceStub(self.channel)
        self.admin = admin_grpc.AdminServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "AuditClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 5.0, *, fail_fast: bool = False) -> None:
        """Block until the channel connects, at most `timeout` seconds; GigauditError(UNAVAILABLE) otherwise.
        `fail_fast`: give up at the first failed connection attempt (a refused port) rather than retrying."""
        ready, failed = threading.Event(), threading.Event()

        def watch(state: grpc.ChannelConnectivity) -> None:
            if state == grpc.ChannelConnectivity.READY:
                ready.set()
            elif state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                failed.set()

        self.channel.subscribe(watch, try_to_connect=True)
        try:
            deadline = time.monotonic() + timeout
            while not ready.is_set() and time.monotonic() < deadline:
                if fail_fast and failed.is_set():
                    raise GigauditError(grpc.StatusCode.UNAVAILABLE,
                                        f"no gigaudit server at {self.target} (connection failed)")
                ready.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            if not ready.is_set():
                raise GigauditError(grpc.StatusCode.UNAVAILABLE, f"no gigaudit server at {self.target} (no "
                                    f"connection within {timeout:g} s; --connect-timeout to wait longer)")
        finally:
            self.channel.unsubscribe(watch)

    # --- calls -------------------------------------------------------------------------------
    def _call(self, method, request, *, timeout: float | None = None, retry: bool = True):
        """One call with the deadline and credentials; retried on transient codes when `retry` (safe calls)."""
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                if attempt + 1 < attempts and exc.code() in RETRYABLE:
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise GigauditError.from_rpc_error(exc) from None

    # --- models ------------------------------------------------------------------------------
    def upload_model(self, path: str | Path, model_id: str, *, architecture: str, num_classes: int,
                     class_names: Sequence[str] = (), input_size: int = 0, mean: Sequence[float] = (),
                     std: Sequence[float] = (), preprocessing: model_pb.Preprocessing | None = None,
                     architecture_options: dict | None = None, tracer: model_pb.TracerOptions | None = None,
                     display_name: str = "", request_id: str | None = None, progress: bool = False,
                     wait: bool = True, timeout: float | None = None):
        """Upload weights as `models/{model_id}`; with `wait`, return the `Model` once a worker has checked the
        weights (ACTIVE), else the operation that checks them.

        The file is the architecture's `weights_format` (ListArchitectures): safetensors; for `huggingface` a tar
        or zip of config.json and model.safetensors (a folder is packed for you); for `onnx` the .onnx file.
        `preprocessing` fields left unset come from the model's own configuration (timm, Hugging Face, ONNX),
        else `input_size`/`mean`/`std`; `architecture_options` are the builder's keyword arguments (timm, plugins);
        `tracer` helps with models torch.fx cannot trace (leaf modules, hooked layers).

        A failed check raises GigauditError (the model is removed); `timeout` (seconds of waiting for the check)
        raises GigauditError(DEADLINE_EXCEEDED) and leaves the check running: call `wait(op)` or upload again with
        the same `request_id` (the server answers with the same operation; nothing is registered twice)."""
        with _model_file(Path(path)) as path:
            size, sha = _file_digest(path)
            model = model_pb.Model(display_name=display_name or model_id, architecture=architecture,
                                   num_classes=num_classes, class_names=list(class_names), input_size=input_size,
                                   mean=list(mean), std=list(std), size_bytes=size, sha256=sha,
                                   preprocessing=preprocessing, tracer=tracer)
            model.architecture_options.update(architecture_options or {})
            header = model_pb.UploadModelHeader(model_id=model_id, model=model,
                                                request_id=request_id or _request_id())
            op = self._upload(self.models.UploadModel, _upload_stream(
                model_pb.UploadModelRequest, header, path, progress, f"upload {path.name}"))
        if not wait:
            return op
        model = self.wait(op.name, timeout=timeout, progress=progress)
        return model if isinstance(model, model_pb.Model) else self.get_model(model_id)

    def get_model(self, name: str) -> model_pb.Model:
        return self._call(self.models.GetModel, model_pb.GetModelRequest(name=_named("models", name)))

    def list_models(self, page_size: int = 100) -> list[model_pb.Model]:
        return self._pages(self.models.ListModels, model_pb.ListModelsRequest(page_size=page_size), "models")

    def delete_model(self, name: str, force: bool = False) -> None:
        """Delete a model; `force` also deletes its concept sets and graphs and cancels its operations."""
        self._call(self.models.DeleteModel, model_pb.DeleteModelRequest(name=_named("models", name), force=force))

    def list_layers(self, model: str | None = None, *, architecture: str = "", num_classes: int = 0,
                    architecture_options: dict | None = None,
                    tracer: model_pb.TracerOptions | None = None) -> model_pb.ListLayersResponse:
        """The layers of a registered model, or of `architecture` with `num_classes` (and the builder's options)
        before any upload (name, type, whether it is an analysable cut and why not, whether it is a default)."""
        if model:
            request = model_pb.ListLayersRequest(parent=_named("models", model))
        elif architecture and num_classes > 0:
            request = model_pb.ListLayersRequest(architecture=architecture, num_classes=num_classes, tracer=tracer)
            request.architecture_options.update(architecture_options or {})
        else:
            raise ValueError("list_layers needs a model, or an architecture and a positive num_classes")
        return self._call(self.models.ListLayers, request)

    def list_architectures(self, family: str = "") -> list[model_pb.Architecture]:
        """Every architecture the workers can build (of one `family`: torchvision, gigaudit, timm, huggingface,
        onnx, plugin), with where it comes from and the weights file it takes."""
        return list(self._call(self.models.ListArchitectures,
                               model_pb.ListArchitecturesRequest(family=family)).architectures)

    # --- datasets ----------------------------------------------------------------------------
    def upload_dataset(self, path: str | Path, dataset_id: str, *, display_name: str = "", image_column: str = "",
                       label_column: str = "", request_id: str | None = None,
                       progress: bool = False) -> dataset_pb.Dataset:
        """Upload a dataset: a tar/zip archive (ImageFolder, a WebDataset shard, a saved Hugging Face dataset), a
        .parquet file, or a folder, packed into a tar: images (`class/image.png`, or flat = unlabelled), a Hugging
        Face dataset saved with `save_to_disk`, or WebDataset shards (their members in one tar). The server detects
        the format from the content; `image_column`/`label_column` name the columns of parquet and Hugging Face
        data (empty: found by name). A CSV/JSONL manifest of image URIs is registered by URI
        (`register_dataset`)."""
        with _archive(Path(path)) as (archive, fmt):
            size, sha = _file_digest(archive)
            dataset = dataset_pb.Dataset(display_name=display_name or dataset_id, format=fmt, size_bytes=size,
                                         sha256=sha, image_column=image_column, label_column=label_column)
            header = dataset_pb.UploadDatasetHeader(dataset_id=dataset_id, dataset=dataset,
                                                    request_id=request_id or _request_id())
            return self._upload(self.datasets.UploadDataset, _upload_stream(
                dataset_pb.UploadDatasetRequest, header, archive, progress, f"upload {Path(path).name}"))

    def register_dataset(self, uri: str, dataset_id: str, *, display_name: str = "", image_column: str = "",
                         label_column: str = "", sha256: str = "", request_id: str | None = None,
                         wait: bool = True, timeout: float | None = None, progress: bool = False):
        """Register the dataset at `uri` (s3://, gs://, hf://, file://, on the server's allow-list: a file, or a
        folder of WebDataset shards, parquet files or a saved Hugging Face dataset; or a CSV/JSONL manifest of
        image URIs), read where it is by the workers, never copied. With `wait`, return the `Dataset` once a worker
        has inspected it (ACTIVE), else the operation that inspects it. A failed inspection raises GigauditError
        (nothing stays registered); `timeout` raises GigauditError(DEADLINE_EXCEEDED) and leaves it running."""
        if not uri.startswith(DATASET_URI_SCHEMES):
            raise ValueError(f"a dataset URI starts with {', '.join(DATASET_URI_SCHEMES)}, not {uri!r}")
        request = dataset_pb.RegisterDatasetRequest(
            dataset_id=dataset_id, request_id=request_id or _request_id(),
            dataset=dataset_pb.Dataset(uri=uri, display_name=display_name or dataset_id, sha256=sha256,
                                       image_column=image_column, label_column=label_column))
        op = self._call(self.datasets.RegisterDataset, request)
        return self.wait(op.name, timeout=timeout, progress=progress) if wait else op

    def get_dataset(self, name: str) -> dataset_pb.Dataset:
        return self._call(self.datasets.GetDataset, dataset_pb.GetDatasetRequest(name=_named("datasets", name)))

    def list_datasets(self, page_size: int = 100) -> list[dataset_pb.Dataset]:
        return self._pages(self.datasets.ListDatasets, dataset_pb.ListDatasetsRequest(page_size=page_size),
                           "datasets")

    def delete_dataset(self, name: str, force: bool = False) -> None:
        """Delete a dataset; `force` also deletes what was made from it and cancels the operations using it."""
        self._call(self.datasets.DeleteDataset,
                   dataset_pb.DeleteDatasetRequest(name=_named("datasets", name), force=force))

    # --- audits and operations ----------------------------------------------------------------
    def audit(self, model: str, dataset: str, audit_id: str, *, layers: Sequence[str] = (),
              concept_options: dict | None = None, graph_options: dict | None = None,
              metrics: Sequence[str] = (), evaluation_images: int = 0, probes: str = "",
              request_id: str | None = None) -> operations_pb2.Operation:
        """Start an audit (concepts + graph + evidence); returns the operation. Retries keep the request id.

        `metrics`: evaluation metrics (empty: gig.evaluate's default set; add "stability" and "sanity" for those
        checks); `evaluation_images`: images evaluated (0: gig.evaluate's default, 16); `probes`: a dataset of
        probe images (one folder per named concept) that names the concepts."""
        request = audit_pb.AuditRequest(
            parent=_named("models", model), audit_id=audit_id, dataset=_named("datasets", dataset),
            layers=list(layers), concept_options=audit_pb.ConceptOptions(**(concept_options or {})),
            graph_options=audit_pb.GraphOptions(**(graph_options or {})), request_id=request_id or _request_id(),
            metrics=list(metrics), evaluation_images=evaluation_images,
            probes=_named("datasets", probes) if probes else "")
        return self._call(self.audits.Audit, request)

    def probe(self, sleep: float = 0.0, request_id: str | None = None) -> operations_pb2.Operation:
        """Queue a job that only sleeps on a worker: an end-to-end check of queue and workers."""
        request = probe_pb.SubmitProbeRequest(request_id=request_id or _request_id())
        request.sleep.FromTimedelta(timedelta(seconds=sleep))
        return self._call(self.probes.SubmitProbe, request)

    def get_operation(self, name: str) -> operations_pb2.Operation:
        return self._call(self.operations.GetOperation,
                          operations_pb2.GetOperationRequest(name=_named("operations", name)))

    def list_operations(self, filter: str = "", page_size: int = 100, *, state: str | None = None,
                        owner: str | None = None) -> list[operations_pb2.Operation]:
        """Operations, narrowed by a raw `filter` or by `state` ("RUNNING", ...) and/or `owner` (a token name)."""
        request = operations_pb2.ListOperationsRequest(
            name="operations", filter=filter or list_filter(state=state, owner=owner), page_size=page_size)
        return self._pages(self.operations.ListOperations, request, "operations")

    def cancel_operation(self, name: str) -> None:
        self._call(self.operations.CancelOperation,
                   operations_pb2.CancelOperationRequest(name=_named("operations", name)))

    def delete_operation(self, name: str) -> None:
        self._call(self.operations.DeleteOperation,
                   operations_pb2.DeleteOperationRequest(name=_named("operations", name)))

    def watch(self, name: str, timeout: float | None = None) -> Iterator[operations_pb2.Operation]:
        """The operation on every change until it is done; re-attaches (by name) when the stream breaks.

        `timeout` (seconds) raises GigauditError(DEADLINE_EXCEEDED) once passed, also while nothing changes; the
        operation goes on."""
        name = _named("operations", name)
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                if left is not None and left <= 0:
                    raise _still_running(name, timeout)
                stream = self.audits.WatchOperation(audit_pb.WatchOperationRequest(name=name), timeout=left,
                                                    metadata=self._metadata)
                for op in stream:
                    failures = 0
                    yield op
                    if op.done:
                        return
                op = self.get_operation(name)  # the stream ended early: look once, then watch again
                if op.done:
                    yield op
                    return
            except grpc.RpcError as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _still_running(name, timeout) from None
                failures += 1
                if exc.code() not in RETRYABLE or failures > self.retries:
                    raise GigauditError.from_rpc_error(exc) from None
                time.sleep(0.2 * 2**failures)

    def wait(self, name: str, *, timeout: float | None = None, progress: bool = True,
             on_update: Callable[[metadata_pb.OperationMetadata], None] | None = None):
        """Follow an operation to its end and return its unpacked response (e.g. `AuditResult`, `Model`).

        A failed or cancelled operation raises GigauditError with the job's status; `timeout` raises
        GigauditError(DEADLINE_EXCEEDED) and leaves the operation running.
        """
        bar = OperationProgress(progress)
        try:
            for op in self.watch(name, timeout=timeout):
                meta = operation_metadata(op)
                bar.update(meta)
                if on_update:
                    on_update(meta)
                if op.done:
                    return operation_result(op)
        finally:
            bar.close()
        raise GigauditError(grpc.StatusCode.UNKNOWN, f"operation {name} stream ended before it was done")

    # --- concept sets and graphs -------------------------------------------------------------
    def list_concept_sets(self, model: str, *, owner: str | None = None,
                          page_size: int = 100) -> list[audit_pb.ConceptSet]:
        request = audit_pb.ListConceptSetsRequest(parent=_named("models", model), page_size=page_size,
                                                  filter=list_filter(owner=owner))
        return self._pages(self.audits.ListConceptSets, request, "concept_sets")

    def delete_concept_set(self, name: str, force: bool = False) -> None:
        """Delete `models/{m}/conceptSets/{c}` (or `m/c`); `force` also deletes the graphs built from it."""
        self._call(self.audits.DeleteConceptSet,
                   audit_pb.DeleteConceptSetRequest(name=_child("conceptSets", name), force=force))

    def list_concept_graphs(self, model: str, *, owner: str | None = None,
                            page_size: int = 100) -> list[audit_pb.ConceptGraph]:
        """The model's concept graphs (metadata and evidence, no nodes or edges)."""
        request = audit_pb.ListConceptGraphsRequest(parent=_named("models", model), page_size=page_size,
                                                    filter=list_filter(owner=owner))
        return self._pages(self.audits.ListConceptGraphs, request, "concept_graphs")

    def delete_concept_graph(self, name: str, force: bool = False) -> None:
        """Delete `models/{m}/conceptGraphs/{g}` (or `m/g`); `force` cancels its operation when it still runs."""
        self._call(self.audits.DeleteConceptGraph,
                   audit_pb.DeleteConceptGraphRequest(name=_child("conceptGraphs", name), force=force))

    # --- administration (admin role) ---------------------------------------------------------
    def get_status(self) -> admin_pb.ServiceStatus:
        """The queue, the workers and the number of dead letters (`gigaudit status`)."""
        return self._call(self.admin.GetStatus, admin_pb.GetStatusRequest())

    def list_dead_letters(self, page_size: int = 100, limit: int | None = None) -> list[admin_pb.DeadLetter]:
        """Jobs that failed for good, newest first; with `limit` (1..1000), only that many of the newest."""
        if limit is not None:
            return list(self._call(self.admin.ListDeadLetters,
                                   admin_pb.ListDeadLettersRequest(page_size=limit)).dead_letters)
        return self._pages(self.admin.ListDeadLetters, admin_pb.ListDeadLettersRequest(page_size=page_size),
                           "dead_letters")

    def retry_dead_letter(self, operation: str) -> operations_pb2.Operation:
        """Queue a dead-lettered job again; returns its operation (not retried: a second call would fail)."""
        return self._call(self.admin.RetryDeadLetter,
                          admin_pb.RetryDeadLetterRequest(operation=_named("operations", operation)), retry=False)

    # --- results -----------------------------------------------------------------------------
    def get_graph(self, name: str, page_size: int = 5000) -> ConceptGraph:
        """The whole concept graph `models/{m}/conceptGraphs/{g}` (all pages) as a `ConceptGraph` view."""
        pages, token = [], ""
        while True:
            page = self._call(self.audits.GetConceptGraph, audit_pb.GetConceptGraphRequest(
                name=name, view=audit_pb.CONCEPT_GRAPH_VIEW_FULL, page_size=page_size, page_token=token))
            pages.append(page)
            token = page.next_page_token
            if not token:
                return ConceptGraph(convert.graph_to_dict(pages))

    def get_concept_set(self, name: str) -> audit_pb.ConceptSet:
        """The concept set `models/{m}/conceptSets/{c}`: per layer its statistics and the rendered concepts."""
        return self._call(self.audits.GetConceptSet, audit_pb.GetConceptSetRequest(name=name))

    def get_exemplars(self, concept_set: str, node_id: str, max_exemplars: int = 0) -> list[Exemplar]:
        """Exemplars (crop PNG, iERF PNG) of the concept `node_id` ("layer:index") of a concept set.

        A concept the server has not rendered (see `render_exemplars`) has its exemplars' references (image,
        position, coefficient) with empty PNGs (`png == b""`, `ierf_png is None`).
        """
        layer, index = _concept_id(node_id)
        response = self._call(self.audits.GetConceptExemplars, audit_pb.GetConceptExemplarsRequest(
            concept_set=concept_set, layer=layer, concept=index, max_exemplars=max_exemplars))
        return convert.exemplars_to_list(node_id, response)

    def render_exemplars(self, concept_set: str, node_ids: Sequence[str], *, wait: bool = True,
                         timeout: float | None = None, progress: bool = False, request_id: str | None = None):
        """Have the server render the exemplar PNGs of concepts (`"layer:index"` ids); one operation per layer.

        With `wait`, follows the operations and returns the updated `ConceptSet`; else returns the operations.
        Concepts rendered already cost nothing.
        """
        by_layer: dict[str, set[int]] = {}
        for node_id in node_ids:
            layer, index = _concept_id(node_id)
            by_layer.setdefault(layer, set()).add(index)
        if not by_layer:
            raise ValueError("name at least one concept to render")
        request_id = request_id or _request_id()
        ops = [self._call(self.audits.RenderExemplars, audit_pb.RenderExemplarsRequest(
            concept_set=concept_set, layer=layer, concepts=sorted(indices), request_id=f"{request_id}-{layer}"))
            for layer, indices in by_layer.items()]
        if not wait:
            return ops
        for op in ops:
            self.wait(op.name, timeout=timeout, progress=progress)
        return self.get_concept_set(concept_set)

    def explain_image(self, graph: str, image_path: str | Path, target: int | str | None = None, top_k: int = 5, *,
                      timeout: float | None = None, progress: bool = False, request_id: str | None = None) -> dict:
        """Why the model classified one image as it did, in the terms of the concept graph `graph`
        (`models/{m}/conceptGraphs/{g}` or `m/g`): per analysed layer the `top_k` concepts (at most 64) that
        carried the class `target` (an index or a class name; None: the predicted class), with their GIG
        attribution, their coefficient in the image and an iERF overlay (WebP), and completeness per segment.

        Waits for the operation; returns the dict of `gigaudit.explanations` (ready for `gigaudit.report`)."""
        name = _child("conceptGraphs", graph)
        path = Path(image_path)
        if not path.is_file():
            raise ValueError(f"no such image file: {path}")
        classes = list(self._call(self.audits.GetConceptGraph, audit_pb.GetConceptGraphRequest(name=name)).classes)
        if isinstance(target, str):
            if target not in classes:
                raise ValueError(f"unknown class {target!r}; the graph's classes are: {', '.join(classes) or 'none'}")
            target = classes.index(target)
        request = audit_pb.ExplainImageRequest(
            concept_graph=name, image=path.read_bytes(), target_class=-1 if target is None else int(target),
            explain_predicted=target is None, top_k=top_k, request_id=request_id or _request_id())
        op = self._call(self.audits.ExplainImage, request)
        message = self.wait(op.name, timeout=timeout, progress=progress)
        if not isinstance(message, audit_pb.ImageExplanation):  # an Any that operation_result does not unpack
            packed, message = message, audit_pb.ImageExplanation()
            packed.Unpack(message)
        return explanations.explanation_to_dict(message, graph=name, image=path.name, class_names=classes)

    def graph_exemplars(self, graph: ConceptGraph, concept_set: str, max_exemplars: int = 6, *,
                        nodes: Sequence[str] = ()) -> dict:
        """{node id: exemplars with PNGs} for the concept nodes of `graph` that the server has rendered (after an
        audit: the most relevant of every layer, the ones the report shows first), plus `nodes`, rendered on demand
        first when they are not. Ready to pass to `write_report`."""
        rendered = {(layer.layer, k) for layer in self.get_concept_set(concept_set).layers
                    for k in layer.rendered_concepts}
        missing = [n for n in nodes if _concept_id(n) not in rendered]
        if missing:
            rendered |= {(layer.layer, k) for layer in self.render_exemplars(concept_set, missing).layers
                         for k in layer.rendered_concepts}
        found = {}
        for node in graph.data["nodes"]:
            if node.get("kind", "concept") == "concept" and (node["layer"], node["index"]) in rendered:
                shots = [e for e in self.get_exemplars(concept_set, node["id"], max_exemplars) if e.png]
                if shots:
                    found[node["id"]] = shots
        return found

    # --- helpers -----------------------------------------------------------------------------
    def _upload(self, method, requests: Callable[[], Iterator]):
        """Send the stream; again (same request id) only after a transport failure, never after an answer."""
        for attempt in range(self.retries):
            try:
                return method(requests(), timeout=self.upload_timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                if attempt + 1 < self.retries and _transport_failure(exc):
                    time.sleep(0.2 * 2**attempt)
                    continue
                raise GigauditError.from_rpc_error(exc) from None

    def _pages(self, method, request, field: str) -> list:
        items = []
        while True:
            response = self._call(method, request)
            items.extend(getattr(response, field))
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token


def operation_metadata(op: operations_pb2.Operation) -> metadata_pb.OperationMetadata:
    meta = metadata_pb.OperationMetadata()
    if op.metadata.Is(meta.DESCRIPTOR):
        op.metadata.Unpack(meta)
    return meta


def operation_result(op: operations_pb2.Operation):
    """The unpacked response of a done operation; GigauditError when it failed or was cancelled."""
    if op.HasField("error"):
        raise GigauditError.from_status(op.error)
    for kind in (audit_pb.AuditResult, audit_pb.ConceptGraph, audit_pb.ConceptSet, model_pb.Model,
                 audit_pb.ImageExplanation, dataset_pb.Dataset):
        if op.response.Is(kind.DESCRIPTOR):
            result = kind()
            op.response.Unpack(result)
            return result
    return op.response


def _credentials(tls) -> grpc.ChannelCredentials:
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, (str, Path)):
        return grpc.ssl_channel_credentials(root_certificates=Path(tls).read_bytes())
    raise ValueError(f"tls must be None, True, a CA bundle path or grpc.ChannelCredentials, got {tls!r}")


def _named(collection: str, name: str) -> str:
    """Accept `id` or `collection/id` (or a nested resource name) and return the full resource name."""
    if not name:
        raise ValueError(f"a {collection} name is required")
    return name if "/" in name else f"{collection}/{name}"


def list_filter(*, state: str | None = None, owner: str | None = None) -> str:
    """The List filter "state=X AND owner=NAME" (either term alone, or "" for none)."""
    terms = []
    if state:
        terms.append(f"state={state.upper().removeprefix('OPERATION_STATE_')}")
    if owner:
        terms.append(f"owner={owner}")
    return " AND ".join(terms)


def _child(collection: str, name: str) -> str:
    """`models/{m}/{collection}/{id}` from itself or from `m/id`."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "models" and parts[2] == collection and all(parts):
        return name
    if len(parts) == 2 and all(parts):
        return f"models/{parts[0]}/{collection}/{parts[1]}"
    raise ValueError(f"a {collection} name is 'models/MODEL/{collection}/ID' or 'MODEL/ID', got {name!r}")


def _still_running(name: str, timeout: float | None) -> GigauditError:
    return GigauditError(grpc.StatusCode.DEADLINE_EXCEEDED, f"operation {name} still running after {timeout} s")


def _transport_failure(exc: grpc.RpcError) -> bool:
    """UNAVAILABLE from the channel itself (no connection, connection lost): the server sent no status of its own,
    which always carries details (gigaudit_server.api.errors)."""
    if not isinstance(exc, grpc.Call) or exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return not any(key == "grpc-status-details-bin" for key, _ in (exc.trailing_metadata() or ()))


def _concept_id(node_id: str) -> tuple[str, int]:
    """`"layer:index"` → (layer, index)."""
    layer, _, index = node_id.rpartition(":")
    if not layer or not index.isdigit():
        raise ValueError(f"a concept id is 'layer:index', got {node_id!r}")
    return layer, int(index)


def _request_id() -> str:
    return str(uuid.uuid4())


def _file_digest(path: Path) -> tuple[int, str]:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(block)
    return path.stat().st_size, digest.hexdigest()


@contextmanager
def _model_file(path: Path):
    """The weights file to upload: ``path`` itself, or a folder (a Hugging Face model saved with
    ``save_pretrained``: config.json, model.safetensors, optionally preprocessor_config.json) packed into a
    temporary tar of those files."""
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise ValueError(f"no such weights file or model folder: {path}")
    wanted = [path / name for name in HF_MODEL_FILES if (path / name).is_file()]
    missing = [name for name in HF_MODEL_FILES[:2] if not (path / name).is_file()]
    if missing:
        raise ValueError(f"a model folder holds {' and '.join(HF_MODEL_FILES[:2])} (save_pretrained); "
                         f"{path} lacks {', '.join(missing)}")
    fd, name = tempfile.mkstemp(suffix=".tar")
    os.close(fd)
    try:
        with tarfile.open(name, "w", format=tarfile.PAX_FORMAT) as tar:
            for file in wanted:
                info = tarfile.TarInfo(file.name)
                data = file.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        yield Path(name)
    finally:
        os.unlink(name)


def _upload_stream(request_type, header, path: Path, progress: bool, label: str) -> Callable[[], Iterator]:
    """The requests of an upload stream, again for every attempt: the header, then the file's chunks."""
    def requests():
        yield request_type(header=header)
        for chunk in _chunks(path, progress, label):
            yield request_type(chunk=chunk)
    return requests


def _chunks(path: Path, progress: bool, label: str) -> Iterator[bytes]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=label)
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK_BYTES), b""):
                if bar is not None:
                    bar.update(len(block))
                yield block
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def _archive(path: Path):
    """(file path, DatasetFormat) of a dataset file, or of a folder packed into a temporary tar: a saved Hugging
    Face dataset (its files), WebDataset shards (their members, in shard order) or images."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".jsonl"):
            raise ValueError(f"{path.name} is a manifest of image URIs: register it by URI (register_dataset, or "
                             "--dataset file://…, s3://…)")
        if suffix not in DATASET_FORMATS:
            raise ValueError(f"a dataset is a folder, an archive or a parquet file ({', '.join(DATASET_FORMATS)}), "
                             f"got {path.name}")
        yield path, DATASET_FORMATS[suffix]
        return
    if not path.is_dir():
        raise ValueError(f"no such dataset folder or file: {path}")
    if (path / "dataset_dict.json").is_file():
        raise ValueError(f"{path} is a Hugging Face DatasetDict; upload the folder of one split")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    shards = [p for p in files if p.suffix.lower() == ".tar"]
    if any((path / name).is_file() for name in HF_DATASET_FILES):
        members, fmt = [(p.name, p) for p in files], dataset_pb.DATASET_FORMAT_HF_DATASET
    elif shards:
        members, fmt = None, dataset_pb.DATASET_FORMAT_WEBDATASET
    else:
        images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}), saved Hugging Face dataset or "
                             f"WebDataset shards (.tar) under {path}")
        members, fmt = [(p.relative_to(path).as_posix(), p) for p in images], dataset_pb.DATASET_FORMAT_TAR
    fd, name = tempfile.mkstemp(suffix=".tar")
    os.close(fd)
    try:
        with tarfile.open(name, "w", format=tarfile.PAX_FORMAT) as tar:
            if members is None:
                _concatenate_shards(tar, shards)
            for member, file in members or ():
                info = tarfile.TarInfo(member)
                data = file.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        yield Path(name), fmt
    finally:
        os.unlink(name)


def _concatenate_shards(tar: tarfile.TarFile, shards: list[Path]) -> None:
    """The regular file members of WebDataset ``shards``, in order, into ``tar`` (one shard of them all)."""
    for shard in shards:
        with tarfile.open(shard, "r:*") as source:
            for member in source:
                if not member.isfile():
                    raise ValueError(f"{shard.name}: member {member.name!r} is not a regular file")
                tar.addfile(_plain(member), source.extractfile(member))


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.size, info.mtime, info.mode = member.size, 0, 0o644
    return info
