"""Why one image was classified as it was: GIG along that image's path, segment by segment (DESIGN §1.3).

The image runs through the analysed layers ``a_1 … a_L`` once; every layer is decomposed into the concept set's
coefficients. The segments are explained from the logits backwards:

- ``a_L → logits``: the target is the class ``y`` (the prediction unless ``target`` is given), as
  :func:`gig.build_graph` targets it (``class_target``, by default the contrastive logit). ``A_q`` is
  ``GIG(q → y)`` of every concept ``q`` of ``a_L``.
- ``a_i → a_{i+1}``: the targets are the concepts ``r`` of ``a_{i+1}`` that carried the next segment
  (``A_r ≠ 0``), each the masked projection sum ``g_r`` of :mod:`gig.targets`. GIG is linear in its target, so
  the segment explains ``g = Σ_r w_r g_r`` with ``w_r = A_r / Σ_r' |A_r'|`` (the signed share of ``r`` in the next
  segment): ``A_q = Σ_r w_r GIG(q → r)``. A concept that feeds a concept which argues against ``y`` gets the
  opposite sign. The per-target values ``GIG(q → r)`` are those of the concept graph built on this image alone.

Completeness per segment, as :mod:`gig.evaluation.completeness` defines it: ``Σ_q A_q`` (plus the residual row on
the activation path) against the target's change ``g(F(X(1))) − g(F(X(0)))``, with the absolute error ``delta``
and the ``relative`` error of :func:`gig.attribution.completeness_delta`. Per segment the ``top_k`` concepts by
``|A_q|`` are reported with their coefficient in the image (summed over positions) and the iERF map
(:func:`gig.erf`) of their strongest position, along their concept vector.
"""
from __future__ import annotations

import numpy as np
from collections.abc import Sequence

import torch
from torch import nn

from gig.concepts.conceptset import ConceptSet
from gig.attribution import PATHS, check_steps, completeness_delta, integrate_to_tolerance
from gig.build import check_concept_layers
from gig.data import check_images, eval_mode
from gig.erf import erf
from gig.graph import ConceptGraph, node_id
from gig.layers import LOGITS, traced
from gig.pfv import to_pfvs
from gig.quadrature import DEFAULT, check_method
from gig.targets import DEFAULT_CLASS_TARGET, check_class_target, class_targets, concept_targets
from gig.types import Steps

DEFAULT_TOP_K = 5


def explain(model: nn.Module, image: torch.Tensor, concepts: ConceptSet, graph: ConceptGraph | dict | None = None,
            *, layers: Sequence[str] | None = None, target: int | str | None = None,
            top_k: int | None = DEFAULT_TOP_K, steps: Steps = None, method: str | None = None,
            path: str | None = None, class_target: str | None = None, tolerance: float | None = None,
            class_names: Sequence[str] | None = None) -> dict:
    """The concepts that carried ``image``'s class ``target`` (default: the predicted class) at every analysed layer.

    ``image``: ``(3, H, W)`` or ``(1, 3, H, W)``, preprocessed like the model's input. ``concepts``: a
    :class:`gig.ConceptSet`. ``graph``: the concept graph (a :class:`gig.ConceptGraph` or its dict) to explain in
    the terms of: its layers, quadrature (``steps``, ``method``, ``path``, ``class_target``, ``tolerance``), class
    names and node labels are used unless given here; without it, gig's defaults and all of the concept set's
    layers. ``top_k``: concepts reported per segment (``None``: all).

    Returns (JSON-able apart from the iERF maps, numpy ``(H, W)`` arrays that sum to 1)::

        {"predicted_class", "predicted_label", "target_class", "target_label", "probabilities": [...],
         "logits": [...], "layers": [analysed layers], "params": {steps, method, path, class_target, tolerance},
         "segments": [{"source", "target", "steps", "method", "converged",
                       "targets": [{"node", "index", "weight"}],      # what g combines (one class at the logits)
                       "attributions": [A_q per concept], "residual": float or None,
                       "per_target": [[GIG(q → r) per target] per concept],
                       "contributions": [{"node", "layer", "concept", "label", "attribution", "share",
                                          "coefficient", "position", "ierf"}],   # top_k by |A_q|
                       "completeness": {"attribution_sum", "target_difference", "delta", "relative"}}],
         "completeness": {"<source>-><target>": the segment's completeness}}

    ``segments`` are in forward order; ``share`` is ``A_q / Σ|A|`` over the segment's concepts.
    """
    graph = _graph_dict(graph)
    settings = _settings(graph, steps, method, path, class_target, tolerance)
    start_steps, tolerance = check_steps(settings["steps"], settings["tolerance"])
    if layers is None and graph is not None:
        layers = [layer for layer in graph["layers"] if layer != LOGITS]
    layers = check_concept_layers(model, concepts, layers)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None (all), not {top_k!r}")
    x = _one_image(model, image)
    t = traced(model)
    with eval_mode(model), torch.no_grad():
        outputs = t.prefix(layers)(x)
    logits = outputs[LOGITS]
    n_classes = logits.shape[1]
    predicted = int(logits.argmax(1))
    names = _class_names(graph, class_names, n_classes)
    target_class = predicted if target is None else _check_class(target, n_classes, names)
    labels = {n["id"]: n["label"] for n in (graph or {}).get("nodes", []) if n.get("label")}

    coefficients, vectors = {}, {}
    for layer in layers:
        vectors[layer] = concepts.vectors(layer).to(device=logits.device, dtype=logits.dtype)
        coefficients[layer] = concepts.decompose(layer, to_pfvs(outputs[layer])).to(logits.dtype)

    segments, relevance = [], None  # relevance: A_r of the concepts of the segment's target layer
    pairs = list(zip(layers, layers[1:] + [LOGITS]))
    with eval_mode(model):
        for source, target_layer in reversed(pairs):
            if target_layer == LOGITS:
                chosen, per_target_weights = class_targets(logits, targets=torch.tensor([[target_class]]),
                                                           class_target=settings["class_target"])
                mix = torch.ones(1, dtype=logits.dtype, device=logits.device)
            else:
                order = torch.argsort(relevance.abs(), descending=True, stable=True)
                order = order[relevance[order] != 0]
                if not len(order):  # nothing carried the next segment: explain the strongest concept alone
                    order = relevance.abs().argmax().reshape(1)
                chosen, per_target_weights = concept_targets(coefficients[target_layer], vectors[target_layer],
                                                             outputs[target_layer].shape, targets=order.unsqueeze(0))
                total = relevance.abs().sum()
                mix = relevance[order] / total if total > 0 else torch.ones_like(relevance[order])
            result = integrate_to_tolerance(
                t.segment(source, target_layer), coefficients[source], vectors[source], outputs[source].shape,
                per_target_weights, start_steps, tolerance, settings["method"], settings["path"],
                activation=outputs[source], name=f"{source}->{target_layer}")
            per_target = result.attributions[0]  # (K (+1), T)
            combined = per_target @ mix  # (K (+1),)
            difference = result.target_difference[0] @ mix
            k = vectors[source].shape[0]
            segment = _segment(model, x, source, target_layer, chosen[0], mix, per_target, combined, difference,
                               coefficients[source][0], vectors[source], top_k, labels, names, result)
            segments.append(segment)
            relevance = combined[:k]
    segments.reverse()
    probabilities = logits.softmax(1)[0]
    return {
        "predicted_class": predicted, "predicted_label": names[predicted] if names else None,
        "target_class": target_class, "target_label": names[target_class] if names else None,
        "probabilities": probabilities.tolist(), "logits": logits[0].tolist(), "layers": list(layers),
        "params": {**settings, "tolerance": tolerance}, "segments": segments,
        "completeness": {f"{s['source']}->{s['target']}": s["completeness"] for s in segments},
    }


def _segment(model, x, source, target_layer, chosen, mix, per_target, combined, difference, coefficients, vectors,
             top_k, labels, names, result) -> dict:
    """One segment's record (see :func:`explain`), with the iERF maps of its top concepts."""
    k = vectors.shape[0]
    concept_values = combined[:k]
    total = float(concept_values.abs().sum())
    ranked = torch.argsort(concept_values.abs(), descending=True, stable=True)[:top_k or k].tolist()
    positions = coefficients.abs().argmax(0)  # (K,) each concept's strongest position in the image
    maps = erf(model, x.expand(len(ranked), *x.shape[1:]), source, positions[ranked],
               vectors[ranked]).cpu().numpy() if ranked else []
    contributions = []
    for q, heat in zip(ranked, maps):
        nid = node_id(source, q)
        contributions.append({
            "node": nid, "layer": source, "concept": q, "label": labels.get(nid), "attribution": float(combined[q]),
            "share": float(combined[q]) / total if total else 0.0, "coefficient": float(coefficients[:, q].sum()),
            "position": int(positions[q]), "ierf": heat})
    error = completeness_delta(combined.reshape(1, -1, 1), difference.reshape(1, 1))
    targets = [{"node": node_id(target_layer, int(r)), "index": int(r), "weight": float(w),
                **({"label": names[int(r)] if names else None} if target_layer == LOGITS
                   else {"label": labels.get(node_id(target_layer, int(r)))})}
               for r, w in zip(chosen.tolist(), mix.tolist())]
    return {
        "source": source, "target": target_layer, "steps": result.steps, "method": result.method,
        "converged": result.converged, "targets": targets, "attributions": concept_values.tolist(),
        "residual": float(combined[k]) if combined.shape[0] > k else None, "per_target": per_target.tolist(),
        "contributions": contributions,
        "completeness": {"attribution_sum": float(combined.sum()), "target_difference": float(difference),
                         "delta": float((combined.sum() - difference).abs()), "relative": float(error)},
    }


def _settings(graph, steps, method, path, class_target, tolerance) -> dict:
    """The quadrature and target settings: the caller's, else the graph's, else gig's defaults."""
    params = (graph or {}).get("params") or {}

    def pick(value, name, default):
        if value is not None:
            return value
        return params.get(name) if params.get(name) is not None else default

    settings = {"steps": pick(steps, "steps", None), "method": pick(method, "method", DEFAULT),
                "path": pick(path, "path", "reconstruction"),
                "class_target": pick(class_target, "class_target", DEFAULT_CLASS_TARGET),
                "tolerance": pick(tolerance, "tolerance", None)}
    check_method(settings["method"])
    check_class_target(settings["class_target"])
    if settings["path"] not in PATHS:
        raise ValueError(f"unknown path {settings['path']!r}; valid paths are: {', '.join(PATHS)}")
    return settings


def _graph_dict(graph) -> dict | None:
    if graph is None or isinstance(graph, dict):
        return graph
    if isinstance(graph, ConceptGraph):
        return graph.to_dict()
    raise ValueError(f"graph must be a ConceptGraph, its dict or None, not {type(graph).__name__}")


def _one_image(model, image) -> torch.Tensor:
    if isinstance(image, torch.Tensor) and image.dim() == 3:
        image = image.unsqueeze(0)
    image = check_images(image)
    if image.shape[0] != 1:
        raise ValueError(f"explain takes one image, (3, H, W) or (1, 3, H, W), not {tuple(image.shape)}")
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return image
    return image.to(device=parameter.device, dtype=parameter.dtype)


def _check_class(target, n_classes: int, names) -> int:
    if isinstance(target, str) and names and target in names:
        return names.index(target)
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)) \
            or not 0 <= int(target) < n_classes:
        choices = f" or one of {names}" if names else ""
        raise ValueError(f"target must be a class index in 0..{n_classes - 1}{choices} (or None: the predicted "
                         f"class), not {target!r}")
    return int(target)


def _class_names(graph, class_names, n_classes: int) -> list[str] | None:
    names = list(class_names or (graph or {}).get("classes") or [])
    if names and len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for a model with {n_classes} classes")
    return [str(n) for n in names] or None
