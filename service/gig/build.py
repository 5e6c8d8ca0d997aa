"""Build the dataset-wide concept graph (DESIGN §1.4): one prefix forward per batch, then GIG for every layer pair.

Per batch: the prefix runs once and returns every analysed activation and the logits; each layer is decomposed
once; GIG then runs from each layer to the next (``a_i → a_{i+1}``) and from the last layer to the logits, each
pair through its own segment only. Per image, every target's attributions are added to the graph's edges; the
completeness delta of every pair (with the quadrature rule used and, for a tolerance run, whether every batch
met it) and the reconstruction error of every layer are added to its evidence. Graphs of dataset shards
(``start_index`` = the shard's first image) merge into the graph of the whole dataset.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gig.concepts.conceptset import ConceptSet
from gig.attribution import PATHS, check_steps, class_targets, completeness_delta, concept_targets, \
    integrate_to_tolerance
from gig.targets import DEFAULT_CLASS_TARGET, check_class_target
from gig.data import eval_mode, iter_batches
from gig.graph import ConceptGraph, completeness_entry, merge_evidence, reconstruction_entry
from gig.layers import LOGITS, traced
from gig.pfv import to_pfvs
from gig.quadrature import DEFAULT, check_method
from gig.types import Data, Device, Progress, Steps


def build_graph(model: nn.Module, data: Data, concepts: ConceptSet, layers: Sequence[str] | None = None,
                steps: Steps = None, top_t: int = 5, method: str = DEFAULT, path: str = "reconstruction",
                max_batch_rows: int | None = None, device: Device = None, progress: Progress | None = None,
                class_names: Sequence[str] | None = None, start_index: int = 0, tolerance: float | None = None,
                class_target: str = DEFAULT_CLASS_TARGET) -> ConceptGraph:
    """The concept graph of ``model`` over ``data`` (images or ``(images, labels)`` batches).

    ``concepts``: a :class:`gig.ConceptSet` covering ``layers`` (default: all of its layers). Targets per image:
    its ``top_t`` concepts of the next layer (at most that layer's ``K``) and, at the logits, its label when the
    data has labels, else its predicted class — that class is also the image's class for class-conditional views.
    ``steps``/``method``: the quadrature (``method="auto"``: per pair, ``loglegendre`` on scale-invariant segments,
    else ``gausslegendre``; ``steps=None``: the rule's default); ``steps="auto"`` (or a ``tolerance``) doubles the
    steps of each pair and batch from there (or ``steps``) until its completeness error is at most ``tolerance``
    (default 1e-2), and warns when 512 steps do not (evidence ``converged: false``). ``class_target``: the target
    at the logits, ``"logit"`` or ``"contrastive"``. ``path``: ``"reconstruction"`` (paper) or ``"activation"``
    (adds a residual node per layer). ``start_index``: dataset index of the first image, so shards report global image
    ids. ``progress("graph", images_done, total_or_None)`` after every batch, and ``progress("graph:fine",
    units_done, units_total_or_None)`` after every layer pair of every batch (units: images × layer pairs).
    """
    t = traced(model)
    layers = check_concept_layers(model, concepts, layers)
    check_method(method)
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid paths are: {', '.join(PATHS)}")
    start_steps, tolerance = check_steps(steps, tolerance)
    check_class_target(class_target)
    if isinstance(top_t, bool) or not isinstance(top_t, int) or top_t < 1:
        raise ValueError(f"top_t must be a positive integer, not {top_t!r}")
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"start_index must be a non-negative integer, not {start_index!r}")
    device = _check_device(model, device)
    report = progress or (lambda stage, done, total: None)
    params = {"steps": steps, "method": method, "path": path, "top_t": top_t, "lam": concepts.lam,
              "relative_lam": bool(concepts.lam_scales), "nonneg": concepts.nonneg, "class_target": class_target,
              "tolerance": tolerance}
    prefix = t.prefix(layers)
    pairs = list(zip(layers, layers[1:] + [LOGITS]))
    total = _n_images(data)
    graph, evidence = None, {}
    units = None if total is None else total * len(pairs)
    report("graph", 0, total)
    report("graph:fine", 0, units)
    with eval_mode(model):
        for batch in iter_batches(data, device):
            with torch.no_grad():
                outputs = prefix(batch.images)
            logits = outputs[LOGITS]
            if graph is None:
                graph = ConceptGraph({layer: concepts.layers[layer].n_concepts for layer in layers}, logits.shape[1],
                                     class_names, params, residual=path == "activation")
            first = start_index + graph.n_images
            classes = batch.labels if batch.labels is not None else logits.argmax(1)
            image_ids = torch.arange(first, first + logits.shape[0])
            coefficients, reconstruction, completeness = {}, {}, {}
            for layer in layers:
                pfvs = to_pfvs(outputs[layer])
                coefficients[layer] = coef = concepts.decompose(layer, pfvs).to(pfvs.dtype)
                graph.add_presence(layer, coef, classes, image_ids)
                reconstruction[layer] = _reconstruction(pfvs, coef, concepts.reconstruct(layer, coef))
            for done_pairs, (source, target) in enumerate(pairs, 1):
                if target == LOGITS:
                    chosen, weights = class_targets(logits, labels=classes, class_target=class_target)
                else:
                    k_target = concepts.layers[target].n_concepts
                    chosen, weights = concept_targets(coefficients[target], _vectors(concepts, target, logits),
                                                      outputs[target].shape, top_t=min(top_t, k_target))
                pair = f"{source}->{target}"
                result = integrate_to_tolerance(
                    t.segment(source, target), coefficients[source], _vectors(concepts, source, logits),
                    outputs[source].shape, weights, start_steps, tolerance, method, path, activation=outputs[source],
                    max_batch_rows=max_batch_rows, name=f"pair {pair} (images {first}..{first + len(classes) - 1})")
                graph.add_attributions(source, target, result.attributions, chosen, classes)
                completeness[pair] = _completeness(result, tolerance)
                report("graph:fine", (first - start_index) * len(pairs) + len(classes) * done_pairs, units)
            evidence = merge_evidence(evidence, {"completeness": completeness, "reconstruction": reconstruction})
            graph.add_images(logits.shape[0])
            report("graph", graph.n_images, total)
    graph.evidence = evidence
    return graph


def check_concept_layers(model, concepts, layers) -> list[str]:
    """``layers`` (default: all of the concept set's) in forward order, checked against ``concepts`` and ``model``."""
    known = list(getattr(concepts, "layers", None) or [])
    if not known:
        raise ValueError(f"concepts must be a ConceptSet with at least one layer, not {type(concepts).__name__}")
    layers = known if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    missing = [layer for layer in layers if layer not in known]
    if missing:
        raise ValueError(f"the concept set has no concepts for {missing}; its layers are: {', '.join(known)}")
    return traced(model).check_layers(layers)


def _vectors(concepts, layer: str, like: torch.Tensor) -> torch.Tensor:
    return concepts.vectors(layer).to(device=like.device, dtype=like.dtype)


def _completeness(result, tolerance) -> dict:
    attributions, difference = result.attributions, result.target_difference
    delta = completeness_delta(attributions, difference)
    return completeness_entry(delta.numel(), float(delta.sum()), float(delta.max()),
                              float((attributions.sum(1) - difference).abs().sum()), float(difference.abs().sum()),
                              result.steps, result.method, result.converged, tolerance)


def _reconstruction(pfvs: torch.Tensor, coef: torch.Tensor, rebuilt: torch.Tensor) -> dict:
    return reconstruction_entry(float((pfvs - rebuilt).double().pow(2).sum()), float(pfvs.double().pow(2).sum()),
                                int((coef != 0).sum()), coef.numel())


def _check_device(model, device) -> torch.device:
    parameter = next(model.parameters(), None)
    own = parameter.device if parameter is not None else torch.device("cpu")
    if device is not None and torch.device(device).type != own.type:
        raise ValueError(f"the model is on {own} but device={device}; move the model or pass device={own}")
    return own


def _n_images(data) -> int | None:
    """The number of images when it is known without iterating (a tensor or a list of batches), else ``None``."""
    if isinstance(data, torch.Tensor):
        return data.shape[0]
    if isinstance(data, (list, tuple)):
        try:
            return sum((item[0] if isinstance(item, (list, tuple)) else item).shape[0] for item in data)
        except (AttributeError, IndexError, TypeError):
            return None
    return None
