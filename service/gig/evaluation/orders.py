"""Concept orderings for deletion and insertion curves, by name.

An ordering maps a :class:`~gig.evaluation.pairs.PairProblem` and a seeded ``torch.Generator`` to scores ``(B, K)``:
the higher a concept's score, the earlier it is removed (deletion) or restored (insertion). Only the concepts
present in an image are ever ranked (:func:`ranks`), so concepts with no coefficient never dilute a curve.

- ``gig``: GIG of the concept to the target (the method under test);
- ``random``: a random permutation (the floor every attribution must beat);
- ``abs_coefficient``: ``Σ_p |U_pq|``, how much of the concept the image holds;
- ``grad_x_coefficient``: ``Σ_p U_pq <v_q, ∇g(X̂)>``, gradient × input at ``α = 1``;
- ``leave_one_out``: ``g(X̂) − g(X̂ without q)``, the occlusion of one concept at a time.

New orderings are added with :func:`register`.
"""
from __future__ import annotations

from typing import Callable

import torch

from gig.evaluation.pairs import PairProblem

Ordering = Callable[[PairProblem, torch.Generator], torch.Tensor]
ORDERS: dict[str, Ordering] = {}


def register(name: str) -> Callable[[Ordering], Ordering]:
    """Decorator that adds an ordering ``(problem, generator) -> scores (B, K)`` under ``name``."""

    def add(ordering: Ordering) -> Ordering:
        ORDERS[name] = ordering
        return ordering

    return add


@register("gig")
def _gig(problem: PairProblem, generator: torch.Generator) -> torch.Tensor:
    return problem.gig()


@register("random")
def _random(problem: PairProblem, generator: torch.Generator) -> torch.Tensor:
    scores = torch.rand(problem.coefficients.shape[0], problem.coefficients.shape[2], generator=generator)
    return scores.to(problem.coefficients.device)


@register("abs_coefficient")
def _abs_coefficient(problem: PairProblem, generator: torch.Generator) -> torch.Tensor:
    return problem.coefficients.abs().sum(1)


@register("grad_x_coefficient")
def _grad_x_coefficient(problem: PairProblem, generator: torch.Generator) -> torch.Tensor:
    return problem.gradient_x_coefficient()


@register("leave_one_out")
def _leave_one_out(problem: PairProblem, generator: torch.Generator) -> torch.Tensor:
    rows, concepts = problem.active.nonzero(as_tuple=True)
    keep = torch.ones(rows.shape[0], problem.coefficients.shape[2], dtype=torch.bool, device=rows.device)
    keep[torch.arange(rows.shape[0], device=rows.device), concepts] = False
    _, without = problem.values(rows, keep)
    _, full = problem.full_values()
    scores = torch.zeros(problem.active.shape, dtype=full.dtype, device=full.device)
    scores[rows, concepts] = full[rows] - without
    return scores


def check_orders(orders) -> tuple[str, ...]:
    """``orders`` as a tuple of registered names, else ``ValueError`` listing them."""
    if isinstance(orders, str):
        orders = (orders,)
    orders = tuple(orders)
    if not orders:
        raise ValueError(f"no orders given; valid orders are: {', '.join(ORDERS)}")
    for name in orders:
        if name not in ORDERS:
            raise ValueError(f"unknown order {name!r}; valid orders are: {', '.join(ORDERS)}")
    return orders


def ranks(scores: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` position of each concept in its row's order: active concepts by descending score, then the rest."""
    keyed = torch.where(active, scores, torch.full_like(scores, -torch.inf))
    order = keyed.argsort(dim=1, descending=True, stable=True)
    positions = torch.empty_like(order)
    positions.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return positions
