"""Reading the evidence a graph carries (`graph["evidence"]`, DESIGN §1.5) into flat rows and curves.

Layout read here (missing parts are simply absent):
    completeness:   {"a->b": {"delta_mean", "delta_max", "steps", "by_steps": {"16": delta, ...}}}
    reconstruction: {"layer": {"relative_error", "l0", "spliced_top1", "spliced_kl"}}
    deletion / insertion / c_deletion / c_insertion:
                    {"a->b": {"fractions": [...], "curves": {"gig": [...], "random": [...], ...},
                              "auc": {"gig": float, "random": float, ...}}}
The attribution under test is named "gig"; every other curve is a baseline. A deletion curve should fall fast
(lower AUC is better), an insertion curve should rise fast (higher AUC is better).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHOD = "gig"
CURVE_KINDS = {"deletion": "lower", "insertion": "higher", "c_deletion": "lower", "c_insertion": "higher"}


@dataclass(frozen=True)
class CurveSet:
    """Deletion or insertion curves of one layer pair: the method's and its baselines', with AUCs."""

    kind: str
    pair: str
    fractions: list[float]
    curves: dict[str, list[float]]
    auc: dict[str, float]

    @property
    def better(self) -> str:
        return CURVE_KINDS[self.kind]

    def beats_baselines(self, margin: float = 0.0) -> tuple[bool, str | None]:
        """Whether the method's AUC beats every baseline by `margin`; and the best baseline's name."""
        if METHOD not in self.auc:
            return False, None
        baselines = {k: v for k, v in self.auc.items() if k != METHOD}
        if not baselines:
            return False, None
        if self.better == "lower":
            best = min(baselines, key=baselines.get)
            return self.auc[METHOD] <= baselines[best] - margin, best
        best = max(baselines, key=baselines.get)
        return self.auc[METHOD] >= baselines[best] + margin, best


def completeness(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(evidence.get("completeness") or {})


def reconstruction(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(evidence.get("reconstruction") or {})


def curve_sets(evidence: dict[str, Any]) -> list[CurveSet]:
    """Every deletion/insertion curve set in the evidence; AUCs are computed (trapezoid) where not given."""
    out = []
    for kind in CURVE_KINDS:
        for pair, entry in (evidence.get(kind) or {}).items():
            curves = {k: [float(v) for v in c] for k, c in (entry.get("curves") or {}).items()}
            n = max((len(c) for c in curves.values()), default=0)
            fractions = [float(f) for f in entry.get("fractions") or _even(n)]
            auc = {k: float(v) for k, v in (entry.get("auc") or {}).items()}
            for name, curve in curves.items():
                auc.setdefault(name, _trapezoid(fractions, curve))
            out.append(CurveSet(kind, pair, fractions, curves, auc))
    return out


def other_metrics(evidence: dict[str, Any]) -> dict[str, Any]:
    """Evidence not covered above, flattened to 'a.b.c' → scalar, for a generic table."""
    known = {"completeness", "reconstruction", *CURVE_KINDS}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value

    for key, value in evidence.items():
        if key not in known:
            walk(key, value)
    return flat


def _even(n: int) -> list[float]:
    return [i / (n - 1) for i in range(n)] if n > 1 else [0.0] * n


def _trapezoid(xs: list[float], ys: list[float]) -> float:
    if len(xs) != len(ys):
        raise ValueError(f"curve has {len(ys)} points but {len(xs)} fractions")
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))
