"""GIG: Integrated Gradients from the concepts of a source layer to the concepts (or classes) of a target layer.

Method (DESIGN §1.3). The source activation ``X^a`` is decomposed into coefficients ``U`` ``(B, P, K)`` against
concept vectors ``V`` ``(K, C)``. Every target is linear in the segment's output, ``g_t(X^b) = <W_t, X^b>``
(a masked unit concept vector, or a one-hot on the logits), so the cotangent of each backward pass is known in
advance. Along the path ``X(α) = α · X̂`` (``"reconstruction"``, ``X̂ = U V``) or ``X(α) = α · X^a``
(``"activation"``) the gradient is integrated by quadrature::

    Ḡ_p = Σ_s w_s ∇_{X[:, p]} g_t(F_{a→b}(X(α_s)))        GIG(q → t) = Σ_p U_{p,q} <v_q, Ḡ_p>

and, on the activation path, a residual row ``Σ_p <X_p − X̂_p, Ḡ_p>``. Completeness: the rows sum to
``g_t(F(X(1))) − g_t(F(X(0)))`` up to quadrature error, reported as the relative ``delta``. The rule is chosen per
segment (``method="auto"``, :func:`gig.quadrature.choose_rule`): ``loglegendre`` where a normalisation makes the
segment scale-invariant, ``gausslegendre`` elsewhere. With a ``tolerance`` the steps double until the
dataset-level error meets it; a run that cannot meet it warns (:class:`CompletenessWarning`) and says so
(``converged=False``).

Cost: only the segment ``F_{a→b}`` runs. One forward over a chunk of (image × step) rows is shared by the
backward passes of all targets (one ``autograd.grad`` per target; on the CPU this measured faster than one
batched backward with ``is_grads_batched=True``). No hooks are registered.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from gig.concepts.conceptset import ConceptSet
from gig.data import check_images, eval_mode
from gig.layers import LOGITS, traced
from gig.pfv import from_pfvs, to_pfvs
from gig.quadrature import DEFAULT, check_method, choose_rule, default_steps, quadrature
from gig.targets import DEFAULT_CLASS_TARGET, MASKS, check_class_target, class_targets, concept_targets
from gig.types import Images, Steps

PATHS = ("reconstruction", "activation")
AUTO_START_STEPS = None  # steps="auto" starts at the rule's default steps (gig.quadrature.default_steps)
AUTO_MAX_STEPS = 512
AUTO_TOLERANCE = 1e-2
# Default chunk: about this many elements of segment input and output per chunk of (image × step) rows.
ROW_BUDGET_ELEMENTS = 2**25


@dataclass
class Attribution:
    """GIG from the concepts of ``source`` to the targets at ``target`` for a batch of images."""

    attributions: torch.Tensor  # (B, K (+1 residual row on the activation path), T)
    targets: torch.Tensor  # (B, T) concept indices of the target layer, or classes for "logits"
    delta: torch.Tensor | None  # (B, T) relative completeness error, when asked for
    target_difference: torch.Tensor  # (B, T) g(F(X(1))) − g(F(X(0)))
    steps: int  # quadrature steps used
    method: str = "gausslegendre"  # the quadrature rule used (what method="auto" chose)
    converged: bool | None = None  # with a tolerance: whether it was met; None when none was asked for


class CompletenessWarning(UserWarning):
    """A tolerance run (``steps="auto"``) stopped at the maximum steps without meeting its tolerance."""


class Integral(NamedTuple):
    """What :func:`integrate_to_tolerance` returns."""

    attributions: torch.Tensor  # (B, K (+1), T)
    target_difference: torch.Tensor  # (B, T)
    steps: int  # steps of the last run
    method: str  # the rule used
    dataset_delta: float  # its dataset-level completeness error
    converged: bool | None  # the tolerance was met (None: no tolerance)


# ---------------------------------------------------------------------------------------------- integrator
def integrate(segment, coefficients, vectors, like_shape, target_weights, steps=None, method=DEFAULT,
              path="reconstruction", activation=None, max_batch_rows=None):
    """GIG of every source concept to every target, given the decomposition and the targets' weights.

    ``method``: a rule of :mod:`gig.quadrature` or ``"auto"`` (chosen from ``segment``); ``steps``: its points
    (``None``: the rule's default).

    ``segment`` maps ``X^a`` to ``X^b`` (or logits); ``coefficients`` ``(B, P, K)`` and ``vectors`` ``(K, C)``
    decompose ``X^a`` (shape ``like_shape``); ``target_weights`` ``(B, T, *out)`` define ``g_t = <W_t, X^b>``;
    ``activation`` (``X^a`` itself) is needed for ``path="activation"``. Rows (image × step) are run in chunks of
    at most ``max_batch_rows`` (default: about ``2**25`` elements of segment input and output per chunk).

    Returns ``(attributions (B, K (+1), T), target_difference (B, T))``.
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid paths are: {', '.join(PATHS)}")
    like_shape = tuple(like_shape)
    batch, n_targets = target_weights.shape[:2]
    if coefficients.dim() != 3 or coefficients.shape[0] != batch or like_shape[0] != batch:
        raise ValueError(f"coefficients {tuple(coefficients.shape)}, like_shape {like_shape} and target_weights "
                         f"{tuple(target_weights.shape)} must share the batch size")
    if vectors.shape[0] != coefficients.shape[2]:
        raise ValueError(f"{coefficients.shape[2]} coefficients per PFV but {vectors.shape[0]} concept vectors")
    reconstruction = (coefficients @ vectors).detach()  # (B, P, C)
    if path == "activation":
        if activation is None or tuple(activation.shape) != like_shape:
            raise ValueError(f"path='activation' needs the source activation of shape {like_shape}")
        start = activation.detach()
    else:
        start = from_pfvs(reconstruction, like_shape)
    rule = choose_rule(method, segment)
    steps = default_steps(rule) if steps is None else steps
    alphas, weights = quadrature(rule, steps, dtype=start.dtype, device=start.device)
    rows = _chunk_rows(max_batch_rows, like_shape, target_weights)

    with torch.enable_grad():
        gradients = _integrated_gradients(segment, start, target_weights, alphas, weights, rows)
    pfv_gradients = to_pfvs(gradients.flatten(0, 1)).unflatten(0, (n_targets, batch))  # (T, B, P, C)
    # GIG(q) = Σ_p U_{p,q} <v_q, Ḡ_p>, one target at a time so memory stays at the size of U
    attributions = torch.stack([((g @ vectors.T) * coefficients).sum(1) for g in pfv_gradients], dim=2)
    if path == "activation":
        residual = to_pfvs(start) - reconstruction
        residual_row = torch.einsum("bpc,tbpc->bt", residual, pfv_gradients)
        attributions = torch.cat([attributions, residual_row.unsqueeze(1)], dim=1)
    return attributions.detach(), _target_difference(segment, start, target_weights, rows)


def integrate_to_tolerance(segment, coefficients, vectors, like_shape, target_weights, steps=None, tolerance=None,
                           method=DEFAULT, path="reconstruction", activation=None, max_batch_rows=None,
                           name="segment") -> Integral:
    """:func:`integrate` with the rule :func:`gig.quadrature.choose_rule` picks, doubling ``steps`` (default: the
    rule's own) up to 512 until the dataset-level completeness error is at most ``tolerance`` (``None``: once).
    When 512 steps do not meet it, warns (:class:`CompletenessWarning`, naming ``name``, the steps and the
    error) and returns ``converged=False``."""
    rule = choose_rule(method, segment)
    steps = default_steps(rule) if steps is None else steps
    while True:
        attributions, difference = integrate(segment, coefficients, vectors, like_shape, target_weights, steps,
                                             rule, path, activation=activation, max_batch_rows=max_batch_rows)
        delta = dataset_delta(attributions, difference)
        if tolerance is None:
            return Integral(attributions, difference, steps, rule, delta, None)
        if delta <= tolerance:
            return Integral(attributions, difference, steps, rule, delta, True)
        if steps >= AUTO_MAX_STEPS:
            warnings.warn(f"GIG on {name} did not converge: dataset completeness error {delta:.3g} at {steps} "
                          f"steps ({rule}) exceeds the tolerance {tolerance:g}", CompletenessWarning, stacklevel=3)
            return Integral(attributions, difference, steps, rule, delta, False)
        steps = min(2 * steps, AUTO_MAX_STEPS)


def _chunk_rows(max_batch_rows, like_shape, target_weights) -> int:
    if max_batch_rows is None:
        per_row = math.prod(like_shape[1:]) + math.prod(target_weights.shape[2:])
        return max(1, ROW_BUDGET_ELEMENTS // per_row)
    if isinstance(max_batch_rows, bool) or not isinstance(max_batch_rows, int) or max_batch_rows < 1:
        raise ValueError(f"max_batch_rows must be a positive integer or None, got {max_batch_rows!r}")
    return max_batch_rows


def _integrated_gradients(segment, start, target_weights, alphas, weights, rows):
    """``Ḡ`` ``(T, B, *in)``: quadrature sum of the gradients of every target along ``α · start``."""
    n_targets = target_weights.shape[1]
    gradients = torch.zeros(n_targets, *start.shape, dtype=start.dtype, device=start.device)
    for images, steps in _blocks(start.shape[0], alphas.shape[0], rows):
        x = (_expand(alphas[steps], start.dim() + 1) * start[images].unsqueeze(1)).flatten(0, 1).requires_grad_()
        out = segment(x)
        step_weights = _expand(weights[steps], out.dim() + 1)
        for t in range(n_targets):  # measured faster on CPU than one backward with is_grads_batched=True
            cotangent = (step_weights * target_weights[images, t].unsqueeze(1)).flatten(0, 1)
            (grad,) = torch.autograd.grad(out, x, cotangent, retain_graph=t < n_targets - 1)
            gradients[t, images] += grad.unflatten(0, (-1, steps.stop - steps.start)).sum(1)
    return gradients


def _blocks(batch: int, n_steps: int, rows: int):
    """Chunks of at most ``rows`` (image × step) rows as ``(images, steps)`` slices: whole images when they fit."""
    if rows >= n_steps:
        per_chunk = rows // n_steps
        for first in range(0, batch, per_chunk):
            yield slice(first, min(first + per_chunk, batch)), slice(0, n_steps)
    else:
        for image in range(batch):
            for first in range(0, n_steps, rows):
                yield slice(image, image + 1), slice(first, min(first + rows, n_steps))


def _target_difference(segment, start, target_weights, rows):
    """``g_t(F(start)) − g_t(F(0))`` per (image, target)."""
    with torch.no_grad():
        at_zero = segment(torch.zeros_like(start[:1]))
        parts = []
        for first in range(0, start.shape[0], rows):
            out = segment(start[first:first + rows]) - at_zero
            weights = target_weights[first:first + rows]
            parts.append((weights * out.unsqueeze(1)).flatten(2).sum(2))
    return torch.cat(parts)


def _expand(values, dims: int):
    """``values`` ``(S,)`` as ``(1, S, 1, …)`` with ``dims`` dimensions, to broadcast over (image, step, …)."""
    return values.reshape(1, -1, *([1] * (dims - 2)))


def completeness_delta(attributions, target_difference):
    """Relative completeness error ``|Σ_q GIG − diff| / max(|diff|, 1e-6 · max|diff|)`` per (image, target)."""
    error = (attributions.sum(1) - target_difference).abs()
    scale = target_difference.abs()
    floor = (1e-6 * scale.max()).clamp_min(torch.finfo(scale.dtype).tiny)
    return error / scale.clamp_min(floor)


def dataset_delta(attributions, target_difference) -> float:
    """Dataset-level completeness error ``Σ|Σ_q GIG − diff| / Σ|diff|``."""
    error = (attributions.sum(1) - target_difference).abs().sum()
    return float(error / target_difference.abs().sum().clamp_min(torch.finfo(error.dtype).tiny))


# ---------------------------------------------------------------------------------------------- public API
def attribute(model: nn.Module, images: Images, concepts: ConceptSet, source: str, target: str,
              targets: torch.Tensor | None = None, top_t: int = 5, steps: Steps = None, method: str = DEFAULT,
              path: str = "reconstruction", return_delta: bool = False, labels: torch.Tensor | None = None,
              tolerance: float | None = None, max_batch_rows: int | None = None, mask: str = "positive",
              class_target: str = DEFAULT_CLASS_TARGET) -> Attribution:
    """GIG from the concepts of layer ``source`` to the targets at ``target`` (the next analysed layer or
    ``"logits"``) for ``images`` ``(B, 3, H, W)``.

    ``targets``: ``(B, T)`` concept indices of ``target`` (classes for ``"logits"``); default: each image's
    ``top_t`` concepts of ``target``, or for ``"logits"`` its ``labels`` (else the predicted class), ``T = 1``.
    ``method``: a rule of :mod:`gig.quadrature` or ``"auto"`` (``loglegendre`` where the segment contains a
    scale-invariant normalisation, else ``gausslegendre``). ``steps``: quadrature points (``None``: the rule's
    default, 16 for gausslegendre, 32 for loglegendre), or ``"auto"``: start there and double (up to 512) until
    the dataset-level completeness error is at most ``tolerance`` (default 1e-2); an integer ``steps`` with a
    ``tolerance`` starts there. A tolerance that is not met warns and sets ``converged=False``. ``mask``:
    ``"positive"`` (the positions where a target concept is present) or ``"all"``. ``class_target`` at the
    logits: ``"logit"`` (``g_y = logit_y``) or ``"contrastive"`` (``logit_y −`` the mean of the other logits).
    The model runs in eval mode (restored after) on the device and dtype of its parameters.
    """
    check_method(method)
    check_class_target(class_target)
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid paths are: {', '.join(PATHS)}")
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; valid masks are: {', '.join(MASKS)}")
    steps, tolerance = check_steps(steps, tolerance)
    t = traced(model)
    source, target = _check_pair(t, source, target)
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
    device = parameter.device if parameter is not None else torch.device("cpu")
    images = check_images(images).to(device=device, dtype=dtype)
    _check_concepts(concepts, [source] + ([] if target == LOGITS else [target]))

    with eval_mode(model), torch.no_grad():
        acts = t.prefix([source] if target == LOGITS else [source, target])(images)
    source_act = acts[source]
    coefficients, vectors = _decompose(concepts, source, source_act)
    if target == LOGITS:
        chosen, weights = class_targets(acts[LOGITS], labels=labels, targets=targets, class_target=class_target)
    else:
        target_coefficients, target_vectors = _decompose(concepts, target, acts[target])
        chosen, weights = concept_targets(target_coefficients, target_vectors, acts[target].shape, targets=targets,
                                          top_t=top_t, mask=mask)

    with eval_mode(model):
        result = integrate_to_tolerance(t.segment(source, target), coefficients, vectors, source_act.shape, weights,
                                        steps, tolerance, method, path, activation=source_act,
                                        max_batch_rows=max_batch_rows, name=f"{source}->{target}")
    delta = completeness_delta(result.attributions, result.target_difference) if return_delta else None
    return Attribution(result.attributions, chosen, delta, result.target_difference, result.steps, result.method,
                       result.converged)


def _decompose(concepts, layer, activation):
    pfvs = to_pfvs(activation)
    vectors = concepts.vectors(layer).to(device=activation.device, dtype=activation.dtype)
    if vectors.dim() != 2 or vectors.shape[1] != pfvs.shape[-1]:
        raise ValueError(f"the concept vectors of layer {layer!r} have shape {tuple(vectors.shape)}; "
                         f"the layer has {pfvs.shape[-1]} channels, so they must be (K, {pfvs.shape[-1]})")
    coefficients = concepts.decompose(layer, pfvs).to(device=activation.device, dtype=activation.dtype)
    return coefficients, vectors


def check_steps(steps, tolerance):
    """``(start steps or None, tolerance or None)`` from ``steps`` (a positive int, ``None`` for the rule's default,
    or ``"auto"``) and ``tolerance``."""
    if isinstance(steps, str) and steps == "auto":
        return AUTO_START_STEPS, AUTO_TOLERANCE if tolerance is None else _check_tolerance(tolerance)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer or 'auto' (or None: the rule's default), got {steps!r}")
    return steps, None if tolerance is None else _check_tolerance(tolerance)


def _check_tolerance(tolerance) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
        raise ValueError(f"tolerance must be a positive number, got {tolerance!r}")
    return float(tolerance)


def _check_pair(t, source, target):
    if target == LOGITS:
        return t.check_layers([source])[0], LOGITS
    if source == target:
        raise ValueError(f"target must come after source, got {source!r} for both")
    ordered = t.check_layers([source, target])
    if ordered[0] != source:
        raise ValueError(f"target {target!r} does not come after source {source!r}; pass them in forward order")
    return source, target


def _check_concepts(concepts, layers):
    known = list(getattr(concepts, "layers", {}))
    for layer in layers:
        if layer not in known:
            raise ValueError(f"the concepts do not cover layer {layer!r}; they cover: {', '.join(known) or 'none'}")
