"""Reading the evidence a graph carries (`graph["evidence"]`, DESIGN §1.5, written by `gig.evaluation`).

Layout read here (missing parts are simply absent):
    completeness:   {"a->b": {"delta_mean", "delta_max", "steps", "versus_steps": [{"steps", "delta_mean"}, ...]}}
    reconstruction: {"layer": {"relative_error", "l0", "spliced_top1", "spliced_kl"}}
    any section of deletion/insertion reports (e.g. "deletion_insertion"):
                    {"a->b": {"orders": {"gig": {"deletion_auc", "insertion_auc", "deletion_curve",
                                                 "insertion_curve"}, "random": {...}, ...}, "n_points"}}
The ordering under test is "gig"; every other ordering is a baseline. A deletion curve should fall fast (lower AUC
is better), an insertion curve should rise fast (higher AUC is better).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METHOD = "gig"
CURVE_KINDS = {"deletion": "lower", "insertion": "higher"}


@dataclass(frozen=True)
class CurveSet:
    """Deletion or insertion curves of one layer pair: the method's and its baselines', with AUCs."""

    kind: str
    pair: str
    fractions: list[float]
    curves: dict[str, list[float]]
    auc: dict[str, float]
    section: str = "deletion"  # the evidence section: "deletion" (the paper's readout), "target_deletion", ...

    @property
    def better(self) -> str:
        return CURVE_KINDS[self.kind]

    @property
    def label(self) -> str:
        """``kind[pair]``, prefixed by the section when it is not the paper's ``deletion``."""
        name = f"{self.kind}[{self.pair}]"
        return name if self.section == "deletion" else f"{self.section}: {name}"

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


def in_layer_order(evidence: dict[str, Any], layers: list[str]) -> dict[str, Any]:
    """The evidence with every section's "layer" and "a->b" keys sorted in forward layer order."""
    rank = {layer: i for i, layer in enumerate(layers)}

    def key(name: str) -> tuple:
        return tuple(rank.get(part, len(rank)) for part in name.split("->")) + (name,)

    def ordered(section: Any) -> Any:
        if isinstance(section, dict) and section and all(k.split("->")[0] in rank for k in section):
            return {k: section[k] for k in sorted(section, key=key)}
        return section

    return {name: ordered(section) for name, section in evidence.items()}


def completeness(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(evidence.get("completeness") or {})


def reconstruction(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(evidence.get("reconstruction") or {})


def curve_sections(evidence: dict[str, Any]) -> list[str]:
    """Names of the evidence sections that hold deletion/insertion reports."""
    return [name for name, section in evidence.items() if isinstance(section, dict) and section
            and all(isinstance(v, dict) and isinstance(v.get("orders"), dict) for v in section.values())]


def curve_sets(evidence: dict[str, Any]) -> list[CurveSet]:
    """Every deletion and insertion curve set in the evidence (orderings without rows, i.e. None, are left out)."""
    out = []
    for section in curve_sections(evidence):
        for pair, report in evidence[section].items():
            for kind in CURVE_KINDS:
                curves, auc = {}, {}
                for order, figures in report["orders"].items():
                    curve = figures.get(f"{kind}_curve")
                    if figures.get(f"{kind}_auc") is not None and curve and None not in curve:
                        curves[order] = [float(v) for v in curve]
                        auc[order] = float(figures[f"{kind}_auc"])
                if curves:
                    n = len(next(iter(curves.values())))
                    fractions = [i / (n - 1) for i in range(n)] if n > 1 else [0.0]
                    out.append(CurveSet(kind, pair, fractions, curves, auc, section))
    return out


def other_metrics(evidence: dict[str, Any]) -> dict[str, Any]:
    """Evidence not covered above, flattened to 'a.b.c' → scalar, for a generic table."""
    known = {"completeness", "reconstruction", *curve_sections(evidence)}
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
