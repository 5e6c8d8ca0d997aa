"""C-μFidelity (after Bhatt et al. 2020, in concept form as in Fel et al. 2023).

For each image row, random subsets ``S`` of its present concepts are removed from ``X̂ = U V``. The metric is
the Pearson correlation, over subsets, between the summed attribution ``Σ_{q∈S} GIG(q → target)`` and the real
drop of the target ``g(F(X̂)) − g(F(X̂ without S))``, averaged over rows. On a linear segment GIG is exact and
additive, so the correlation is 1; the further the segment is from additive in concepts, the lower it gets.
"""
from __future__ import annotations

import torch

from gig.evaluation.orders import ranks
from gig.evaluation.pairs import PairProblem


def mu_fidelity(problem: PairProblem, n_subsets: int = 32, fraction: float = 0.2, seed: int = 0) -> dict:
    """Mean correlation of summed GIG with the target's drop over ``n_subsets`` random subsets per row, each
    holding ``fraction`` of the row's present concepts (at least one).

    Returns ``{"mu_fidelity": float | None, "n_rows": rows with a defined correlation, "n_subsets", "fraction"}``.
    """
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, int) or n_subsets < 3:
        raise ValueError(f"n_subsets must be an integer ≥ 3, got {n_subsets!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    generator = torch.Generator().manual_seed(seed)
    active = problem.active
    batch, n_concepts = active.shape
    sizes = (fraction * active.sum(1)).round().clamp_min(1).view(batch, 1, 1)
    scores = torch.rand(batch, n_subsets, n_concepts, generator=generator).to(active.device)
    removed = (ranks(scores.flatten(0, 1), active.repeat_interleave(n_subsets, 0)).view_as(scores) < sizes)
    removed &= active.unsqueeze(1)  # (B, n_subsets, K)
    rows = torch.arange(batch, device=active.device).repeat_interleave(n_subsets)
    _, without = problem.values(rows, (active.unsqueeze(1) & ~removed).flatten(0, 1))
    _, full = problem.full_values()
    drop = full.unsqueeze(1) - without.view(batch, n_subsets)
    attributed = (problem.gig().unsqueeze(1) * removed.to(drop.dtype)).sum(2)
    correlation = _pearson(attributed, drop)
    defined = torch.isfinite(correlation)
    value = float(correlation[defined].mean()) if defined.any() else None
    return {"mu_fidelity": value, "n_rows": int(defined.sum()), "n_subsets": n_subsets, "fraction": fraction}


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of ``(B, N)`` tensors; NaN where a row is constant (up to rounding)."""
    centred = []
    for values in (x.double(), y.double()):
        values_c = values - values.mean(1, keepdim=True)
        flat = values_c.norm(dim=1) <= 1e-9 * values.abs().amax(1) * values.shape[1] ** 0.5
        centred.append(torch.where(flat.unsqueeze(1), torch.full_like(values_c, torch.nan), values_c))
    x, y = centred
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
