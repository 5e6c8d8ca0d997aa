"""The job handlers of a worker: each job kind's params (JSON) in, a JSON result out, artifacts in the store.

Kinds: ``validate_model``, ``extract_concepts``, ``build_graph`` (sharded; the reducer ``reduce_graph`` merges the
partial graphs), ``audit`` (extraction, graph and evaluation in one job) and ``noop``. The API copies the model and
dataset records into the params, so a worker needs no catalog. Every handler calls the ``gig`` core; gig's ``progress`` callbacks go straight to
``JobContext.progress``, which also stops a cancelled job between batches.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from functools import reduce

import torch

import gig
from gig.concepts import ConceptSet
from gig.erf import erf, exemplar_crops
from gigaudit_server import exemplars
from gigaudit_server.datasets import ArchiveImages
from gigaudit_server.jobs import Job, JobContext
from gigaudit_server.models import ModelCache
from gigaudit_server.storage import ArtifactStore

EXTRACT_DEFAULTS = {"n_concepts": None, "method": "bisecting_kmeans", "pfvs_per_image": 1, "sampling": "contribution",
                    "lam": 0.1, "seed": 0}
GRAPH_DEFAULTS = {"steps": 16, "top_t": 5, "method": "gausslegendre", "path": "reconstruction"}


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """Images ``[index·n/count, (index+1)·n/count)`` of shard ``index`` of ``count``."""
    return index * n // count, (index + 1) * n // count


class Tasks:
    """The handlers of one worker: its artifact store, device and resident models.

    ``batch_size`` images go through gig at a time; ``n_exemplars`` exemplars are kept per concept, and those of
    the ``exemplar_concepts`` most frequent concepts per layer are rendered as PNGs.
    """

    def __init__(self, store: ArtifactStore, device: str = "cpu", models: ModelCache | None = None, *,
                 batch_size: int = 32, n_exemplars: int = 8, exemplar_concepts: int = 64):
        self.store = store
        self.device = torch.device(device)
        self.models = models or ModelCache(store)
        self.batch_size = batch_size
        self.n_exemplars = n_exemplars
        self.exemplar_concepts = exemplar_concepts

    def handlers(self) -> dict:
        return {"validate_model": self.validate_model, "extract_concepts": self.extract_concepts,
                "build_graph": self.build_graph, "audit": self.audit, "noop": self.noop}

    def reducers(self) -> dict:
        return {"reduce_graph": self.reduce_graph}

    # ------------------------------------------------------------------ handlers
    def validate_model(self, ctx: JobContext) -> dict:
        """Load the weights strictly, run one image through the model, list its layers."""
        record = ctx.job.params["model"]
        model = self.models.get(record, self.device)
        size = _size(record)
        with torch.no_grad():
            try:
                logits = model(torch.zeros(1, 3, *size, device=self.device))
            except RuntimeError as exc:
                raise ValueError(f"the model fails on a 1x3x{size[0]}x{size[1]} input: {exc}") from exc
        if tuple(logits.shape) != (1, record["num_classes"]):
            raise ValueError(f"the model returns shape {tuple(logits.shape)}, not (1, {record['num_classes']})")
        try:
            default = gig.default_layers(model)
        except ValueError:  # no sensible default: the caller must name layers
            default = []
        return {"layers": [asdict(info) for info in gig.list_layers(model)], "default_layers": default}

    def extract_concepts(self, ctx: JobContext) -> dict:
        params = ctx.job.params
        model = self.models.get(params["model"], self.device)
        with self._dataset(params) as data:
            concepts = self._extract(model, data, params, ctx.progress)
            return self._store_concepts(model, concepts, data, params["model"], ctx.progress)

    def build_graph(self, ctx: JobContext) -> dict:
        """One shard of a graph (the whole graph when the job is not sharded)."""
        params = ctx.job.params
        start, stop = shard_bounds(params["dataset"]["n_images"], ctx.shard_index, ctx.shard_count)
        if start == stop:  # more shards than images
            return {"partial_sha": None, "n_images": 0}
        model = self.models.get(params["model"], self.device)
        concepts = ConceptSet.from_bytes(self.store.read("concepts", params["concept_set_sha"]))
        with self._dataset(params, start, stop) as data:
            graph = self._graph(model, data, concepts, _options(params, GRAPH_DEFAULTS), params, ctx.progress, start)
        if ctx.job.parent is None and ctx.shard_count == 1:
            return self._graph_result(graph)
        return {"partial_sha": self._put_json("graphs", graph.to_dict()), "n_images": stop - start}

    def reduce_graph(self, parent: Job, shard_results: list[dict]) -> dict:
        """Merge the shards' partial graphs (in shard order) into the dataset-wide graph."""
        partials = [gig.ConceptGraph.from_dict(json.loads(self.store.read("graphs", r["partial_sha"])))
                    for r in shard_results if r["partial_sha"]]
        if not partials:
            raise ValueError("no shard produced a partial graph (empty dataset?)")
        return self._graph_result(reduce(gig.ConceptGraph.merge, partials))

    def audit(self, ctx: JobContext) -> dict:
        """Extraction, graph and the evidence of DESIGN §1.5 (``gig.evaluate``) in one job.

        Params are those of both jobs, with ``clustering`` and ``quadrature`` naming the two methods; optional
        ``metrics`` (gig.evaluate's default set when absent) and ``evaluation_images`` (default 16).
        """
        params = ctx.job.params
        model = self.models.get(params["model"], self.device)
        graph_options = _options({**params, "method": params.get("quadrature")}, GRAPH_DEFAULTS)
        with self._dataset(params) as data:
            concepts = self._extract(model, data, {**params, "method": params.get("clustering")}, ctx.progress)
            result = self._store_concepts(model, concepts, data, params["model"], ctx.progress)
            graph = self._graph(model, data, concepts, graph_options, params, ctx.progress, 0)
            metrics = {"metrics": params["metrics"]} if params.get("metrics") else {}
            gig.evaluate(model, data, concepts, graph, steps=graph_options["steps"], method=graph_options["method"],
                         top_t=graph_options["top_t"], progress=ctx.progress,
                         max_images=params.get("evaluation_images") or 16, seed=params.get("seed") or 0, **metrics)
        graph_result = self._graph_result(graph)  # gig.evaluate put the evidence into the graph
        return {**result, "graph_sha": graph_result["graph_sha"], "n_images": graph_result["n_images"],
                "evidence": graph.to_dict()["evidence"]}

    def noop(self, ctx: JobContext) -> dict:
        """Sleep ``params["sleep"]`` seconds in tenths, reporting progress (and honouring cancellation)."""
        ticks = round(10 * float(ctx.job.params.get("sleep", 0.0)))
        for tick in range(ticks):
            ctx.progress("sleep", tick, ticks)
            time.sleep(0.1)
        ctx.progress("sleep", ticks, ticks)
        return {}

    # ------------------------------------------------------------------ steps
    @contextlib.contextmanager
    def _dataset(self, params: Mapping, start: int = 0, stop: int | None = None):
        """Images ``[start, stop)`` of the job's dataset as streamed batches, labelled with the model's classes."""
        record, dataset = params["model"], params["dataset"]
        class_map = _class_map(dataset.get("class_names") or [], record.get("class_names") or [])
        with self._dataset_path(dataset["sha256"]) as path:
            yield ArchiveImages(path, _size(record), record.get("mean") or [0.0] * 3, record.get("std") or [1.0] * 3,
                                start=start, stop=stop, batch_size=self.batch_size, class_map=class_map)

    @contextlib.contextmanager
    def _dataset_path(self, sha: str):
        """A local path of the dataset archive (a temporary copy for remote stores)."""
        try:
            path = self.store.local_path("datasets", sha)
        except ValueError:  # not a local store
            path = None
        if path is not None:
            yield path
            return
        with tempfile.NamedTemporaryFile(suffix=".archive") as copy:
            with self.store.open("datasets", sha) as source:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
            copy.flush()
            yield copy.name

    def _extract(self, model, data, params, progress) -> ConceptSet:
        layers = params.get("layers") or gig.default_layers(model)
        return gig.extract_concepts(model, data, layers, device=self.device, progress=progress,
                                    n_exemplars=self.n_exemplars, **_options(params, EXTRACT_DEFAULTS))

    def _store_concepts(self, model, concepts: ConceptSet, data: ArchiveImages, record, progress) -> dict:
        """Store the concept set and its exemplar bundle; the result of an extraction."""
        stats = concepts.params["decomposition"]  # measured by extract_concepts' second pass
        bundle = self._render_exemplars(model, concepts, data, record, progress)
        return {
            "concept_set_sha": self.store.put_bytes("concepts", concepts.to_bytes()),
            "layers": {layer: {"n_concepts": lc.n_concepts, **stats[layer]} for layer, lc in concepts.layers.items()},
            "exemplars_sha": self.store.put_bytes("exemplars", bundle),
        }

    def _render_exemplars(self, model, concepts: ConceptSet, data: ArchiveImages, record, progress) -> bytes:
        """PNG thumbnails (iERF crops) and iERF overlays of the top exemplars of the most frequent concepts."""
        normalisation = {"mean": record.get("mean") or [0.0] * 3, "std": record.get("std") or [1.0] * 3}
        found = {layer: lc.exemplars or [[] for _ in range(lc.n_concepts)] for layer, lc in concepts.layers.items()}
        rows = {}  # layer -> [(concept, exemplar)] to render
        for layer, lc in concepts.layers.items():
            shown = torch.argsort(lc.frequency, descending=True, stable=True)[:self.exemplar_concepts]
            rows[layer] = [(k, e) for k in sorted(shown.tolist()) for e in found[layer][k]]
        ids = sorted({e.image for chosen in rows.values() for _, e in chosen})
        pictures = dict(zip(ids, data.select(ids))) if ids else {}
        layers = {}
        for i, (layer, lc) in enumerate(concepts.layers.items()):
            progress("exemplars", i, len(concepts.layers))
            pngs = {}
            for start in range(0, len(rows[layer]), self.batch_size):
                chunk = rows[layer][start:start + self.batch_size]
                batch = torch.stack([pictures[e.image] for _, e in chunk])
                pngs.update(self._exemplar_pngs(model, layer, concepts.vectors(layer), chunk, batch, normalisation))
            layers[layer] = [[{"image": e.image, "image_name": data.names[e.image], "position": e.position,
                               "coefficient": e.coefficient, **pngs.get((k, e), {})} for e in found[layer][k]]
                             for k in range(lc.n_concepts)]
        progress("exemplars", len(concepts.layers), len(concepts.layers))
        return exemplars.write_bundle(layers)

    def _exemplar_pngs(self, model, layer, vectors, rows, batch, normalisation) -> dict:
        """``{(concept, exemplar): {"thumbnail_png", "ierf_png"}}`` for a batch of exemplar rows."""
        batch = batch.to(self.device)
        positions = torch.tensor([e.position for _, e in rows], device=self.device)
        directions = vectors[torch.tensor([k for k, _ in rows])].to(self.device)
        maps = erf(model, batch, layer, positions, directions)
        crops = exemplar_crops(batch, maps, **normalisation)
        mean, std = (torch.tensor(normalisation[k], device=self.device).view(1, 3, 1, 1) for k in ("mean", "std"))
        pictures = ((batch * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return {row: {"thumbnail_png": exemplars.thumbnail_png(crop.pixels),
                      "ierf_png": exemplars.ierf_png(picture, heat)}
                for row, crop, picture, heat in zip(rows, crops, pictures, maps.cpu().numpy())}

    def _graph(self, model, data: ArchiveImages, concepts, options, params, progress, start_index):
        n_images = len(data.names)

        def report(stage, done, total):  # gig cannot know the image count of a streamed dataset
            progress(stage, done, n_images if total is None and stage == "graph" else total)

        return gig.build_graph(model, data, concepts, layers=params.get("layers") or None, device=self.device,
                               progress=report, class_names=params["model"].get("class_names") or None,
                               start_index=start_index, **options)

    def _graph_result(self, graph) -> dict:
        data = graph.to_dict()
        return {"graph_sha": self._put_json("graphs", data), "n_images": data["n_images"],
                "completeness": data.get("evidence", {}).get("completeness", {})}

    def _put_json(self, kind: str, value) -> str:
        return self.store.put_bytes(kind, json.dumps(value, sort_keys=True).encode())


def _size(record: Mapping) -> tuple[int, int]:
    size = record.get("input_size") or 224
    return (size, size) if isinstance(size, int) else tuple(size)[-2:]


def _class_map(dataset_classes: list[str], model_classes: list[str]) -> list[int] | None:
    """The model's class index of each dataset class (sorted class folders), matched by name; ``None`` (the
    dataset's order is the model's, the ImageFolder convention) when either side has no class names."""
    if not dataset_classes or not model_classes:
        return None
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [name for name in dataset_classes if name not in index]
    if unknown:
        raise ValueError(f"dataset classes {unknown} are not classes of the model; its classes are: "
                         f"{', '.join(model_classes)}")
    return [index[name] for name in dataset_classes]


def _options(params: Mapping, defaults: Mapping) -> dict:
    """``defaults`` overridden by ``params``; zero values (proto3 "unset") keep the default, except for ``lam`` and
    ``seed``, where zero means zero."""
    options = dict(defaults)
    for key in defaults:
        value = params.get(key)
        if value not in (None, "", 0) or (key in ("lam", "seed") and value == 0):
            options[key] = value
    return options
