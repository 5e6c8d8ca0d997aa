"""Circuits: relevance flowing backwards through a concept graph (torch-free; shared by ``gig.graph`` and the
client's ``gigaudit.results``, so the core and the client can never disagree).

Relevance starts on a class node and flows back layer by layer along ``|share|`` (flow = the target's relevance ×
``|share|`` of the edge). At each layer the largest flows are kept until they carry ``coverage`` of that layer's
total; a source's relevance is the sum of its kept flows, and only kept sources pass relevance on.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

Inflows = Callable[[str], Iterable[tuple[str, float]]]  # target → (source, share) of its incoming edges


def check_coverage(coverage) -> float:
    """``coverage`` when it is a number in (0, 1]; ``ValueError`` otherwise."""
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float)) or not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    return float(coverage)


def propagate(start: dict[str, float], inflows: Inflows, coverage: float = 1.0
              ) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """``(relevance per node, kept edges (source, target))`` from the relevance ``start`` puts on some nodes."""
    coverage = check_coverage(coverage)
    relevance, kept, frontier = dict(start), [], list(start)
    while frontier:
        flows = sorted(((relevance[target] * abs(share), source, target)
                        for target in frontier for source, share in inflows(target) if share), reverse=True)
        goal, carried, frontier = coverage * sum(f for f, _, _ in flows), 0.0, []
        for flow, source, target in flows:
            if carried >= goal - 1e-12:
                break
            carried += flow
            kept.append((source, target))
            if source not in relevance:
                frontier.append(source)
            relevance[source] = relevance.get(source, 0.0) + flow
    return relevance, kept
