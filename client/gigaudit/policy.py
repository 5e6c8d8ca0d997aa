"""Audit policies: YAML thresholds a pipeline gates a model on, and their evaluation against a concept graph.

Example (every section and field is optional; unknown fields are refused):

    evidence:
      max_completeness_delta: 0.05      # per layer pair, on `completeness_statistic` (delta_mean or delta_max)
      max_reconstruction_error: 0.5     # per layer, relative error of the concept decomposition
      min_spliced_agreement: 0.9        # per layer, top-1 agreement when the reconstruction is spliced in
      beats_baselines: true             # deletion/insertion AUCs better than every baseline
    concentration:
      max_share: 0.6                    # no class draws more than this of its relevance from one concept
      layers: all                       # or "last"
    drift:                              # needs a reference audit (graph.json of an earlier model version)
      max_mean_edge_change: 0.3
      min_matched_fraction: 0.5
      min_circuit_overlap: 0.3
    evaluation:                         # what `gigaudit audit` asks the server to evaluate (flags override it)
      images: 64                        # evaluation images (default: gig.evaluate's, 16)
      metrics: [default, stability, sanity]   # "default" = gig.evaluate's default set
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gigaudit import drift as drift_module
from gigaudit import evidence as ev
from gigaudit.results import ConceptGraph

Fraction = Field(default=None, ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvidencePolicy(_Strict):
    max_completeness_delta: float | None = Field(default=None, gt=0.0)
    completeness_statistic: Literal["delta_mean", "delta_max"] = "delta_mean"
    max_reconstruction_error: float | None = Field(default=None, gt=0.0)
    min_spliced_agreement: float | None = Fraction
    beats_baselines: bool = False
    auc_margin: float = Field(default=0.0, ge=0.0)
    on_missing: Literal["fail", "skip"] = "fail"


class ConcentrationPolicy(_Strict):
    max_share: float = Field(gt=0.0, le=1.0)
    layers: Literal["all", "last"] = "all"


class DriftPolicy(_Strict):
    max_mean_edge_change: float | None = Fraction
    max_edge_change: float | None = Fraction
    min_matched_fraction: float | None = Fraction
    min_circuit_overlap: float | None = Fraction
    match: Literal["auto", "exemplars", "cosine"] = "auto"
    key: Literal["image_position", "image"] = "image_position"
    min_similarity: float = Field(default=0.1, ge=0.0, le=1.0)
    coverage: float = Field(default=0.8, gt=0.0, le=1.0)


METRICS = ("completeness", "reconstruction", "deletion", "target_deletion", "fidelity", "stability", "sanity")
DEFAULT_METRICS = ("completeness", "reconstruction", "deletion", "target_deletion", "fidelity")  # gig.evaluate's


def expand_metrics(names) -> list[str]:
    """Metric names with "default" standing for gig.evaluate's default set, deduplicated in order; ValueError for
    an unknown one. Empty in, empty out (the server's default)."""
    out: list[str] = []
    for name in names or ():
        for metric in (DEFAULT_METRICS if name == "default" else (name,)):
            if metric not in METRICS:
                from gigaudit.suggest import unknown

                raise ValueError(unknown("metric", metric, [*METRICS, "default"], "gigaudit audit --help"))
            if metric not in out:
                out.append(metric)
    return out


class EvaluationPolicy(_Strict):
    images: int | None = Field(default=None, ge=1, le=100_000)
    metrics: list[str] | None = None

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value):
        return None if value is None else expand_metrics(value)


class Policy(_Strict):
    version: Literal[1] = 1
    name: str = "default"
    evidence: EvidencePolicy | None = None
    concentration: ConcentrationPolicy | None = None
    drift: DriftPolicy | None = None
    evaluation: EvaluationPolicy | None = None


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


@dataclass
class PolicyResult:
    policy: str
    checks: list[Check] = field(default_factory=list)
    drift: dict | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "drift": self.drift}


def load_policy(source: str | Path | dict) -> Policy:
    """A policy from a YAML file or a dict; ValueError names every bad field."""
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = yaml.safe_load(_policy_text(source)) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"policy is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"a policy is a mapping of sections (evidence, concentration, drift, evaluation), got {data!r:.80}")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid policy: {problems}") from None


def _policy_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"policy file not found: {path}")
    return path.read_text()


def evaluate_policy(policy: Policy | str | Path | dict, graph: ConceptGraph | dict,
                    reference: ConceptGraph | dict | None = None) -> PolicyResult:
    """Evaluate every check of `policy` on `graph` (and against `reference` for drift)."""
    policy = policy if isinstance(policy, Policy) else load_policy(policy)
    view = graph if isinstance(graph, ConceptGraph) else ConceptGraph(graph)
    result = PolicyResult(policy.name)
    if policy.evidence:
        result.checks += _evidence_checks(policy.evidence, view.evidence)
    if policy.concentration:
        result.checks += _concentration_checks(policy.concentration, view)
    if policy.drift:
        if reference is None:
            result.checks.append(Check("drift", False, detail="the policy has drift checks but no reference audit"))
        else:
            result.drift, checks = _drift_checks(policy.drift, reference, view)
            result.checks += checks
    return result


def _at_most(name: str, value: float, limit: float, detail: str = "") -> Check:
    return Check(name, value <= limit, value, limit, detail)


def _at_least(name: str, value: float, limit: float, detail: str = "") -> Check:
    return Check(name, value >= limit, value, limit, detail)


def _evidence_checks(p: EvidencePolicy, evidence: dict) -> list[Check]:
    checks: list[Check] = []

    def missing(name: str, what: str) -> None:
        if p.on_missing == "fail":
            checks.append(Check(name, False, detail=f"no {what} in the audit's evidence"))

    def scalar_checks(name: str, section: dict, metric: str, limit: float | None, compare) -> None:
        if limit is None:
            return
        rows = {k: v[metric] for k, v in section.items() if v.get(metric) is not None}
        if not rows:
            missing(name, metric)
        for key, value in rows.items():
            checks.append(compare(f"{name}[{key}]", float(value), limit))

    scalar_checks("completeness", ev.completeness(evidence), p.completeness_statistic, p.max_completeness_delta,
                  _at_most)
    recon = ev.reconstruction(evidence)
    scalar_checks("reconstruction_error", recon, "relative_error", p.max_reconstruction_error, _at_most)
    scalar_checks("spliced_agreement", recon, "spliced_top1", p.min_spliced_agreement, _at_least)
    if p.beats_baselines:
        sets = ev.curve_sets(evidence)
        if not sets:
            missing("beats_baselines", "deletion/insertion curves")
        for s in sets:
            ok, best = s.beats_baselines(p.auc_margin)
            detail = (f"{ev.METHOD} AUC {s.auc.get(ev.METHOD, float('nan')):.4g} vs best baseline {best} "
                      f"{s.auc[best]:.4g} ({s.better} is better)") if best else "no baselines or no gig curve"
            checks.append(Check(s.label, ok, s.auc.get(ev.METHOD), s.auc.get(best), detail))
    return checks


def _concentration_checks(p: ConcentrationPolicy, view: ConceptGraph) -> list[Check]:
    layers = view.concept_layers[-1:] if p.layers == "last" else view.concept_layers
    checks = []
    for node in view.class_nodes():
        rel, _ = view.relevance(node["index"], coverage=1.0)
        worst = (0.0, "", "")
        for layer in layers:
            in_layer = {n: r for n, r in rel.items() if view.nodes[n]["layer"] == layer}
            total = sum(in_layer.values())
            if total > 0:
                top = max(in_layer, key=in_layer.get)
                worst = max(worst, (in_layer[top] / total, top, layer))
        label = view.class_label(node["id"])
        detail = f"largest share from {worst[1]}" if worst[1] else "no incoming relevance"
        checks.append(_at_most(f"concentration[{label}]", worst[0], p.max_share, detail))
    return checks


def _drift_checks(p: DriftPolicy, reference, view: ConceptGraph) -> tuple[dict, list[Check]]:
    drift = drift_module.compare(reference, view, method=p.match, key=p.key, min_similarity=p.min_similarity,
                                 coverage=p.coverage)
    s = drift.summary()
    checks = []
    if p.max_mean_edge_change is not None:
        checks.append(_at_most("drift.mean_edge_change", s["mean_edge_change"], p.max_mean_edge_change))
    if p.max_edge_change is not None:
        worst = max(drift.edge_change, key=drift.edge_change.get, default="")
        checks.append(_at_most("drift.max_edge_change", s["max_edge_change"], p.max_edge_change,
                               f"largest change into {worst}" if worst else ""))
    if p.min_matched_fraction is not None:
        for layer, frac in drift.matched_fraction.items():
            checks.append(_at_least(f"drift.matched_fraction[{layer}]", frac, p.min_matched_fraction))
    if p.min_circuit_overlap is not None:
        for cls, overlap in drift.circuit_overlap.items():
            checks.append(_at_least(f"drift.circuit_overlap[{cls}]", overlap, p.min_circuit_overlap))
    return drift.to_dict(), checks
