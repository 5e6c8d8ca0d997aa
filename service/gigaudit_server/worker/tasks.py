"""The job handlers of a worker: each job kind's params (JSON) in, a JSON result out, artifacts in the store.

Kinds: ``validate_model``, ``extract_concepts``, ``build_graph`` (sharded; the reducer ``reduce_graph`` merges the
partial graphs), ``audit`` (extraction, graph and evaluation in one job), ``render_exemplars`` (PNGs of chosen
concepts, on demand), ``explain_image`` (one image, ``gig.explain``) and ``noop``. The API copies the model and
dataset records into the params, so a worker needs no catalog. Every handler calls the ``gig`` core; gig's
``progress`` callbacks go to ``JobContext.progress``, which also stops a cancelled job between batches (or sub-steps).

Progress units, known at each stage's start (``total``), so that a client can show an ETA: ``sample`` batches,
``cluster`` layers, ``decompose`` images × layers (moving with every chunk of Lasso rows), ``graph`` images ×
layer pairs (moving after every pair of every batch), ``exemplars`` exemplar rows, ``evaluate`` evaluation steps
(integrations, pairs, graphs: ``gig.evaluate``'s ``"evaluate:fine"``), ``list_layers`` one step.

Job parameters that are absent are not passed on: gig's keyword defaults are the only defaults (the API passes on
only the fields a caller set).

Checkpoints: a graph is built one batch at a time (one ``gig.build_graph`` per batch, merged in order; equal to
gig's single pass up to the last bits of a float sum) and its partial graph is stored and recorded as the job's
checkpoint whenever ``JobContext.checkpoint_due``; an audit also checkpoints its concept set once extracted, and its
whole graph. A reclaimed or retried job resumes from its checkpoint and gives the same graph, byte for byte, as an
uninterrupted run with the same ``batch_size``; only the batches after the checkpoint are computed again.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import reduce

import torch

import gig
from gig.concepts import ConceptSet
from gig.erf import erf, exemplar_crops
from gig.layers import traced
from gig.naming import label_graph, name_concepts
from gig.preprocessing import Preprocessing
from gigaudit.results import ConceptGraph as GraphView
from gigaudit_server.queue import schemas
from gigaudit_server.queue.jobs import Job, JobContext
from gigaudit_server.storage import exemplars
from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.storage.datasets import sources
from gigaudit_server.storage.datasets.sources import content_digest
from gigaudit_server.storage.datasets.samples import check_uri, worker_allowlist
from gigaudit_server.worker.architectures import build_architecture
from gigaudit_server.worker.images import ArchiveImages, default_threads
from gigaudit_server.worker.models import ModelCache
from gigaudit_server.worker.probe_sets import load_probe_sets, negative_indices, raw_shape

log = logging.getLogger(__name__)

# The job params that are gig's keyword arguments; absent ones take gig's defaults.
EXTRACT_OPTIONS = ("n_concepts", "method", "pfvs_per_image", "sampling", "lam", "seed")
GRAPH_OPTIONS = ("steps", "top_t", "method", "path")
EVALUATE_OPTIONS = ("steps", "top_t", "method")


def gig_defaults(function, names) -> dict:
    """The keyword defaults of a gig function for ``names``: read from gig, never restated here."""
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names}


# What an absent param means (for reading and help texts; the handlers simply leave absent params out).
EXTRACT_DEFAULTS = gig_defaults(gig.extract_concepts, EXTRACT_OPTIONS)
GRAPH_DEFAULTS = gig_defaults(gig.build_graph, GRAPH_OPTIONS)


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """Images ``[index·n/count, (index+1)·n/count)`` of shard ``index`` of ``count``."""
    return index * n // count, (index + 1) * n // count


class Tasks:
    """The handlers of one worker: its artifact store, device and resident models.

    ``batch_size`` images go through gig at a time (and as many exemplar rows through ``gig.erf``);
    ``n_exemplars`` exemplars are kept per concept (6: as many as the report shows, the CLI's ``--exemplars``),
    and those of the ``exemplar_concepts`` concepts per layer that are shown are rendered as PNGs (12: the
    report's ``nodes_per_layer``): in an audit the most relevant ones, ranked as the report ranks them
    (``gigaudit.results.ConceptGraph.overall_relevance``); after an extraction alone, those with the largest
    frequency × mean coefficient. Others are rendered on demand (``render_exemplars``).
    """

    def __init__(self, store: ArtifactStore, device: str = "cpu", models: ModelCache | None = None, *,
                 batch_size: int = 32, n_exemplars: int = 6, exemplar_concepts: int = 12,
                 allowlist: Sequence[str] | None = None):
        self.store = store
        # URI prefixes datasets are read from in place (the API's --dataset-uri-allowlist); None: the environment's
        self.allowlist = list(allowlist) if allowlist is not None else worker_allowlist()
        self.device = torch.device(device)
        self.models = models if models is not None else ModelCache(store)
        self.batch_size = batch_size
        self.n_exemplars = n_exemplars
        self.exemplar_concepts = exemplar_concepts

    def handlers(self) -> dict:
        """Handlers by job kind; each first checks the job's parameters against its schema (``queue.schemas``)."""
        handlers = {"validate_model": self.validate_model, "extract_concepts": self.extract_concepts,
                    "build_graph": self.build_graph, "audit": self.audit, "render_exemplars": self.render_exemplars,
                    "explain_image": self.explain_image,
                    "list_layers": self.list_layers, "inspect_dataset": self.inspect_dataset, "noop": self.noop}
        return {kind: _checked_params(kind, handler) for kind, handler in handlers.items()}

    def reducers(self) -> dict:
        return {"reduce_graph": self.reduce_graph}

    # ------------------------------------------------------------------ handlers
    def validate_model(self, ctx: JobContext) -> dict:
        """Load and check the weights, resolve the preprocessing (the request's, else the model's own configuration,
        else input_size/mean/std, else defaults), run one input of that size through the model, list its layers."""
        record = ctx.job.params["model"]
        loaded = self.models.loaded(record, self.device)  # one cache lookup: the model and its own configuration
        model = loaded.model
        resolved = gig.preprocessing.resolve(record.get("preprocessing") or {}, loaded.config,
                                             input_size=record.get("input_size") or 0, mean=record.get("mean") or (),
                                             std=record.get("std") or ())
        size = resolved.size
        with torch.no_grad():
            try:
                logits = model(torch.zeros(1, 3, *size, device=self.device))
            except (RuntimeError, AssertionError, ValueError, TypeError, IndexError) as exc:
                raise ValueError(f"the model fails on a 1x3x{size[0]}x{size[1]} input ({resolved.describe()}): "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"the model returns {type(logits).__name__}, not a logits tensor")
        if tuple(logits.shape) != (1, record["num_classes"]):
            raise ValueError(f"the model returns shape {tuple(logits.shape)}, not (1, {record['num_classes']})")
        return {**layer_listing(model), "preprocessing": resolved.to_dict(), "family": loaded.family}

    def list_layers(self, ctx: JobContext) -> dict:
        """The layer listing of an architecture built with random weights (ListLayers before any upload)."""
        params = ctx.job.params
        ctx.progress("list_layers", 0, 1)
        model = build_architecture(params["architecture"], params["num_classes"], params.get("architecture_options"))
        if any((params.get("tracer") or {}).values()):
            gig.configure_tracing(model, params["tracer"])
        listing = layer_listing(model)
        ctx.progress("list_layers", 1, 1)
        return listing

    def extract_concepts(self, ctx: JobContext) -> dict:
        params = ctx.job.params
        model = self.models.get(params["model"], self.device)
        with self._dataset(params, progress=ctx.progress) as data:
            concepts = self._extract(model, data, params, ctx.progress)
            result = self._store_concepts(concepts)
            shown = {layer: _top(lc.frequency * lc.mean_coefficient, self.exemplar_concepts)
                     for layer, lc in concepts.layers.items()}
            return {**result, **self._store_exemplars(model, concepts, data, params["model"], shown, ctx.progress)}

    def build_graph(self, ctx: JobContext) -> dict:
        """One shard of a graph (the whole graph when the job is not sharded)."""
        params = ctx.job.params
        start, stop = shard_bounds(params["dataset"]["n_images"], ctx.shard_index, ctx.shard_count)
        if start == stop:  # more shards than images
            return {"partial_sha": None, "n_images": 0}
        model = self.models.get(params["model"], self.device)
        concepts = ConceptSet.from_bytes(self.store.read("concepts", params["concept_set_sha"]))
        graph = self._graph(ctx, model, concepts, _options(params, GRAPH_OPTIONS), params, start, stop,
                            ctx.checkpoint or {})
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
        """Extraction, graph, exemplars of the concepts the report shows, and the evidence of DESIGN §1.5
        (``gig.evaluate``) in one job.

        Params are those of both jobs, with ``clustering`` and ``quadrature`` naming the two methods; optional
        ``metrics`` and ``evaluation_images`` (gig.evaluate's ``metrics`` and ``max_images``). The evaluation uses
        the graph's own quadrature (``steps``, ``method``, ``top_t`` as the graph recorded them). The result's
        ``seconds`` gives the wall-clock time of each stage (extract, graph, exemplars, evaluate, naming).

        With ``probes`` (a probe dataset, ``worker.probe_sets``), ``gig.naming.name_concepts`` names the concepts
        (negatives: a spread of the audit images) and the stored graph carries the names (``label``,
        ``label_score``) and ``evidence["naming"]``.
        """
        params = ctx.job.params
        model = self.models.get(params["model"], self.device)
        graph_options = _options({**params, "method": params.get("quadrature")}, GRAPH_OPTIONS)
        clock = _StageClock()
        saved = ctx.checkpoint or {}
        with self._dataset(params, progress=ctx.progress) as data:
            probes, negatives = self._probe_sets(params, data)  # bad probes fail before any work is done
            concepts, result = self._checkpointed_concepts(saved)
            if concepts is None:
                saved = {}
                with clock("extract"):
                    extracted = self._extract(model, data, {**params, "method": params.get("clustering")},
                                              ctx.progress)
                    result = self._store_concepts(extracted)
                    # go on with the stored set, as a resumed attempt does
                    concepts = ConceptSet.from_bytes(extracted.to_bytes())
                ctx.save_checkpoint({"concepts": result})
            with clock("graph"):
                graph = self._graph(ctx, model, concepts, graph_options, params, 0, len(data.names), saved,
                                    {"concepts": result})
                if saved.get("images") != graph.n_images:
                    ctx.save_checkpoint({"concepts": result, "graph_sha": self._put_json("graphs", graph.to_dict()),
                                         "images": graph.n_images})
            with clock("exemplars"):
                shown = most_relevant(graph.to_dict(), self.exemplar_concepts)
                result.update(self._store_exemplars(model, concepts, data, params["model"], shown, ctx.progress))
            evaluation = {k: v for k, v in graph.params.items() if k in EVALUATE_OPTIONS
                          and (k != "steps" or isinstance(v, int))}  # steps="auto": gig.evaluate's own steps
            evaluation.update(_options({"metrics": params.get("metrics") or None, "max_images":
                                        params.get("evaluation_images") or None, "seed": params.get("seed")},
                                       ("metrics", "max_images", "seed")))
            with clock("evaluate"):
                evaluated = gig.evaluate(model, data, concepts, graph, progress=fine_progress(ctx.progress),
                                         **evaluation)
                graph.evidence[SCOPE_KEY] = evaluation_scope(model, data, evaluated["images"], self.device)
            stored = graph.to_dict()  # gig.evaluate put the evidence into the graph
            if probes:
                with clock("naming"):
                    ctx.progress("naming", 0, 1)
                    naming = name_concepts(model, concepts, probes, negatives, layers=params.get("layers") or None,
                                           seed=params.get("seed") or 0, device=self.device)
                    stored = label_graph(stored, naming)  # labels on the nodes, evidence["naming"]
                    ctx.progress("naming", 1, 1)
        return {**result, "graph_sha": self._put_json("graphs", stored), "n_images": stored["n_images"],
                "evidence": stored["evidence"], "seconds": clock.seconds}

    def render_exemplars(self, ctx: JobContext) -> dict:
        """PNGs of the exemplars of ``params["concepts"]`` of ``params["layer"]`` that the bundle
        ``params["exemplars_sha"]`` lacks; the result names the updated bundle (all it had, plus these)."""
        params = ctx.job.params
        bundle = self.store.read("exemplars", params["exemplars_sha"])
        concepts = ConceptSet.from_bytes(self.store.read("concepts", params["concept_set_sha"]))
        layer = params["layer"]
        if layer not in concepts.layers:
            raise ValueError(f"layer {layer!r} is not in the concept set; its layers: {', '.join(concepts.layers)}")
        n_concepts = concepts.layers[layer].n_concepts
        wanted = sorted({int(k) for k in params["concepts"]})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < n_concepts:
            raise ValueError(f"concepts must lie in 0..{n_concepts - 1} for layer {layer!r}, not {wanted}")
        done = set(exemplars.rendered_concepts(bundle).get(layer, []))
        missing = {layer: [k for k in wanted if k not in done]}
        if not missing[layer]:
            ctx.progress("exemplars", 1, 1)
            return {"exemplars_sha": params["exemplars_sha"], "rendered_concepts": exemplars.rendered_concepts(bundle)}
        model = self.models.get(params["model"], self.device)
        with self._dataset(params, progress=ctx.progress) as data:
            rendered = self._render_exemplars(model, concepts, data, params["model"], missing, ctx.progress,
                                              exemplars.read_bundle(bundle))
        return self._put_exemplars(rendered)

    def explain_image(self, ctx: JobContext) -> dict:
        """``gig.explain`` of one image in the terms of a concept graph (its layers, quadrature, class names and
        labels). The image comes as a one-image archive (``image_sha``, a datasets artifact), read through the
        dataset checks and preprocessed as the model's record says, like every dataset image. The result holds the
        explanation's numbers; the iERF overlays (WebP) of the concepts kept are an exemplar bundle
        (``overlays_sha``: per source layer and concept, one exemplar at the concept's strongest position)."""
        params, record = ctx.job.params, ctx.job.params["model"]
        ctx.progress("explain", 0, 2)
        model = self.models.get(record, self.device)
        concepts = ConceptSet.from_bytes(self.store.read("concepts", params["concept_set_sha"]))
        graph = json.loads(self.store.read("graphs", params["graph_sha"]))
        with self._dataset_path(params["image_sha"]) as path:
            images = ArchiveImages(path, Preprocessing.from_record(record), batch_size=1, threads=1)
            if len(images.names) != 1:
                raise ValueError(f"the image archive holds {len(images.names)} images, not one")
            image = images.select([0])[0].to(self.device)
        ctx.progress("explain", 1, 2)
        options = {"target": params.get("target_class"), **_options(params, ("top_k",))}
        explanation = gig.explain(model, image, concepts, graph, class_names=_class_names(params) or None,
                                  **options)
        picture = (Preprocessing.from_record(record).unnormalise(image.cpu()) * 255).round().to(torch.uint8) \
            .permute(1, 2, 0).numpy()
        overlays = {layer: [[] for _ in range(lc.n_concepts)] for layer, lc in concepts.layers.items()}
        for segment in explanation["segments"]:
            for c in segment["contributions"]:
                overlays[c["layer"]][c["concept"]] = [{
                    "image": 0, "image_name": "image", "position": c["position"], "coefficient": c["coefficient"],
                    "ierf_png": exemplars.ierf_png(picture, c["ierf"], size=EXPLANATION_OVERLAY_PX)}]
        overlays_sha = self.store.put_bytes("exemplars", exemplars.write_bundle(overlays))
        ctx.progress("explain", 2, 2)
        return {"explanation": explanation_summary(explanation), "overlays_sha": overlays_sha}

    def inspect_dataset(self, ctx: JobContext) -> dict:
        """Inspect a dataset registered by URI where it is (never copied): the URI checked against this worker's
        allow-list, every image read and checked, its classes and sizes found, its content digested (a file's
        sha256; a folder's over its files' names, sizes and sha256s). The result holds the record's fields."""
        params = ctx.job.params
        uri = params["uri"]
        check_uri(uri, self.allowlist)
        ctx.progress("inspect", 0, None)
        info = sources.inspect_dataset(uri, image_column=params.get("image_column") or "",
                                       label_column=params.get("label_column") or "", allowlist=self.allowlist,
                                       threads=default_threads(),
                                       progress=lambda done, total: ctx.progress("inspect", done, total))
        ctx.progress("digest", 0, 1)
        sha, size = content_digest(uri)
        if params.get("sha256") and params["sha256"] != sha:
            raise ValueError(f"the dataset at {uri!r} has the sha256 {sha}, not the {params['sha256']} given")
        ctx.progress("digest", 1, 1)
        return {"format": info.format, "n_images": info.n_images, "class_names": list(info.class_names),
                "image_sizes": dict(info.image_sizes), "sha256": sha, "size_bytes": size,
                "image_bytes": info.total_bytes}

    def noop(self, ctx: JobContext) -> dict:
        """Sleep ``params["sleep"]`` seconds in tenths, reporting progress (and honouring cancellation)."""
        ticks = round(10 * float(ctx.job.params.get("sleep", 0.0)))
        for tick in range(ticks):
            ctx.progress("sleep", tick, ticks)
            time.sleep(0.1)
        ctx.progress("sleep", ticks, ticks)
        return {}

    # ------------------------------------------------------------------ steps
    def _probe_sets(self, params: Mapping, data: ArchiveImages):
        """``(probe sets, negatives)`` of an audit's ``probes`` dataset (``([], None)`` without one): the probes
        checked against and preprocessed like the audit images, the negatives a spread of those images."""
        if not params.get("probes"):
            return [], None
        chosen = negative_indices(len(data.names))
        reference = raw_shape(data.path, chosen, data.limits)
        with self._dataset_path(params["probes"]["sha256"]) as path:
            probes = load_probe_sets(path, params["model"], reference, data.limits)
        return probes, data.select(chosen)

    @contextlib.contextmanager
    def _dataset(self, params: Mapping, start: int = 0, stop: int | None = None, progress=None):
        """Images ``[start, stop)`` of the job's dataset as streamed batches, preprocessed as the model expects and
        labelled with the model's classes; a dataset registered by URI is read where it is (its URI checked against
        this worker's allow-list). ``progress``: ``JobContext.progress``, told of the indexing pass ("decode").
        Labels that are class indices (class names "0" … "n-1" of a WebDataset, parquet, HF dataset or manifest)
        are the model's class indices; class names are matched by name."""
        record, dataset = params["model"], params["dataset"]
        names = dataset.get("class_names") or []
        indices = dataset["format"] not in ("tar", "zip") and names == [str(i) for i in range(len(names))]
        class_map = None if indices else _class_map(names, record.get("class_names") or [])
        with self._dataset_location(dataset) as location:
            yield ArchiveImages(
                location, Preprocessing.from_record(record), format=dataset["format"],
                image_column=dataset.get("image_column") or "", label_column=dataset.get("label_column") or "",
                class_names=names, allowlist=self.allowlist, start=start, stop=stop, batch_size=self.batch_size,
                class_map=class_map, expected_images=dataset.get("n_images"),
                progress=None if progress is None else lambda done, total: progress("decode", done, total))

    @contextlib.contextmanager
    def _dataset_location(self, dataset: Mapping):
        """Where the dataset is read: its URI (read in place, allow-list checked), else its stored artifact."""
        if dataset.get("uri"):
            check_uri(dataset["uri"], self.allowlist)
            yield dataset["uri"]
            return
        with self._dataset_path(dataset["sha256"]) as path:
            yield path

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
        return gig.extract_concepts(model, data, layers, device=self.device, progress=fine_progress(progress),
                                    n_exemplars=self.n_exemplars, **_options(params, EXTRACT_OPTIONS))

    def _store_concepts(self, concepts: ConceptSet) -> dict:
        """Store the concept set: its sha, per-layer statistics and the options gig used (defaults included)."""
        stats = concepts.params["decomposition"]  # measured by extract_concepts' second pass
        return {
            "concept_set_sha": self.store.put_bytes("concepts", concepts.to_bytes()),
            "layers": {layer: {"n_concepts": lc.n_concepts, **stats[layer]} for layer, lc in concepts.layers.items()},
            "options": {"method": concepts.method, "lam": concepts.lam,
                        **{k: concepts.params[k] for k in ("sampling", "pfvs_per_image", "seed")
                           if k in concepts.params}},
        }

    def _store_exemplars(self, model, concepts, data, record, shown, progress) -> dict:
        """Render the ``shown`` concepts' exemplars; store the bundle (references of all concepts)."""
        return self._put_exemplars(self._render_exemplars(model, concepts, data, record, shown, progress))

    def _put_exemplars(self, layers: dict) -> dict:
        bundle = exemplars.write_bundle(layers)
        return {"exemplars_sha": self.store.put_bytes("exemplars", bundle),
                "rendered_concepts": exemplars.rendered_concepts(bundle)}

    def _render_exemplars(self, model, concepts: ConceptSet, data: ArchiveImages, record, shown: Mapping,
                          progress, existing: Mapping | None = None) -> dict:
        """``{layer: [per concept: [exemplar]]}`` of every concept, with PNG thumbnails (iERF crops) and iERF
        overlays for the exemplars of the ``shown`` concepts (``{layer: [concept]}``); the PNGs of ``existing`` (a
        read bundle) are kept. Each image is decoded once; one forward and one backward per batch of rows."""
        normalisation = {"mean": record.get("mean") or [0.0] * 3, "std": record.get("std") or [1.0] * 3}
        found = {layer: lc.exemplars or [[] for _ in range(lc.n_concepts)] for layer, lc in concepts.layers.items()}
        rows = {layer: [(k, e) for k in sorted(set(shown.get(layer, []))) for e in found[layer][k]]
                for layer in concepts.layers}  # layer -> [(concept, exemplar)] to render
        ids = sorted({e.image for chosen in rows.values() for _, e in chosen})
        pictures = dict(zip(ids, data.select(ids))) if ids else {}
        total, done = sum(len(r) for r in rows.values()), 0
        layers = {}
        for layer, lc in concepts.layers.items():
            pngs = {}
            for start in range(0, len(rows[layer]), self.batch_size):
                progress("exemplars", done, total)
                chunk = rows[layer][start:start + self.batch_size]
                batch = torch.stack([pictures[e.image] for _, e in chunk])
                pngs.update(self._exemplar_pngs(model, layer, concepts.vectors(layer), chunk, batch, normalisation))
                done += len(chunk)
            kept = (existing or {}).get(layer) or [[] for _ in range(lc.n_concepts)]
            layers[layer] = [[{"image": e.image, "image_name": data.names[e.image], "position": e.position,
                               "coefficient": e.coefficient, **_pngs_of(kept[k], e), **pngs.get((k, e), {})}
                              for e in found[layer][k]] for k in range(lc.n_concepts)]
        progress("exemplars", total, total)
        return layers

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

    def _graph(self, ctx: JobContext, model, concepts, options, params, start: int, stop: int, saved: Mapping,
               keep: Mapping | None = None):
        """The graph of images ``[start, stop)``, one batch at a time from the checkpoint ``saved`` on; partial
        graphs are checkpointed (with ``keep``) whenever one is due."""
        graph, done = self._checkpointed_graph(saved, stop - start)
        total = stop - start
        pairs = len(params.get("layers") or concepts.layers)  # units: images × layer pairs
        ctx.progress("graph", done * pairs, total * pairs)
        if done < total:
            with self._dataset(params, start + done, stop, progress=ctx.progress) as data:
                for batch in data:
                    def pair_done(stage, units, _, before=done * pairs):
                        if stage == "graph:fine" and units:
                            ctx.progress("graph", before + units, total * pairs)

                    part = gig.build_graph(model, [batch], concepts, layers=params.get("layers") or None,
                                           device=self.device, class_names=_class_names(params),
                                           start_index=start + done, progress=pair_done, **options)
                    graph = part if graph is None else graph.merge(part)
                    done += part.n_images
                    if done < total and ctx.checkpoint_due():  # before the report, which may stop the job
                        ctx.save_checkpoint({**(keep or {}), "graph_sha": self._put_json("graphs", graph.to_dict()),
                                             "images": done})
                    ctx.progress("graph", done * pairs, total * pairs)
        if graph is None:
            raise ValueError("the dataset has no images to build a graph from")
        return graph

    def _checkpointed_graph(self, saved: Mapping, total: int):
        """``(partial graph, images done)`` of a checkpoint; ``(None, 0)`` when it has none (or it is unusable)."""
        if not saved.get("graph_sha"):
            return None, 0
        try:
            graph = gig.ConceptGraph.from_dict(json.loads(self.store.read("graphs", saved["graph_sha"])))
        except (KeyError, ValueError) as exc:
            log.warning("checkpoint unusable (%s); the graph starts over", exc)
            return None, 0
        if graph.n_images != saved.get("images") or not 0 < graph.n_images <= total:
            log.warning("checkpoint of %s images for a graph of %s; the graph starts over", graph.n_images, total)
            return None, 0
        return graph, graph.n_images

    def _checkpointed_concepts(self, saved: Mapping):
        """``(concept set, its stored result)`` of an audit's checkpoint; ``(None, None)`` when it has none."""
        result = saved.get("concepts")
        if not result:
            return None, None
        try:
            return ConceptSet.from_bytes(self.store.read("concepts", result["concept_set_sha"])), dict(result)
        except (KeyError, ValueError) as exc:
            log.warning("checkpointed concept set unusable (%s); extracting again", exc)
            return None, None

    def _graph_result(self, graph) -> dict:
        data = graph.to_dict()
        return {"graph_sha": self._put_json("graphs", data), "n_images": data["n_images"],
                "completeness": data.get("evidence", {}).get("completeness", {})}

    def _put_json(self, kind: str, value) -> str:
        return self.store.put_bytes(kind, json.dumps(value, sort_keys=True).encode())


# Progress: gig reports decompose and evaluate per batch / metric, and in finer units as "<stage>:fine"; a job
# reports the fine ones under the stage's name (and not the coarse ones), so every bar moves every few seconds.
FINE_STAGES = ("decompose", "evaluate")
#: The audit evidence key of the evaluation's scope and prediction statistics (see ``evaluation_scope``).
SCOPE_KEY = "evaluation_scope"


def fine_progress(progress):
    """``progress`` fed with gig's fine units where it has them (``FINE_STAGES``), its own units elsewhere."""
    def report(stage: str, done: int, total: int | None) -> None:
        base, _, fine = stage.partition(":")
        if fine == "fine":
            progress(base, done, total)
        elif stage not in FINE_STAGES:
            progress(stage, done, total)
    return report


def evaluation_scope(model, data, n_evaluated: int, device) -> dict:
    """How many images ``gig.evaluate`` evaluated (its first ``n_evaluated``) out of the dataset's, and statistics
    of the model's predictions on them that flag an untrained model:

    ``{"images_evaluated", "images_total", "num_classes", "mean_max_softmax"`` (mean over the images of the largest
    softmax probability; ``1 / num_classes`` for uniform predictions), ``"uniform_max_softmax"`` (that
    ``1 / num_classes``), ``"predicted_class_entropy"`` (entropy in nats of the histogram of predicted classes;
    0 when every image gets the same class), ``"predicted_class_entropy_max"`` (``log(min(images, classes))``,
    its largest possible value), ``"predicted_classes"`` (the histogram)``}``."""
    logits, taken = [], 0
    with torch.no_grad():
        for batch in data:
            images = (batch[0] if isinstance(batch, (list, tuple)) else batch)[: n_evaluated - taken]
            if not len(images):
                break
            logits.append(model(images.to(device)).float().cpu())
            taken += len(images)
            if taken >= n_evaluated:
                break
    logits = torch.cat(logits)
    num_classes = logits.shape[1]
    counts = torch.bincount(logits.argmax(1), minlength=num_classes)
    share = counts[counts > 0].double() / counts.sum()
    return {"images_evaluated": int(logits.shape[0]), "images_total": len(data.names), "num_classes": num_classes,
            "mean_max_softmax": round(float(logits.softmax(1).amax(1).mean()), 6),
            "uniform_max_softmax": round(1 / num_classes, 6),
            "predicted_class_entropy": round(float(-(share * share.log()).sum()), 6),
            "predicted_class_entropy_max": round(math.log(max(1, min(int(logits.shape[0]), num_classes))), 6),
            "predicted_classes": counts.tolist()}


#: Pixels on the longer side of an explanation's iERF overlays (exemplar views are 96 px).
EXPLANATION_OVERLAY_PX = 160


def explanation_summary(explanation: dict) -> dict:
    """The JSON result of ``explain_image``: ``gig.explain``'s record without the iERF maps and the per-target
    matrices (the overlays carry the maps; the API builds ``ImageExplanation`` from this)."""
    keep = ("node", "layer", "concept", "label", "attribution", "share", "coefficient", "position")
    return {
        **{k: explanation[k] for k in ("predicted_class", "predicted_label", "target_class", "target_label",
                                       "probabilities", "params")},
        "layers": [{"source": s["source"], "target": s["target"], "targets": s["targets"], "residual": s["residual"],
                    "contributions": [{k: c[k] for k in keep} for c in s["contributions"]]}
                   for s in explanation["segments"]],
        "completeness": {f"{s['source']}->{s['target']}": {**s["completeness"], "steps": s["steps"],
                                                            "method": s["method"], "converged": s["converged"]}
                         for s in explanation["segments"]},
    }


def layer_listing(model) -> dict:
    """``{"layers": [{name, type, is_cut, reason, capture, can_be_source}], "default_layers": [...]}`` of a model
    (with the tracer options ``gig.configure_tracing`` attached to it).

    ``capture``: ``"fx"`` (a node of the traced graph) or ``"hook"`` (a forward hook: ``hooked_layers``, whose cuts
    passed the replace-and-compare test, docs/tracing.md). ``can_be_source``: a cut whose output comes before the
    logits, so that something follows it to attribute to (the classifier, whose output is the logits, is a cut
    but can be no analysed layer)."""
    t = traced(model)
    try:
        default = gig.default_layers(model)
    except ValueError:  # no sensible default: the caller must name layers
        default = []
    layers = [{**asdict(info), "can_be_source": t.can_be_source(info.name)} for info in gig.list_layers(model)]
    return {"layers": layers, "default_layers": default}


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


class _StageClock:
    """Wall-clock seconds per stage of a job (``with clock("graph"): ...``), reported in its result."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


def most_relevant(graph: dict, n: int) -> dict[str, list[int]]:
    """``{layer: [concept index]}``: the ``n`` most relevant concepts of every analysed layer of a graph dict,
    ranked as the report ranks them (``ConceptGraph.overall_relevance``, ties in node order), so the concepts
    rendered are the ones the report shows first."""
    view = GraphView(graph)
    relevance = view.overall_relevance()
    shown = {}
    for layer in view.concept_layers:
        nodes = [node for node in view.layer_nodes(layer) if node.get("kind", "concept") == "concept"]
        ranked = sorted(nodes, key=lambda node: -relevance.get(node["id"], 0.0))  # stable: node order on ties
        shown[layer] = sorted(node["index"] for node in ranked[:n])
    return shown


def _top(score: torch.Tensor, n: int) -> list[int]:
    """The indices of the ``n`` largest scores (NaN counts as 0), ascending."""
    return sorted(torch.argsort(torch.nan_to_num(score, nan=0.0), descending=True, stable=True)[:n].tolist())


def _pngs_of(exemplars_of_concept: list[dict], exemplar) -> dict:
    """The PNGs a read bundle holds for ``exemplar`` (same image and position), if any."""
    for old in exemplars_of_concept:
        if (old["image"], old["position"]) == (exemplar.image, exemplar.position):
            return {k: old[k] for k in exemplars.PNG_KEYS if k in old}
    return {}


def _class_names(params: Mapping) -> list[str] | None:
    """The model's class names, else the dataset's class folders when there is one per model class."""
    model, dataset = params["model"], params.get("dataset") or {}
    folders = dataset.get("class_names") or []
    return model.get("class_names") or (folders if len(folders) == model["num_classes"] else None)


def _checked_params(kind: str, handler):
    """``handler`` after a check of the job's parameters against the schema of ``kind`` (``ValueError`` when they
    do not fit: bad input, the job fails at once)."""
    def checked(ctx: JobContext) -> dict:
        try:
            schemas.parse(kind, ctx.job.params)
        except schemas.ValidationError as exc:
            raise ValueError(f"the job's parameters do not fit {kind!r}: {schemas.describe(exc)}") from None
        return handler(ctx)
    checked.__doc__ = handler.__doc__
    return checked


def _options(params: Mapping, names) -> dict:
    """The ``names`` that ``params`` holds (``None`` = absent): passed on to gig, whose keyword defaults fill in
    the others."""
    return {key: params[key] for key in names if params.get(key) is not None}
