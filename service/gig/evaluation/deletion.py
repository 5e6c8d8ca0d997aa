"""Deletion and insertion curves of source concepts, and their areas (AUC).

For each image row, its present concepts are ranked by an ordering (:mod:`gig.evaluation.orders`). At the
fractions ``0, 1/n, …, 1`` of them, *deletion* removes the top-ranked ones from ``X̂ = U V`` and *insertion*
keeps only those; the readout of the segment's output is followed (:class:`~gig.evaluation.pairs.PairProblem`).

- Between analysed layers (the paper's protocol) the readout is the target concept's maximum projection,
  normalised per image by its value with every concept kept; rows whose full value is not positive are left out.
- Towards a class (C-Del / C-Ins, Fel et al. 2023) it is the class probability, as it is.

A good ordering makes the deletion curve fall fast (small deletion AUC) and the insertion curve rise fast (large
insertion AUC). AUCs are trapezoid areas over the fraction axis ``[0, 1]``, averaged over rows.
"""
from __future__ import annotations

import torch

from gig.evaluation.orders import ORDERS, check_orders, ranks
from gig.evaluation.pairs import PairProblem


def curves(problem: PairProblem, scores: torch.Tensor, n_points: int = 10) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves ``(B, n_points + 1)`` of the readout for an ordering's ``scores`` ``(B, K)``.

    Also returns ``"valid"`` ``(B,)``: the rows that count (all of them for probabilities; for projections those
    with a positive full value, by which the curves are divided).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    active = problem.active
    position = ranks(scores, active).unsqueeze(1)  # (B, 1, K)
    fractions = torch.linspace(0, 1, n_points + 1, device=active.device, dtype=torch.float64)
    counts = (fractions.unsqueeze(0) * active.sum(1, keepdim=True)).round().long().unsqueeze(2)  # (B, S, 1)
    on = active.unsqueeze(1)
    removed = position < counts  # (B, S, K): the top-`count` concepts of each row
    rows = torch.arange(problem.batch, device=active.device).repeat_interleave(n_points + 1)
    steps = n_points + 1
    deletion, _ = problem.values(rows, (on & ~removed).flatten(0, 1))
    insertion, _ = problem.values(rows, (on & removed).flatten(0, 1))
    deletion, insertion = deletion.view(-1, steps), insertion.view(-1, steps)
    if problem.readout == "probability":
        return {"deletion": deletion, "insertion": insertion,
                "valid": torch.ones(problem.batch, dtype=torch.bool, device=active.device)}
    full, _ = problem.full_values()
    valid = full > 0
    scale = torch.where(valid, full, torch.ones_like(full)).unsqueeze(1)
    return {"deletion": deletion / scale, "insertion": insertion / scale, "valid": valid}


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves ``(..., S)`` sampled evenly on ``[0, 1]``."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[-1] - 1), dim=-1)


def deletion_insertion(problem: PairProblem, orders=tuple(ORDERS), n_points: int = 10, seed: int = 0) -> dict:
    """Deletion and insertion AUCs and mean curves of every ordering in ``orders``, and whether GIG beats each.

    Returns a JSON-able dict: ``{"orders": {name: {"deletion_auc", "insertion_auc", "deletion_curve",
    "insertion_curve"}}, "gig_beats": {name: {"deletion": bool, "insertion": bool}}, "n_rows", "n_points"}``
    (``gig_beats`` only when ``"gig"`` is among the orders and some row counts; means of no rows are ``None``).
    """
    orders = check_orders(orders)
    generator = torch.Generator().manual_seed(seed)
    results, valid = {}, None
    for name in orders:
        found = curves(problem, ORDERS[name](problem, generator), n_points)
        valid = found["valid"]
        deletion, insertion = found["deletion"][valid], found["insertion"][valid]
        results[name] = {
            "deletion_auc": _mean(auc(deletion)), "insertion_auc": _mean(auc(insertion)),
            "deletion_curve": [_mean(c) for c in deletion.T], "insertion_curve": [_mean(c) for c in insertion.T],
        }
    report = {"orders": results, "n_rows": int(valid.sum()), "n_points": n_points}
    if "gig" in results and report["n_rows"]:
        ours = results["gig"]
        report["gig_beats"] = {
            name: {"deletion": ours["deletion_auc"] < other["deletion_auc"],
                   "insertion": ours["insertion_auc"] > other["insertion_auc"]}
            for name, other in results.items() if name != "gig"
        }
    return report


def _mean(values: torch.Tensor) -> float | None:
    return float(values.double().mean()) if values.numel() else None
