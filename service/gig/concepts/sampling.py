"""Which PFVs of an image to sample for clustering (DESIGN §1.2 step 1).

Each image gives ``k`` distinct positions, drawn without replacement with probability proportional to a weight:

- ``"contribution"`` (default, the paper's): ``max(0, ⟨X[:, p], ∂logit_ŷ/∂X[:, p]⟩)`` for the predicted class;
- ``"norm"``: ``‖X[:, p]‖``;
- ``"uniform"``: equal weights.

Positions of zero weight are only drawn after every positive one (uniformly among themselves), so an image whose
weights are all zero falls back to uniform sampling. Draws are reproducible for a seeded ``torch.Generator``.
"""
from __future__ import annotations

import torch

SAMPLINGS = ("contribution", "uniform", "norm")


def check_sampling(sampling: str) -> str:
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid: {', '.join(SAMPLINGS)}")
    return sampling


def position_weights(sampling: str, pfvs: torch.Tensor, grads: torch.Tensor | None = None) -> torch.Tensor:
    """Non-negative weights ``(B, P)`` of PFVs ``(B, P, C)``; ``grads`` (same shape) for ``"contribution"``."""
    check_sampling(sampling)
    if sampling == "uniform":
        return torch.ones(pfvs.shape[:2], dtype=pfvs.dtype, device=pfvs.device)
    if sampling == "norm":
        return pfvs.norm(dim=-1)
    if grads is None or grads.shape != pfvs.shape:
        raise ValueError("contribution sampling needs the gradients of the logit, shaped like the PFVs")
    return (pfvs * grads).sum(-1).clamp_min(0)


def sample_positions(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` distinct positions ``(B, k)`` per row of ``weights`` ``(B, P)``, drawn proportionally to the weights.

    Weighted sampling without replacement by Efraimidis–Spirakis keys ``log(u)/w`` (largest first); zero-weight
    positions get key ``-inf`` and keep a random order, so they come last in random order.
    """
    rows, positions = weights.shape
    if not (isinstance(k, int) and 1 <= k <= positions):
        raise ValueError(f"pfvs_per_image must be an int between 1 and the number of positions ({positions}), not {k!r}")
    uniform = torch.rand(rows, positions, generator=generator, dtype=torch.float64).to(weights.device)
    shuffle = torch.rand(rows, positions, generator=generator).argsort(dim=1).to(weights.device)
    w = weights.detach().double().gather(1, shuffle)
    keys = torch.where(w > 0, uniform.log() / w, torch.full_like(w, -torch.inf))
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :k]
    return shuffle.gather(1, order)
