"""AuditService: concept extraction, concept graphs and audits as operations; their results; progress streams.

Options are validated here (ranges) and passed on only when the caller set them (proto3 zero or unset: omitted),
so the defaults of the ``gig`` core apply; the API states none of its own.
"""
from __future__ import annotations

import io
import zipfile

from google.protobuf import empty_pb2

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit_server.api import errors, lifecycle, names, operations, ownership, resources
from gigaudit_server.queue import schemas
from gigaudit_server.storage import exemplars, settlement
from gigaudit_server.storage.datasets import archives

MAX_CONCEPTS = 65_536
MAX_SHARDS = 64
MAX_RENDER_CONCEPTS = 1024
MAX_EXPLAIN_IMAGE_BYTES = 16 * 1024**2
MAX_EXPLAIN_TOP_K = 64
_MODEL_FIELDS = ("name", "architecture", "num_classes", "class_names", "input_size", "mean", "std", "weights_sha256",
                 "architecture_options", "preprocessing", "tracer")
_DATASET_FIELDS = ("name", "sha256", "format", "n_images", "class_names", "image_column", "label_column")


class AuditServicer(audit_grpc.AuditServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def ExtractConcepts(self, request, context):
        model_id, model = self._model(request.parent)
        set_id = names.check_id("concept_set_id", request.concept_set_id)
        dataset_id, dataset = self._dataset(request.dataset)
        layers = self._layers(model, list(request.layers))
        options = _concept_values(request.options)
        set_name = f"{request.parent}/conceptSets/{set_id}"
        params = _job(schemas.ExtractConcepts, _prefixed("options", options), model=_model_params(model),
                      dataset=dataset, layers=layers, concept_set=set_name, **options)
        options = {k: v for k, v in options.items() if v is not None}
        created = [("conceptSets", f"{model_id}/{set_id}", {
            "name": set_name, "dataset": request.dataset, "layers": layers, "options": options},
            [("models", model_id), ("datasets", dataset_id)])]
        return lifecycle.start(self.backend, _method("ExtractConcepts"), request, "extract_concepts", params,
                               created, [("models", model_id), ("datasets", dataset_id)])

    @errors.handle_errors
    def BuildConceptGraph(self, request, context):
        model_id, model = self._model(request.parent)
        graph_id = names.check_id("concept_graph_id", request.concept_graph_id)
        set_model, set_id = names.concept_set("concept_set", request.concept_set)
        if set_model != model_id:
            raise errors.invalid_argument({"concept_set": f"belongs to models/{set_model}, not {request.parent}"})
        concept_set = self._concept_set(set_model, set_id, request.concept_set)
        if concept_set["state"] != "ACTIVE":
            raise errors.failed_precondition(request.concept_set, f"the concept set is {concept_set['state']}, "
                                                                  "not ACTIVE")
        dataset_id, dataset = self._dataset(request.dataset)
        layers = list(request.layers) or concept_set["layers"]
        unknown = [layer for layer in layers if layer not in concept_set["layers"]]
        if unknown:
            raise errors.invalid_argument({"layers": f"not in the concept set: {', '.join(unknown)}; its layers: "
                                                     f"{', '.join(concept_set['layers'])}"})
        options, shards = _graph_values(request.options, "options")
        graph_name = f"{request.parent}/conceptGraphs/{graph_id}"
        params = _job(schemas.BuildGraph, _prefixed("options", options), model=_model_params(model), dataset=dataset,
                      layers=layers, concept_set=request.concept_set, concept_set_sha=concept_set["concept_set_sha"],
                      concept_graph=graph_name, **options)
        uses = [("models", model_id), ("datasets", dataset_id), ("conceptSets", f"{model_id}/{set_id}")]
        created = [("conceptGraphs", f"{model_id}/{graph_id}", {
            "name": graph_name, "concept_set": request.concept_set, "dataset": request.dataset}, uses)]
        return lifecycle.start(self.backend, _method("BuildConceptGraph"), request, "build_graph", params, created,
                               uses, shards=shards, reduce_kind="reduce_graph" if shards > 1 else None)

    @errors.handle_errors
    def Audit(self, request, context):
        model_id, model = self._model(request.parent)
        audit_id = names.check_id("audit_id", request.audit_id)
        dataset_id, dataset = self._dataset(request.dataset)
        layers = self._layers(model, list(request.layers))
        concept_options = _concept_values(request.concept_options)
        graph_options, shards = _graph_values(request.graph_options, "graph_options")
        if shards > 1:
            raise errors.invalid_argument({"graph_options.shard_count": "an audit runs unsharded; shard with "
                                                                         "BuildConceptGraph"})
        set_name = f"{request.parent}/conceptSets/{audit_id}"
        graph_name = f"{request.parent}/conceptGraphs/{audit_id}"
        # one job runs both steps, so the two methods get names of their own
        values = {**concept_options, **graph_options, "clustering": concept_options["method"],
                  "quadrature": graph_options["method"], "metrics": list(request.metrics) or None,
                  "evaluation_images": request.evaluation_images or None}
        del values["method"]
        fields = {**_prefixed("concept_options", concept_options), **_prefixed("graph_options", graph_options),
                  "clustering": "concept_options.method", "quadrature": "graph_options.method"}
        probes_id, probes = self._probes(request.probes)
        params = _job(schemas.Audit, fields, model=_model_params(model), dataset=dataset, layers=layers,
                      concept_set=set_name, concept_graph=graph_name, probes=probes, **values)
        concept_options = {k: v for k, v in concept_options.items() if v is not None}
        uses = [("models", model_id), ("datasets", dataset_id)]
        if probes_id and probes_id != dataset_id:
            uses.append(("datasets", probes_id))
        created = [
            ("conceptSets", f"{model_id}/{audit_id}", {"name": set_name, "dataset": request.dataset, "layers": layers,
                                                       "options": concept_options}, uses),
            ("conceptGraphs", f"{model_id}/{audit_id}", {"name": graph_name, "concept_set": set_name,
                                                         "dataset": request.dataset},
             [*uses, ("conceptSets", f"{model_id}/{audit_id}")])]
        return lifecycle.start(self.backend, _method("Audit"), request, "audit", params, created, uses)

    @errors.handle_errors
    def GetConceptSet(self, request, context):
        model_id, set_id = names.concept_set("name", request.name)
        return resources.concept_set_message(self._concept_set(model_id, set_id, request.name))

    @errors.handle_errors
    def ListConceptSets(self, request, context):
        records, token = self._list("conceptSets", request)
        return audit_pb.ListConceptSetsResponse(concept_sets=[resources.concept_set_message(r) for r in records],
                                                next_page_token=token)

    @errors.handle_errors
    def DeleteConceptSet(self, request, context):
        model_id, set_id = names.concept_set("name", request.name)
        lifecycle.delete(self.backend, "conceptSets", f"{model_id}/{set_id}", force=request.force)
        return empty_pb2.Empty()

    @errors.handle_errors
    def GetConceptGraph(self, request, context):
        model_id, graph_id = names.concept_graph("name", request.name)
        record = self._concept_graph(model_id, graph_id, request.name)
        if request.view == audit_pb.CONCEPT_GRAPH_VIEW_BASIC or record["state"] != "ACTIVE":
            return resources.concept_graph_message(record)
        graph = settlement.load_graph(self.backend.store, record["graph_sha"])
        return resources.concept_graph_message(record, graph=graph, page_size=request.page_size,
                                               page_token=request.page_token)

    @errors.handle_errors
    def ListConceptGraphs(self, request, context):
        records, token = self._list("conceptGraphs", request)
        return audit_pb.ListConceptGraphsResponse(
            concept_graphs=[resources.concept_graph_message(r) for r in records], next_page_token=token)

    @errors.handle_errors
    def DeleteConceptGraph(self, request, context):
        model_id, graph_id = names.concept_graph("name", request.name)
        lifecycle.delete(self.backend, "conceptGraphs", f"{model_id}/{graph_id}", force=request.force)
        return empty_pb2.Empty()

    @errors.handle_errors
    def GetConceptExemplars(self, request, context):
        model_id, set_id = names.concept_set("concept_set", request.concept_set)
        record = self._concept_set(model_id, set_id, request.concept_set)
        if record["state"] != "ACTIVE" or not record.get("exemplars_sha"):
            raise errors.failed_precondition(request.concept_set, f"the concept set is {record['state']} and has "
                                                                  "no exemplars yet")
        if request.max_exemplars < 0:
            raise errors.invalid_argument({"max_exemplars": "must be >= 0 (0: all stored)"})
        bundle = self.backend.store.read("exemplars", record["exemplars_sha"])
        found = exemplars.read_exemplars(bundle, request.layer, request.concept, request.max_exemplars)
        return audit_pb.GetConceptExemplarsResponse(exemplars=[audit_pb.ConceptExemplar(
            image=e["image"], image_name=e["image_name"], position=e["position"], coefficient=e["coefficient"],
            thumbnail_png=e["thumbnail_png"], ierf_png=e["ierf_png"], rendered=e["rendered"]) for e in found])

    @errors.handle_errors
    def RenderExemplars(self, request, context):
        """Queue a ``render_exemplars`` job for the concepts whose PNGs the bundle lacks; once it succeeded,
        reading the concept set (or its exemplars) merges its PNGs into the set's bundle."""
        model_id, set_id = names.concept_set("concept_set", request.concept_set)
        record = self._concept_set(model_id, set_id, request.concept_set)
        if record["state"] != "ACTIVE" or not record.get("exemplars_sha"):
            raise errors.failed_precondition(request.concept_set, f"the concept set is {record['state']} and has "
                                                                  "no exemplars yet")
        if request.layer not in record["layers"]:
            raise errors.invalid_argument({"layer": f"{request.layer!r} is not a layer of the concept set; its "
                                                    f"layers: {', '.join(record['layers'])}"})
        n_concepts = int((record.get("layer_stats") or {}).get(request.layer, {}).get("n_concepts", MAX_CONCEPTS))
        concepts = sorted(set(request.concepts))
        if not concepts or len(concepts) > MAX_RENDER_CONCEPTS:
            raise errors.invalid_argument({"concepts": f"name between 1 and {MAX_RENDER_CONCEPTS} concepts"})
        if not 0 <= concepts[0] <= concepts[-1] < n_concepts:
            raise errors.invalid_argument({"concepts": f"must lie in 0..{n_concepts - 1} for layer "
                                                       f"{request.layer!r}"})
        dataset_id = names.dataset("dataset", record["dataset"])
        _, dataset = self._dataset(record["dataset"])
        _, model = self._model(f"models/{model_id}")
        params = _job(schemas.RenderExemplars, {}, model=_model_params(model), dataset=dataset,
                      concept_set=request.concept_set, concept_set_sha=record["concept_set_sha"],
                      exemplars_sha=record["exemplars_sha"], layer=request.layer, concepts=concepts)
        return lifecycle.start(
            self.backend, _method("RenderExemplars"), request, "render_exemplars", params, [],
            [("models", model_id), ("datasets", dataset_id), ("conceptSets", f"{model_id}/{set_id}")],
            on_submitted=lambda job: settlement.add_render_operation(self.backend, model_id, set_id, job.id))

    @errors.handle_errors
    def ExplainImage(self, request, context):
        """Queue an ``explain_image`` job: one image explained with an ACTIVE concept graph the caller may see. The
        image is checked here (size, decodable) and stored as a one-image archive, which the worker reads through
        the same dataset checks; nothing is created."""
        model_id, graph_id = names.concept_graph("concept_graph", request.concept_graph)
        record = self._concept_graph(model_id, graph_id, request.concept_graph)
        if record["state"] != "ACTIVE":
            raise errors.failed_precondition(request.concept_graph, f"the concept graph is {record['state']}, not "
                                                                    "ACTIVE")
        if not 0 <= request.top_k <= MAX_EXPLAIN_TOP_K:
            raise errors.invalid_argument({"top_k": f"must be between 0 (default: 5) and {MAX_EXPLAIN_TOP_K}"})
        _, model = self._model(f"models/{model_id}")
        target = None if request.explain_predicted or request.target_class == -1 else request.target_class
        if target is not None and not 0 <= target < model["num_classes"]:
            raise errors.invalid_argument({"target_class": f"must be a class of the model, 0.."
                                                           f"{model['num_classes'] - 1}, or -1 (or explain_predicted) "
                                                           "for the predicted class"})
        archive = _image_archive(request.image)
        set_model, set_id = names.concept_set("concept_set", record["concept_set"])
        try:
            concept_set = settlement.concept_set(self.backend, set_model, set_id)
        except KeyError:
            raise errors.failed_precondition(request.concept_graph, "its concept set was deleted") from None
        params = _job(schemas.ExplainImage, {"target_class": "target_class", "top_k": "top_k"},
                      model=_model_params(model), concept_graph=request.concept_graph, graph_sha=record["graph_sha"],
                      concept_set_sha=concept_set["concept_set_sha"],
                      image_sha=self.backend.store.put_bytes("datasets", archive), target_class=target,
                      top_k=request.top_k or None)
        return lifecycle.start(self.backend, _method("ExplainImage"), request, "explain_image", params, [],
                               [("models", model_id), ("conceptSets", f"{set_model}/{set_id}"),
                                ("conceptGraphs", f"{model_id}/{graph_id}")])

    @errors.handle_errors
    def WatchOperation(self, request, context):
        yield from operations.watch(self.backend, request.name)

    # ------------------------------------------------------------------ helpers
    def _model(self, name: str) -> tuple[str, dict]:
        """The ACTIVE model named ``name``; NOT_FOUND, or FAILED_PRECONDITION while its weights are checked."""
        model_id = names.model("parent", name)
        try:
            record = settlement.model(self.backend, model_id)
        except KeyError:
            raise errors.not_found("model", name) from None
        if record.get("state", "ACTIVE") != "ACTIVE":
            raise errors.failed_precondition(name, f"the model is {record['state']}: a worker is still checking its "
                                             f"weights (operations/{record.get('operation')})")
        return model_id, record

    def _dataset(self, name: str) -> tuple[str, dict]:
        """The dataset's ``DatasetSpec`` dict: ACTIVE (settled), with its URI when it is read in place."""
        dataset_id = names.dataset("dataset", name)
        try:
            record = settlement.dataset(self.backend, dataset_id)
        except KeyError:
            raise errors.not_found("dataset", name) from None
        if record.get("state", "ACTIVE") != "ACTIVE":
            raise errors.failed_precondition(name, f"the dataset is {record['state']}: a worker is still inspecting "
                                             f"it (operations/{record.get('operation')})")
        spec = {k: record[k] for k in _DATASET_FIELDS if k in record}
        return dataset_id, {**spec, "uri": record["uri"]} if record.get("in_place") else spec

    def _probes(self, name: str) -> tuple[str, dict | None]:
        """The probe dataset of an audit (``("", None)`` when none is named): visible, one folder per concept."""
        if not name:
            return "", None
        probes_id = names.dataset("probes", name)
        try:
            record = self.backend.catalog.get("datasets", probes_id)
        except KeyError:
            raise errors.not_found("dataset", name) from None
        ownership.check(record.get("owner", ""), "dataset", name)
        if record.get("in_place") or record.get("format") not in ("tar", "zip"):
            raise errors.invalid_argument({"probes": f"{name} is a {record.get('format') or 'pending'} dataset"
                                                     f"{' read in place' if record.get('in_place') else ''}; a "
                                                     "probe dataset is an uploaded ImageFolder tar or zip"})
        if not record.get("class_names"):
            raise errors.invalid_argument({"probes": f"{name} holds loose images; a probe dataset holds one folder "
                                                     "per named concept (name/image.png, masks in name/masks/)"})
        return probes_id, {k: record[k] for k in _DATASET_FIELDS if k in record}

    def _concept_set(self, model_id: str, set_id: str, name: str) -> dict:
        return self._owned(settlement.concept_set, "concept set", model_id, set_id, name)

    def _concept_graph(self, model_id: str, graph_id: str, name: str) -> dict:
        return self._owned(settlement.concept_graph, "concept graph", model_id, graph_id, name)

    def _owned(self, settle, noun: str, model_id: str, child_id: str, name: str) -> dict:
        """A concept set's or graph's settled record; NOT_FOUND when absent or another caller's."""
        try:
            record = settle(self.backend, model_id, child_id)
        except KeyError:
            raise errors.not_found(noun, name) from None
        ownership.check(record.get("owner", ""), noun, name)
        return record

    def _list(self, collection: str, request) -> tuple[list[dict], str]:
        """One page of a model's concept sets or graphs that the caller may see, settled."""
        model_id = names.model("parent", request.parent)
        terms = ownership.parse_filter(request.filter, ("owner",), 'filter must be empty or "owner=NAME"')
        settle = settlement.concept_set if collection == "conceptSets" else settlement.concept_graph
        owner = terms.get("owner")
        records, token = self.backend.catalog.list(
            collection, page_size=request.page_size, page_token=request.page_token, scope=f"{model_id}|{owner}",
            accept=lambda resource_id, record: resource_id.startswith(f"{model_id}/") and (
                owner is None or record.get("owner", "") == owner))
        settled = []
        for record in records:
            try:
                settled.append(settle(self.backend, *record["name"].split("/")[1::2]))
            except KeyError:  # deleted meanwhile
                continue
        return settled, token

    def _layers(self, model: dict, layers: list[str]) -> list[str]:
        """The requested layers (default: the model's), each a cut of the model; INVALID_ARGUMENT otherwise."""
        layers = layers or model["default_layers"]
        if not layers:
            raise errors.invalid_argument({"layers": "the model has no default layers; name them (see ListLayers)"})
        known = {layer["name"]: layer for layer in model["layers"]}
        # a cut that is no source (its output is the logits: the classifier) cannot be analysed either; records
        # from before can_be_source was recorded are taken as sources
        sources = [name for name, layer in known.items() if layer["is_cut"] and layer.get("can_be_source", True)]
        problems = [f"{layer!r} ({_why_not_analysable(known.get(layer))})" for layer in layers if layer not in sources]
        if problems:
            raise errors.invalid_argument({"layers": f"cannot analyse {', '.join(problems)}; analysable layers: "
                                                     f"{', '.join(sources)}"})
        if len(set(layers)) != len(layers):
            raise errors.invalid_argument({"layers": "names a layer twice"})
        return layers


def _image_archive(image: bytes) -> bytes:
    """The request's image as a one-image zip (the worker reads it like a dataset); INVALID_ARGUMENT for an empty,
    oversized or undecodable image."""
    if not image:
        raise errors.invalid_argument({"image": "is empty: send the bytes of a PNG, JPEG, BMP or WebP image"})
    if len(image) > MAX_EXPLAIN_IMAGE_BYTES:
        raise errors.invalid_argument({"image": f"is {len(image)} bytes; at most {MAX_EXPLAIN_IMAGE_BYTES} "
                                                "(16 MiB)"})
    try:
        decoded = archives.decode_image("image", image, archives.DatasetLimits())
    except ValueError as exc:
        raise errors.invalid_argument({"image": f"cannot be read as PNG, JPEG, BMP or WebP: {exc}"}) from None
    suffix = {"JPEG": "jpg"}.get(decoded.format, (decoded.format or "png").lower())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(f"image.{suffix}", (1980, 1, 1, 0, 0, 0)), image)  # same image, same bytes
    return out.getvalue()


def _why_not_analysable(layer: dict | None) -> str:
    if layer is None:
        return "unknown"
    if not layer["is_cut"]:
        return f"not a cut: {layer['reason']}"
    return "its output is the model's logits: no layer follows it to attribute to"


def _method(name: str) -> str:
    return f"/gigaudit.v1.AuditService/{name}"


def _model_params(record: dict) -> dict:
    return {k: record[k] for k in _MODEL_FIELDS if k in record}  # a record from before a field existed: its default


def _concept_values(options: audit_pb.ConceptOptions) -> dict:
    """The concept options as schema values: proto3's unset (zero) is None, so gig's default applies."""
    return {"n_concepts": options.n_concepts or None, "method": options.method or None,
            "pfvs_per_image": options.pfvs_per_image or None, "sampling": options.sampling or None,
            "seed": options.seed or None, "lam": options.lam if options.HasField("lam") else None}


def _graph_values(options: audit_pb.GraphOptions, field: str) -> tuple[dict, int]:
    """The graph options as schema values, and the shard count (0: 1)."""
    if not 0 <= options.shard_count <= MAX_SHARDS:
        raise errors.invalid_argument({f"{field}.shard_count": f"must be between 0 (default: 1) and {MAX_SHARDS}"})
    return {"steps": options.steps or None, "top_t": options.top_t or None, "method": options.method or None,
            "path": options.path or None}, options.shard_count or 1


def _prefixed(prefix: str, values: dict) -> dict[str, str]:
    return {name: f"{prefix}.{name}" for name in values}


def _job(schema, fields: dict[str, str], **values) -> dict:
    """A job's parameters, checked by its schema; INVALID_ARGUMENT naming the request fields otherwise."""
    try:
        return schemas.to_params(schema(**values))
    except schemas.ValidationError as exc:
        raise errors.invalid_argument(schemas.violations(exc, fields)) from None
