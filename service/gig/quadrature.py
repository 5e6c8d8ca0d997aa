"""Quadrature rules on ``[0, 1]`` for path integrals, by name.

A rule maps a number of steps ``n`` to ``(alphas, weights)``: ``∫₀¹ f(α) dα ≈ Σ_s weights[s] · f(alphas[s])``.
Every rule's weights sum to one. ``gausslegendre`` is exact for polynomials of degree ``2n − 1`` and is the
default; the Riemann rules are kept for comparison with other IG implementations. Unlike Captum's, the trapezoid
rule here uses the spacing ``1 / (n − 1)`` of its nodes, so its weights sum to one.

New rules are added with :func:`register`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Rule = Callable[[int], tuple[np.ndarray, np.ndarray]]
RULES: dict[str, Rule] = {}
DEFAULT = "gausslegendre"


def register(name: str) -> Callable[[Rule], Rule]:
    """Decorator that adds a rule ``n -> (alphas, weights)`` (float64 numpy arrays) under ``name``."""

    def add(rule: Rule) -> Rule:
        RULES[name] = rule
        return rule

    return add


@register("gausslegendre")
def _gauss_legendre(n: int):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1) / 2, weights / 2


@register("riemann_left")
def _left(n: int):
    return np.arange(n) / n, np.full(n, 1 / n)


@register("riemann_right")
def _right(n: int):
    return np.arange(1, n + 1) / n, np.full(n, 1 / n)


@register("riemann_middle")
def _middle(n: int):
    return (np.arange(n) + 0.5) / n, np.full(n, 1 / n)


@register("riemann_trapezoid")
def _trapezoid(n: int):
    if n < 2:
        raise ValueError(f"riemann_trapezoid needs at least 2 steps, got {n}")
    weights = np.full(n, 1 / (n - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0, 1, n), weights


def check_method(method: str) -> str:
    """``method`` if it names a registered rule, else ``ValueError`` listing the rules."""
    if method not in RULES:
        raise ValueError(f"unknown quadrature method {method!r}; valid methods are: {', '.join(RULES)}")
    return method


def quadrature(method: str, steps: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights ``(alphas, weights)`` of rule ``method`` with ``steps`` points on ``[0, 1]``."""
    check_method(method)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    alphas, weights = RULES[method](steps)
    return (torch.as_tensor(alphas, dtype=dtype, device=device), torch.as_tensor(weights, dtype=dtype, device=device))
