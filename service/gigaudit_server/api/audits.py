"""AuditService: concept extraction, concept graphs and audits as operations; their results; progress streams.

Options are validated here (ranges) and passed on only when the caller set them (proto3 zero or unset: omitted),
so the defaults of the ``gig`` core apply; the API states none of its own.
"""
from __future__ import annotations

from gigaudit.v1 import audit_service_pb2 as audit_pb
from gigaudit.v1 import audit_service_pb2_grpc as audit_grpc
from gigaudit_server.api import errors
from gigaudit_server.storage import exemplars
from gigaudit_server.api import names, operations, resources
from gigaudit_server.storage.catalog import AlreadyExists

MAX_CONCEPTS = 65_536
MAX_STEPS = 1024
MAX_SHARDS = 64
MAX_RENDER_CONCEPTS = 1024
_MODEL_FIELDS = ("name", "architecture", "num_classes", "class_names", "input_size", "mean", "std", "weights_sha256")
_DATASET_FIELDS = ("name", "sha256", "format", "n_images", "class_names", "uri")


class AuditServicer(audit_grpc.AuditServiceServicer):
    def __init__(self, backend):
        self.backend = backend

    @errors.handle_errors
    def ExtractConcepts(self, request, context):
        model_id, model = self._model(request.parent)
        set_id = names.check_id("concept_set_id", request.concept_set_id)
        dataset_id, dataset = self._dataset(request.dataset)
        layers = self._layers(model, list(request.layers))
        options = _concept_options(request.options, "options")
        set_name = f"{request.parent}/conceptSets/{set_id}"
        params = {"model": _model_params(model), "dataset": dataset, "layers": layers, "concept_set": set_name, **options}
        created = [("conceptSets", f"{model_id}/{set_id}", {
            "name": set_name, "dataset": request.dataset, "layers": layers, "options": options})]
        return self._start("extract_concepts", params, created, {"models": model_id, "datasets": dataset_id},
                           request.request_id)

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
        options = _graph_options(request.options, "options")
        shards = options.pop("shard_count", 1)
        graph_name = f"{request.parent}/conceptGraphs/{graph_id}"
        params = {"model": _model_params(model), "dataset": dataset, "layers": layers, "concept_set": request.concept_set,
                  "concept_set_sha": concept_set["concept_set_sha"], "concept_graph": graph_name, **options}
        created = [("conceptGraphs", f"{model_id}/{graph_id}", {
            "name": graph_name, "concept_set": request.concept_set, "dataset": request.dataset})]
        return self._start("build_graph", params, created,
                           {"models": model_id, "datasets": dataset_id, "conceptSets": f"{model_id}/{set_id}"},
                           request.request_id, shards=shards, reduce_kind="reduce_graph" if shards > 1 else None)

    @errors.handle_errors
    def Audit(self, request, context):
        model_id, model = self._model(request.parent)
        audit_id = names.check_id("audit_id", request.audit_id)
        dataset_id, dataset = self._dataset(request.dataset)
        layers = self._layers(model, list(request.layers))
        concept_options = _concept_options(request.concept_options, "concept_options")
        graph_options = _graph_options(request.graph_options, "graph_options")
        if request.evaluation_images < 0:
            raise errors.invalid_argument({"evaluation_images": "must be >= 0 (0: gig's default)"})
        if graph_options.pop("shard_count", 1) > 1:
            raise errors.invalid_argument({"graph_options.shard_count": "an audit runs unsharded; shard with "
                                                                         "BuildConceptGraph"})
        set_name = f"{request.parent}/conceptSets/{audit_id}"
        graph_name = f"{request.parent}/conceptGraphs/{audit_id}"
        # one job runs both steps, so the two methods get names of their own
        methods = {"clustering": concept_options.get("method"), "quadrature": graph_options.get("method")}
        params = {"model": _model_params(model), "dataset": dataset, "layers": layers, "concept_set": set_name,
                  "concept_graph": graph_name, **concept_options, **graph_options,
                  **{k: v for k, v in methods.items() if v}}
        params.pop("method", None)
        if request.metrics:
            params["metrics"] = list(request.metrics)
        if request.evaluation_images:
            params["evaluation_images"] = request.evaluation_images
        created = [
            ("conceptSets", f"{model_id}/{audit_id}", {"name": set_name, "dataset": request.dataset, "layers": layers,
                                                       "options": concept_options}),
            ("conceptGraphs", f"{model_id}/{audit_id}", {"name": graph_name, "concept_set": set_name,
                                                         "dataset": request.dataset})]
        return self._start("audit", params, created, {"models": model_id, "datasets": dataset_id},
                           request.request_id)

    @errors.handle_errors
    def GetConceptSet(self, request, context):
        model_id, set_id = names.concept_set("name", request.name)
        return resources.concept_set_message(self._concept_set(model_id, set_id, request.name))

    @errors.handle_errors
    def GetConceptGraph(self, request, context):
        model_id, graph_id = names.concept_graph("name", request.name)
        try:
            record = resources.concept_graph(self.backend, model_id, graph_id)
        except KeyError:
            raise errors.not_found("concept graph", request.name) from None
        if request.view == audit_pb.CONCEPT_GRAPH_VIEW_BASIC or record["state"] != "ACTIVE":
            return resources.concept_graph_message(record)
        graph = resources.load_graph(self.backend.store, record["graph_sha"])
        return resources.concept_graph_message(record, graph=graph, page_size=request.page_size,
                                               page_token=request.page_token)

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
        params = {"model": _model_params(model), "dataset": dataset, "concept_set": request.concept_set,
                  "concept_set_sha": record["concept_set_sha"], "exemplars_sha": record["exemplars_sha"],
                  "layer": request.layer, "concepts": concepts}
        job = self.backend.queue.submit("render_exemplars", params, request_id=(
            f"RenderExemplars:{request.concept_set}:{request.request_id}" if request.request_id else None))
        for collection, resource_id in (("models", model_id), ("datasets", dataset_id),
                                        ("conceptSets", f"{model_id}/{set_id}")):
            self.backend.catalog.add_user(collection, resource_id, job.id)
        resources.add_render_operation(self.backend, model_id, set_id, job.id)
        return operations.to_operation(self.backend, job)

    @errors.handle_errors
    def WatchOperation(self, request, context):
        yield from operations.watch(self.backend, request.name)

    # ------------------------------------------------------------------ helpers
    def _start(self, kind: str, params: dict, created: list[tuple[str, str, dict]], uses: dict[str, str],
               request_id: str, shards: int = 1, reduce_kind: str | None = None):
        """Record the resources an operation creates (CREATING), queue its job, return the operation.

        A retry with the same request id finds the records it made and returns their operation: no second job.
        """
        catalog, queue = self.backend.catalog, self.backend.queue
        made = []
        try:
            for collection, resource_id, record in created:
                stored, fresh = catalog.create(collection, resource_id, {**record, "state": "CREATING",
                                                                         "operation": ""}, request_id=request_id)
                if not fresh and stored["operation"]:
                    return operations.to_operation(self.backend, queue.get(stored["operation"]))
                made.append((collection, resource_id, fresh))
        except AlreadyExists as exc:
            for collection, resource_id, fresh in made:
                if fresh:
                    catalog.delete(collection, resource_id)
            raise errors.already_exists(_KINDS[str(exc).split("/")[0]], created[len(made)][2]["name"]) from None
        job = queue.submit(kind, params, request_id=request_id or None, shards=shards, reduce_kind=reduce_kind)
        for collection, resource_id in uses.items():
            catalog.add_user(collection, resource_id, job.id)
        for collection, resource_id, _ in made:
            catalog.update(collection, resource_id, operation=job.id)
        return operations.to_operation(self.backend, job)

    def _model(self, name: str) -> tuple[str, dict]:
        model_id = names.model("parent", name)
        try:
            record = self.backend.catalog.get("models", model_id)
        except KeyError:
            raise errors.not_found("model", name) from None
        return model_id, record

    def _dataset(self, name: str) -> tuple[str, dict]:
        dataset_id = names.dataset("dataset", name)
        try:
            record = self.backend.catalog.get("datasets", dataset_id)
        except KeyError:
            raise errors.not_found("dataset", name) from None
        return dataset_id, {k: record[k] for k in _DATASET_FIELDS if k in record}

    def _concept_set(self, model_id: str, set_id: str, name: str) -> dict:
        try:
            return resources.concept_set(self.backend, model_id, set_id)
        except KeyError:
            raise errors.not_found("concept set", name) from None

    def _layers(self, model: dict, layers: list[str]) -> list[str]:
        """The requested layers (default: the model's), each a cut of the model; INVALID_ARGUMENT otherwise."""
        layers = layers or model["default_layers"]
        if not layers:
            raise errors.invalid_argument({"layers": "the model has no default layers; name them (see ListLayers)"})
        known = {layer["name"]: layer for layer in model["layers"]}
        cuts = [name for name, layer in known.items() if layer["is_cut"]]
        problems = [f"{layer!r} ({'unknown' if layer not in known else 'not a cut: ' + known[layer]['reason']})"
                    for layer in layers if layer not in known or not known[layer]["is_cut"]]
        if problems:
            raise errors.invalid_argument({"layers": f"cannot analyse {', '.join(problems)}; analysable layers: "
                                                     f"{', '.join(cuts)}"})
        if len(set(layers)) != len(layers):
            raise errors.invalid_argument({"layers": "names a layer twice"})
        return layers


_KINDS = {"conceptSets": "concept set", "conceptGraphs": "concept graph"}


def _model_params(record: dict) -> dict:
    return {k: record[k] for k in _MODEL_FIELDS}


def _concept_options(options: audit_pb.ConceptOptions, field: str) -> dict:
    """The options the caller set, range-checked; unset ones are left to gig's defaults."""
    if not 0 <= options.n_concepts <= MAX_CONCEPTS:
        raise errors.invalid_argument({f"{field}.n_concepts": f"must be between 0 (gig's default) and {MAX_CONCEPTS}"})
    if not 0 <= options.pfvs_per_image <= 1024:
        raise errors.invalid_argument({f"{field}.pfvs_per_image": "must be between 0 (gig's default) and 1024"})
    if options.HasField("lam") and not options.lam >= 0:
        raise errors.invalid_argument({f"{field}.lam": "must be >= 0"})
    chosen = {"n_concepts": options.n_concepts, "method": options.method, "pfvs_per_image": options.pfvs_per_image,
              "sampling": options.sampling, "seed": options.seed}
    return {**{k: v for k, v in chosen.items() if v}, **({"lam": options.lam} if options.HasField("lam") else {})}


def _graph_options(options: audit_pb.GraphOptions, field: str) -> dict:
    """The options the caller set, range-checked; unset ones are left to gig's defaults (``shard_count``: 1)."""
    if not 0 <= options.steps <= MAX_STEPS:
        raise errors.invalid_argument({f"{field}.steps": f"must be between 0 (gig's default) and {MAX_STEPS}"})
    if not 0 <= options.top_t <= 1024:
        raise errors.invalid_argument({f"{field}.top_t": "must be between 0 (gig's default) and 1024"})
    if not 0 <= options.shard_count <= MAX_SHARDS:
        raise errors.invalid_argument({f"{field}.shard_count": f"must be between 0 (default: 1) and {MAX_SHARDS}"})
    chosen = {"steps": options.steps, "top_t": options.top_t, "method": options.method, "path": options.path,
              "shard_count": options.shard_count}
    return {k: v for k, v in chosen.items() if v}
