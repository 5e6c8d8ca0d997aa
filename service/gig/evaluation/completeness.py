"""Completeness of GIG per layer pair (DESIGN §1.3): ``Σ_q GIG(q → t) = g_t(F(X̂)) − g_t(F(0))`` up to quadrature.

Per pair and number of steps, over every (image, target): ``dataset_delta`` ``Σ|Σ_q GIG − diff| / Σ|diff|``, and
the mean and maximum of the relative delta of :func:`gig.attribution.completeness_delta`; ``method`` names the
quadrature rule used (what ``method="auto"`` chose for the pair's segment).
"""
from __future__ import annotations

from torch import nn

from gig.attribution import class_targets, completeness_delta, concept_targets, dataset_delta, integrate
from gig.evaluation.pairs import AnalysedBatch
from gig.layers import LOGITS, traced
from gig.quadrature import DEFAULT, choose_rule, default_steps
from gig.targets import DEFAULT_CLASS_TARGET


def completeness(model: nn.Module, batch: AnalysedBatch, pairs, steps: int | None = None,
                 versus_steps=(8, 16, 32, 64), top_t: int = 5, method: str = DEFAULT,
                 max_batch_rows: int | None = None, class_target: str = DEFAULT_CLASS_TARGET,
                 progress=None) -> dict[str, dict]:
    """``{"a->b": {"dataset_delta", "delta_mean", "delta_max", "n_targets", "steps", "method", "versus_steps":
    [...]}}`` for each ``(a, b)`` of ``pairs``: the figures at ``steps`` (``None``: the rule's default), and the same
    figures for each of ``versus_steps`` (with ``steps`` itself), in increasing order. Targets: each image's
    ``top_t`` concepts of ``b``, or its class (``class_target``: ``"logit"`` or ``"contrastive"``).
    ``progress()`` after every integration (:func:`n_integrations` of them).
    """
    t = traced(model)
    report = {}
    for source, target in pairs:
        if target == LOGITS:
            _, weights = class_targets(batch.logits, targets=batch.classes.unsqueeze(1), class_target=class_target)
        else:
            top = min(top_t, batch.vectors[target].shape[0])
            _, weights = concept_targets(batch.coefficients[target], batch.vectors[target],
                                         batch.activations[target].shape, top_t=top)
        segment = t.segment(source, target)
        rule = choose_rule(method, segment)
        at = default_steps(rule) if steps is None else steps
        figures = {}
        for n in sorted({at, *versus_steps}):
            attributions, difference = integrate(segment, batch.coefficients[source], batch.vectors[source],
                                                 batch.activations[source].shape, weights, n, rule,
                                                 max_batch_rows=max_batch_rows)
            delta = completeness_delta(attributions, difference)
            figures[n] = {"dataset_delta": dataset_delta(attributions, difference), "delta_mean": float(delta.mean()),
                          "delta_max": float(delta.max()), "n_targets": delta.numel()}
            if progress is not None:
                progress()
        report[f"{source}->{target}"] = {**figures[at], "steps": at, "method": rule,
                                         "versus_steps": [{"steps": n, **f} for n, f in figures.items()]}
    return report


def n_integrations(model: nn.Module, pairs, steps: int | None = None, versus_steps=(8, 16, 32, 64),
                   method: str = DEFAULT) -> int:
    """How many integrations :func:`completeness` runs (one per pair and distinct step count)."""
    t = traced(model)
    count = 0
    for source, target in pairs:
        rule = choose_rule(method, t.segment(source, target))
        count += len({default_steps(rule) if steps is None else steps, *versus_steps})
    return count
