"""Quadrature rules on ``[0, 1]`` for path integrals, by name.

A rule maps a number of steps ``n`` to ``(alphas, weights)``: ``∫₀¹ f(α) dα ≈ Σ_s weights[s] · f(alphas[s])``.
Every rule's weights sum to one. ``gausslegendre`` is exact for polynomials of degree ``2n − 1``; the Riemann
rules are kept for comparison with other IG implementations. Unlike Captum's, the trapezoid rule here uses the
spacing ``1 / (n − 1)`` of its nodes, so its weights sum to one.

``loglegendre`` is for scale-invariant segments. A normalisation (LayerNorm, GroupNorm, RMSNorm, …) makes
``F(α · X)`` nearly constant in ``α`` once ``α · X`` is well above the norm's ``eps``, so along ``α · X̂`` most of
the change happens at tiny ``α`` (measured on ViT-B/16: from ``α ≈ 1e-7`` up), where Gauss–Legendre has no
nodes. The rule is Gauss–Legendre in ``u = ln α`` on ``[ln α_min, 0]`` (``n − 1`` nodes, geometrically graded
towards 0) plus one node for ``[0, α_min]`` (``α_min`` = :data:`LOG_FLOOR`), where the segment is linear in
``α``; the log-part weights are scaled to sum to ``1 − α_min``, so constants integrate exactly.

``method="auto"`` (:data:`DEFAULT`) is not a rule: :func:`choose_rule` picks ``loglegendre`` for a segment whose
fx graph contains a scale-invariant normalisation (:func:`is_scale_invariant`) and ``gausslegendre`` elsewhere.
``steps=None`` means the rule's own default (:func:`default_steps`). New rules are added with :func:`register`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F

Rule = Callable[[int], tuple[np.ndarray, np.ndarray]]
RULES: dict[str, Rule] = {}
AUTO = "auto"
DEFAULT = AUTO
# Steps used when the caller gives none: enough for a dataset completeness error below 1e-2 on the models measured
# (docs/core-api.md, "Quadrature"); any rule not listed gets FALLBACK_STEPS.
DEFAULT_STEPS = {"gausslegendre": 16, "loglegendre": 32}
FALLBACK_STEPS = 16
LOG_FLOOR = 1e-10  # α_min of loglegendre


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


@register("loglegendre")
def _log_legendre(n: int):
    if n < 2:
        raise ValueError(f"loglegendre needs at least 2 steps, got {n}")
    nodes, weights = np.polynomial.legendre.leggauss(n - 1)
    span = -np.log(LOG_FLOOR)  # u = ln α runs over [-span, 0]
    alphas = np.exp(span * (nodes - 1) / 2)
    weights = span / 2 * weights * alphas  # dα = α du
    weights *= (1 - LOG_FLOOR) / weights.sum()  # exact for constants even with few nodes
    return np.concatenate([[LOG_FLOOR / 2], alphas]), np.concatenate([[LOG_FLOOR], weights])


# Normalisations that make their output invariant to the scale of their input.
SCALE_INVARIANT_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.instancenorm._InstanceNorm)
SCALE_INVARIANT_FUNCTIONS = {F.layer_norm, F.group_norm, F.rms_norm, F.instance_norm, F.normalize, torch.layer_norm,
                             torch.group_norm, torch.rms_norm, torch.instance_norm}


def check_method(method: str) -> str:
    """``method`` if it names a registered rule or ``"auto"``, else ``ValueError`` listing them."""
    if method != AUTO and method not in RULES:
        raise ValueError(f"unknown quadrature method {method!r}; valid methods are: {', '.join(RULES)} "
                         f"or {AUTO!r} (loglegendre on scale-invariant segments, else gausslegendre)")
    return method


def is_scale_invariant(segment: nn.Module) -> bool:
    """True when ``segment`` (an fx ``GraphModule``, e.g. ``TracedModel.segment``) contains a normalisation that
    is invariant to the scale of its input: a LayerNorm / GroupNorm / RMSNorm / InstanceNorm module or function.
    A segment that is no graph (``gig.hooks.HookSegment``) declares it in its ``scale_invariant`` attribute."""
    declared = getattr(segment, "scale_invariant", None)
    if isinstance(declared, bool):
        return declared
    graph = getattr(segment, "graph", None)
    if not isinstance(graph, fx.Graph):
        raise ValueError(f"method 'auto' needs a torch.fx GraphModule segment, not {type(segment).__name__}")
    for node in graph.nodes:
        if node.op == "call_function" and node.target in SCALE_INVARIANT_FUNCTIONS:
            return True
        if node.op == "call_module" and isinstance(segment.get_submodule(node.target), SCALE_INVARIANT_MODULES):
            return True
        if node.op == "call_method" and node.target in ("layer_norm", "group_norm"):
            return True
    return False


def choose_rule(method: str, segment: nn.Module) -> str:
    """The rule that integrates ``segment``: ``method`` itself, or for ``"auto"`` ``loglegendre`` when the segment
    is scale-invariant (:func:`is_scale_invariant`) and ``gausslegendre`` elsewhere."""
    check_method(method)
    if method != AUTO:
        return method
    return "loglegendre" if is_scale_invariant(segment) else "gausslegendre"


def default_steps(rule: str) -> int:
    """The steps rule ``rule`` runs with when the caller gives none (:data:`DEFAULT_STEPS`)."""
    return DEFAULT_STEPS.get(check_method(rule), FALLBACK_STEPS)


def quadrature(method: str, steps: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights ``(alphas, weights)`` of rule ``method`` with ``steps`` points on ``[0, 1]``."""
    check_method(method)
    if method == AUTO:
        raise ValueError("method 'auto' picks a rule per segment: resolve it with choose_rule(method, segment)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    alphas, weights = RULES[method](steps)
    return (torch.as_tensor(alphas, dtype=dtype, device=device), torch.as_tensor(weights, dtype=dtype, device=device))
