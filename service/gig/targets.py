"""Targets of GIG: what is explained at the target layer, each as a linear function ``g_t(X^b) = <W_t, X^b>``.

At an analysed layer a target is a concept ``r``: ``g_r(X^b) = Σ_{p ∈ M_r} <X^b[:, p], v̂_r>`` (DESIGN §1.3), the
unit concept vector summed over the positions ``M_r`` where ``r`` is present in the real image. At the logits it
is one class, either its logit (``class_target="logit"``: ``g_y = logit_y``) or its contrastive logit
(``"contrastive"``: ``g_y = logit_y − mean_{c ≠ y} logit_c``, what sets the class apart from the others rather
than the logit's value, which a concept present in every class can dominate). Because every target is linear, its
weights ``W_t`` are the cotangent of the backward pass that differentiates it.
"""
from __future__ import annotations

import torch

from gig.pfv import from_pfvs

MASKS = ("positive", "all")
CLASS_TARGETS = ("logit", "contrastive")
# The one place the default class target is set. Measured on three planted kinds (gig.planted.class_part_ranking):
# the two targets tie there (a class's own parts outrank every common concept in 83–100 % of classes either way);
# "contrastive" is the default because it explains what sets a class apart, so a concept that adds to every logit
# alike gets no credit for any class.
DEFAULT_CLASS_TARGET = "contrastive"


def concept_targets(coefficients, vectors, like_shape, targets=None, top_t=5, mask="positive"):
    """Targets at an analysed layer ``b`` and their linear weights.

    ``coefficients`` ``(B, P, K)`` are the real images' coefficients at ``b``, ``vectors`` ``(K, C)`` its concept
    vectors, ``like_shape`` the shape of ``X^b``. Per image the targets are its ``top_t`` concepts by total
    coefficient, or the caller's ``targets`` ``(B, T)``. ``g_r(X^b) = Σ_{p ∈ M_r} <X^b[:, p], v̂_r>`` with ``M_r``
    the positions where ``r`` has a positive coefficient (``mask="positive"``) or every position (``"all"``).

    Returns ``(targets (B, T), weights (B, T, *like_shape[1:]))`` with ``g_t(X^b) = <weights[:, t], X^b>``.
    """
    if mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}; valid masks are: {', '.join(MASKS)}")
    batch, _, n_concepts = coefficients.shape
    if targets is None:
        if isinstance(top_t, bool) or not isinstance(top_t, int) or not 1 <= top_t <= n_concepts:
            raise ValueError(f"top_t must be an integer in [1, {n_concepts}] (concepts of the target), got {top_t!r}")
        targets = coefficients.sum(1).topk(top_t, dim=1).indices
    else:
        targets = _check_indices(targets, batch, n_concepts, "concepts of the target layer").to(coefficients.device)
    units = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)
    chosen = coefficients.gather(2, targets.unsqueeze(1).expand(-1, coefficients.shape[1], -1))  # (B, P, T)
    on = (chosen > 0) if mask == "positive" else torch.ones_like(chosen, dtype=torch.bool)
    pfv_weights = on.to(vectors.dtype).transpose(1, 2).unsqueeze(-1) * units[targets].unsqueeze(2)  # (B, T, P, C)
    t = targets.shape[1]
    weights = from_pfvs(pfv_weights.flatten(0, 1), (batch * t, *like_shape[1:]))
    return targets, weights.reshape(batch, t, *like_shape[1:])


def check_class_target(class_target: str) -> str:
    """``class_target`` if it is one of :data:`CLASS_TARGETS`, else ``ValueError`` listing them."""
    if class_target not in CLASS_TARGETS:
        raise ValueError(f"unknown class_target {class_target!r}; valid class targets are: {', '.join(CLASS_TARGETS)}")
    return class_target


def class_targets(logits, labels=None, targets=None, class_target=DEFAULT_CLASS_TARGET):
    """Targets at the logits: the caller's classes ``(B, T)``, else ``labels`` ``(B,)``, else the predicted class.

    Returns ``(targets (B, T), weights (B, T, N))``: ``"logit"``: one-hot rows, ``g_y = logit_y``;
    ``"contrastive"``: one at ``y`` and ``−1 / (N − 1)`` elsewhere, ``g_y = logit_y − mean_{c ≠ y} logit_c``.
    """
    check_class_target(class_target)
    batch, n_classes = logits.shape
    if class_target == "contrastive" and n_classes < 2:
        raise ValueError(f"class_target='contrastive' needs at least 2 classes, the model has {n_classes}")
    if targets is not None:
        targets = _check_indices(targets, batch, n_classes, "classes")
    elif labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (batch,):
            raise ValueError(f"labels must be a tensor of shape ({batch},), got {_describe(labels)}")
        targets = _check_indices(labels.unsqueeze(1), batch, n_classes, "classes")
    else:
        targets = logits.argmax(1, keepdim=True)
    targets = targets.to(logits.device)
    rest = -1.0 / (n_classes - 1) if class_target == "contrastive" else 0.0
    weights = torch.full((*targets.shape, n_classes), rest, dtype=logits.dtype, device=logits.device)
    weights.scatter_(2, targets.unsqueeze(2), 1.0)
    return targets, weights


def _check_indices(indices, batch: int, size: int, what: str) -> torch.Tensor:
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(indices)
    if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.dim() != 2:
        raise ValueError(f"targets must be an integer tensor of shape (B={batch}, T), got {_describe(indices)}")
    if indices.shape[0] != batch or indices.shape[1] == 0:
        raise ValueError(f"targets must have shape (B={batch}, T ≥ 1), got {tuple(indices.shape)}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= size):
        raise ValueError(f"targets must index the {size} {what}: valid values are 0..{size - 1}")
    return indices.long()


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
