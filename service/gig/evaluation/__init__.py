"""Built-in evaluation of concepts and GIG graphs (DESIGN §1.5): every graph carries its own evidence.

:func:`evaluate` runs the chosen metrics on the first ``max_images`` images of ``data``; each family lives in its
own module: :mod:`.completeness`, :mod:`.reconstruction`, :mod:`.deletion` (with the orderings of :mod:`.orders`),
:mod:`.fidelity`, :mod:`.stability` and :mod:`.sanity`. Layer pairs are the consecutive analysed layers and the
last one to ``"logits"`` (there the deletion curves are C-Del / C-Ins towards the class).

Result (JSON-able; sections only for the metrics asked for)::

    completeness:   {"a->b": {"dataset_delta", "delta_mean", "delta_max", "n_targets", "steps", "method",
                              "versus_steps": [{"steps", "dataset_delta", "delta_mean", "delta_max", "n_targets"}]}}
                    ("method": the quadrature rule used for the pair; the graph's own entries also carry
                    "converged" and "tolerance", see gig.build)
    reconstruction: {"layer": {"relative_error", "l0", "spliced_top1", "spliced_kl", "n_images"}}
    deletion:       {"a->b": {"readout", "orders": {name: {"deletion_auc", "insertion_auc", "deletion_curve",
                              "insertion_curve"}}, "gig_beats": {name: {"deletion", "insertion"}}, "n_rows",
                              "n_points"}}
    target_deletion: the same, following GIG's own target ``g`` (masked projection sum, or the logit) instead of
                    the paper's maximum projection / class probability: the direct test of the attribution
    fidelity:       {"a->b": {"mu_fidelity", "n_rows", "n_subsets", "fraction"}}
    stability:      {"noise": {"top_k_overlap", "rank_correlation", "top_k", "n_edges", "noise_std"},
                     "seeds": {"layer": {"mean_cosine", "min_cosine", "matched"}} or {"skipped": reason}}
    sanity:         {"top_k_overlap", "rank_correlation", "top_k", "n_edges"}
    images:         number of images evaluated

With ``graph``, its ``evidence`` is updated: the graph's own dataset-wide completeness and reconstruction entries
(from :func:`gig.build_graph`) keep their figures and gain ``versus_steps`` and the spliced agreement; every
other section is set.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gig.concepts.conceptset import ConceptSet
from gig.build import build_graph, check_concept_layers
from gig.concepts import extract_concepts
from gig.data import check_reiterable, eval_mode, iter_batches, n_batches
from gig.evaluation.completeness import completeness, n_integrations
from gig.evaluation.deletion import deletion_insertion
from gig.evaluation.fidelity import mu_fidelity
from gig.evaluation.orders import ORDERS, check_orders
from gig.evaluation.pairs import analyse, pair_problem
from gig.evaluation.reconstruction import reconstruction
from gig.evaluation.sanity import weight_randomization
from gig.evaluation.stability import concept_stability, noise_stability
from gig.graph import ConceptGraph
from gig.layers import LOGITS
from gig.quadrature import DEFAULT, check_method
from gig.targets import DEFAULT_CLASS_TARGET, check_class_target
from gig.types import Data, Progress, Steps

METRICS = ("completeness", "reconstruction", "deletion", "target_deletion", "fidelity", "stability", "sanity")
DEFAULT_METRICS = ("completeness", "reconstruction", "deletion", "target_deletion", "fidelity")


def evaluate(model: nn.Module, data: Data, concepts: ConceptSet, graph: ConceptGraph | None = None,
             layers: Sequence[str] | None = None, metrics: Sequence[str] = DEFAULT_METRICS, steps: Steps = None,
             max_images: int = 16, seed: int = 0, progress: Progress | None = None, *, method: str = DEFAULT,
             top_t: int = 5, versus_steps: Sequence[int] = (8, 16, 32, 64), orders: Sequence[str] = tuple(ORDERS),
             n_points: int = 10, targets_per_image: int = 1, n_subsets: int = 32, subset_fraction: float = 0.2,
             noise_std: float = 0.05, top_k: int = 20, max_batch_rows: int | None = None,
             class_target: str = DEFAULT_CLASS_TARGET) -> dict:
    """Evaluate ``concepts`` (and GIG on them) for ``model`` on the first ``max_images`` images of ``data``.

    ``metrics``: any of :data:`METRICS` (``stability`` re-extracts the concepts with seed + 1 over all of
    ``data``, which must then be re-iterable, and builds two graphs; ``sanity`` builds two graphs).
    ``steps``/``method``: GIG quadrature (``steps=None``: the rule's default; ``method="auto"``: per pair,
    ``loglegendre`` on scale-invariant segments, else ``gausslegendre``); ``class_target``: ``"logit"`` or
    ``"contrastive"``, the target at the logits for completeness, deletion, fidelity and graphs; ``top_t``: targets
    per image for completeness and graphs; ``versus_steps``: extra step counts for completeness;
    ``orders``/``n_points``/``targets_per_image``: deletion curves; ``n_subsets``/``subset_fraction``: C-μFidelity;
    ``noise_std``/``top_k``: graph comparisons.
    ``progress("evaluate", metrics_done, n_metrics)``, and ``progress("evaluate:fine", steps_done, n_steps)``
    after every step of a metric (an integration of completeness, a pair of deletion or fidelity, a layer
    comparison or graph of stability and sanity). See the module docstring for the result.
    """
    metrics = _check_metrics(metrics)
    orders = check_orders(orders)
    check_method(method)
    check_class_target(class_target)
    for name, value in (("steps", 1 if steps is None else steps), ("max_images", max_images), ("top_t", top_t),
                        ("targets_per_image", targets_per_image)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    layers = check_concept_layers(model, concepts, layers)
    if "stability" in metrics and concepts.method != "given":
        check_reiterable(data)
    report = progress or (lambda stage, done, total: None)
    images, labels = _first_images(data, max_images, model)
    pairs = list(zip(layers, layers[1:] + [LOGITS]))
    build = {"layers": layers, "steps": steps, "top_t": top_t, "method": method, "max_batch_rows": max_batch_rows,
             "class_target": class_target}
    results: dict = {"images": images.shape[0]}
    seed_batches = 1  # steps of the seed + 1 extraction of stability: its two passes' batches
    if "stability" in metrics and concepts.method != "given" and n_batches(data):
        seed_batches = 2 * n_batches(data)
    n_steps = _n_steps(model, metrics, pairs, steps, versus_steps, method) + seed_batches - 1
    fine = {"done": 0}

    def step() -> None:
        fine["done"] += 1
        report("evaluate:fine", min(fine["done"], n_steps), n_steps)

    report("evaluate", 0, len(metrics))
    report("evaluate:fine", 0, n_steps)
    with eval_mode(model):
        batch = analyse(model, concepts, images, layers, labels)
        local_graph = None
        for done, metric in enumerate(metrics, 1):
            if metric == "completeness":
                results[metric] = completeness(model, batch, pairs, steps, versus_steps, top_t, method, max_batch_rows,
                                               class_target, progress=step)
            elif metric == "reconstruction":
                results[metric] = reconstruction(model, batch)
                step()
            elif metric in ("deletion", "target_deletion", "fidelity"):
                results[metric] = {}
                for source, target in pairs:
                    problem = pair_problem(model, batch, source, target, targets_per_image, steps, method,
                                           max_batch_rows, readout="target" if metric == "target_deletion" else None,
                                           class_target=class_target)
                    if metric != "fidelity":
                        results[metric][f"{source}->{target}"] = {
                            "readout": problem.readout, **deletion_insertion(problem, orders, n_points, seed)}
                    else:
                        results[metric][f"{source}->{target}"] = mu_fidelity(problem, n_subsets, subset_fraction,
                                                                             seed)
                    step()
            else:
                if local_graph is None:
                    local_graph = build_graph(model, _as_data(images, labels), concepts, **build)
                    step()
                if metric == "sanity":
                    results[metric] = weight_randomization(model, _as_data(images, labels), concepts, local_graph,
                                                           top_k=top_k, seed=seed, **build)
                    step()
                else:
                    noise = noise_stability(model, images, labels, concepts, local_graph, noise_std, top_k, seed,
                                            **build)
                    step()
                    base = fine["done"]

                    def extraction(stage, done, total, base=base):  # the seed + 1 extraction: its batches
                        if stage in ("sample", "decompose") and done and seed_batches > 1:
                            fine["done"] = base + done + (seed_batches // 2 if stage == "decompose" else 0) - 1
                            step()

                    results[metric] = {"noise": noise, "seeds": _seed_stability(model, data, concepts, layers, seed,
                                                                                extraction)}
                    if fine["done"] != base + seed_batches:  # no extraction ran, or it reported less
                        fine["done"] = base + seed_batches - 1
                        step()
            report("evaluate", done, len(metrics))
    if graph is not None:
        _update_evidence(graph.evidence, results)
    return results


def _n_steps(model, metrics, pairs, steps, versus_steps, method) -> int:
    """The steps ``evaluate`` reports in ``"evaluate:fine"`` for ``metrics``."""
    per_metric = {"reconstruction": 1, "deletion": len(pairs), "target_deletion": len(pairs), "fidelity": len(pairs),
                  "sanity": 1, "stability": 2}
    count = sum(per_metric.get(m, 0) for m in metrics) + (1 if {"sanity", "stability"} & set(metrics) else 0)
    if "completeness" in metrics:
        count += n_integrations(model, pairs, steps, versus_steps, method)
    return count


def _check_metrics(metrics) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError(f"no metrics given; valid metrics are: {', '.join(METRICS)}")
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; valid metrics are: {', '.join(METRICS)}")
    return tuple(dict.fromkeys(metrics))


def _first_images(data, max_images: int, model) -> tuple[torch.Tensor, torch.Tensor | None]:
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else None
    images, labels = [], []
    taken = 0
    for batch in iter_batches(data, device):
        images.append(batch.images[: max_images - taken])
        labels.append(None if batch.labels is None else batch.labels[: max_images - taken])
        taken += images[-1].shape[0]
        if taken >= max_images:
            break
    if parameter is not None:
        images = [x.to(parameter.dtype) for x in images]
    with_labels = all(x is not None for x in labels)
    return torch.cat(images), torch.cat(labels) if with_labels else None


def _as_data(images, labels):
    return [images] if labels is None else [(images, labels)]


def _seed_stability(model, data, concepts, layers, seed, progress=None) -> dict:
    """Concepts re-extracted with ``seed + 1`` (the set's own settings) matched to ``concepts``."""
    if concepts.method == "given":
        return {"skipped": "the concepts were given as vectors, not extracted; there is no second seed to compare"}
    params = concepts.params
    other = extract_concepts(model, data, layers, n_concepts=params.get("n_concepts"), method=concepts.method,
                             pfvs_per_image=params.get("pfvs_per_image", 1),
                             sampling=params.get("sampling", "contribution"), lam=concepts.lam,
                             relative_lam=bool(concepts.lam_scales), nonneg=concepts.nonneg, solver=concepts.solver,
                             seed=params.get("seed", seed) + 1, n_exemplars=0, progress=progress)
    return concept_stability(concepts, other)


def _update_evidence(evidence: dict, results: dict) -> None:
    """Merge ``results`` into a graph's ``evidence`` (see the module docstring)."""
    for section, value in results.items():
        if section == "completeness":
            for pair, figures in value.items():
                evidence.setdefault(section, {}).setdefault(pair, figures)["versus_steps"] = figures["versus_steps"]
        elif section == "reconstruction":
            for layer, figures in value.items():
                entry = evidence.setdefault(section, {}).setdefault(layer, figures)
                entry.update({k: figures[k] for k in ("spliced_top1", "spliced_kl")})
        else:
            evidence[section] = value


__all__ = ["DEFAULT_METRICS", "METRICS", "ORDERS", "evaluate"]
