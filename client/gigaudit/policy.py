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
    forbidden_concepts:                 # named concepts (probe names, `gigaudit audit --probes DIR`)
      - concept: watermark              # a probe name: the label of graph nodes
        classes: all                    # or a list of class names / indices (default: all)
        max_share: 0.2                  # its share of each class's relevance stays at or below this
        allow_unmatched: true           # a probe that named no concept: pass, reported as unmatched (default;
                                        #   false fails instead). For required_concepts the default is false.
    required_concepts:
      - concept: fur
        classes: [cat]
        min_share: 0.1                  # the class draws at least this share from the concept

Named-concept checks (`named_share`): a class's relevance flows back from its class node along class-conditional
|share| (`ConceptGraph.relevance`, coverage 1); at each layer with nodes labelled `concept`, the share is the part
of the relevance entering that layer that those nodes carry, `S = Σ_r w_r A_r / D_r` over the nodes `r` of the next
layer (`w_r`: `r`'s part of the class's relevance there; `A_r`, `D_r`: Σ |class-conditional mean| of the edges into
`r` from the labelled nodes, from all nodes). Its uncertainty is one standard error by the delta method: every
edge's class-conditional mean `sum_c / count_c` (`class_sums`) has standard error `std / sqrt(count_c)`, with
`std` the edge's spread across all its images (`std`, else from `sum_sq`; the graph keeps no per-class spread,
and the spread across all images is the larger one when classes differ), errors independent across edges; the
relevance `w_r` of the next layer is taken as known (exact for the last concept layer, whose next layer is the
class). A forbidden concept fails when `S - SE > max_share` at some layer, a required one when `S + SE < min_share`
at every layer; both report `share S ± SE`.
"""
from __future__ import annotations

import math
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


class _NamedConceptRule(_Strict):
    concept: str = Field(min_length=1, description="a probe name (the label of graph nodes)")
    classes: Literal["all"] | list[str | int] = "all"


class ForbiddenConcept(_NamedConceptRule):
    max_share: float = Field(ge=0.0, le=1.0)
    # a forbidden probe that names no concept of the model: nothing the model uses matches it, so the check passes,
    # reported as "unmatched" (false: fail instead, e.g. when the probe set itself is in doubt)
    allow_unmatched: bool = True


class RequiredConcept(_NamedConceptRule):
    min_share: float = Field(ge=0.0, le=1.0)
    # a required probe that names no concept: the model has nothing like it, so the check fails (true: pass, reported)
    allow_unmatched: bool = False


class Policy(_Strict):
    version: Literal[1] = 1
    name: str = "default"
    evidence: EvidencePolicy | None = None
    concentration: ConcentrationPolicy | None = None
    drift: DriftPolicy | None = None
    evaluation: EvaluationPolicy | None = None
    forbidden_concepts: list[ForbiddenConcept] = Field(default_factory=list)
    required_concepts: list[RequiredConcept] = Field(default_factory=list)


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None = None
    threshold: float | None = None
    detail: str = ""
    uncertainty: float | None = None  # one standard error of `value` (named-concept checks)


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
    if policy.forbidden_concepts or policy.required_concepts:
        result.checks += _named_concept_checks(policy, view)
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


# ---------------------------------------------------------------------------------------------- named concepts
def named_share(view: ConceptGraph | dict, cls: int | str, name: str) -> tuple[float, float]:
    """``(share, uncertainty)``: the largest share of class ``cls``'s relevance that the nodes labelled ``name``
    carry at one layer, and its standard error (module docstring). ``(0.0, 0.0)`` when no node carries the name;
    ``ValueError`` for an unknown class."""
    view = view if isinstance(view, ConceptGraph) else ConceptGraph(view)
    shares = named_shares(view, cls, name)
    return max(shares.values(), default=(0.0, 0.0))


def named_shares(view: ConceptGraph, cls: int | str, name: str) -> dict[str, tuple[float, float]]:
    """``{layer: (share, uncertainty)}`` of every layer with a node labelled ``name`` (see :func:`named_share`)."""
    class_id = view.class_node(cls)
    class_index = view.nodes[class_id]["index"]
    relevance, _ = view.relevance(cls, coverage=1.0)
    labelled = {node for node, label in node_labels(view).items() if label == name}
    out = {}
    for position, layer in enumerate(view.layers[:-1]):
        named = {node for node in labelled if view.nodes[node]["layer"] == layer}
        if named:
            targets = [n["id"] for n in view.layer_nodes(view.layers[position + 1])]
            out[layer] = _layer_share(view, class_index, relevance, targets, named)
    return out


def node_labels(view: ConceptGraph) -> dict[str, str]:
    """``{node id: name}``: node ``label`` fields, else the audit's ``evidence.naming.labels``."""
    labels = {node: pair[0] for node, pair in (_naming(view).get("labels") or {}).items() if node in view.nodes}
    labels.update({node_id: node["label"] for node_id, node in view.nodes.items() if node.get("label")})
    return labels


def _naming(view: ConceptGraph) -> dict:
    naming = view.evidence.get("naming")
    return naming if isinstance(naming, dict) else {}


def _layer_share(view: ConceptGraph, class_index: int, relevance: dict[str, float], targets: list[str],
                 named: set[str]) -> tuple[float, float]:
    """The share of the relevance entering a layer that ``named`` nodes carry, and its delta-method error."""
    rows = []
    for target in targets:
        weight = relevance.get(target, 0.0)
        if weight <= 0:
            continue
        edges = []
        for edge in view.incoming(target):
            total, count = (edge.get("class_sums") or {}).get(str(class_index), (0.0, 0))
            if count:
                edges.append((edge["source"] in named, abs(total / count), _spread(edge) / math.sqrt(count)))
        denominator = sum(m for _, m, _ in edges)
        if denominator > 0:
            rows.append((weight, sum(m for is_named, m, _ in edges if is_named), denominator, edges))
    weights = sum(w for w, *_ in rows)
    if not weights:
        return 0.0, 0.0
    share, variance = 0.0, 0.0
    for weight, named_sum, denominator, edges in rows:
        w = weight / weights
        share += w * named_sum / denominator
        for is_named, _, error in edges:  # dS/dm = w (D - A) / D² for a named source, -w A / D² otherwise
            slope = w * ((denominator - named_sum) if is_named else -named_sum) / denominator ** 2
            variance += (slope * error) ** 2
    return share, math.sqrt(variance)


def _spread(edge: dict) -> float:
    """An edge's standard deviation across its images (``std``, else from ``sum_sq``; 0 when neither is kept)."""
    if edge.get("std") is not None:
        return float(edge["std"])
    if edge.get("sum_sq") is not None and edge.get("count"):
        mean = edge["sum"] / edge["count"]
        return math.sqrt(max(0.0, edge["sum_sq"] / edge["count"] - mean * mean))
    return 0.0


def _named_concept_checks(policy: Policy, view: ConceptGraph) -> list[Check]:
    """The checks of ``forbidden_concepts`` and ``required_concepts``; ValueError for an unknown class or name
    (before any check is made)."""
    labels = set(node_labels(view).values())
    naming = _naming(view)
    probes = set(naming.get("matches") or {}) | set(naming.get("unmatched") or []) | set(naming.get("probes") or {})
    rules = [("forbidden_concept", rule) for rule in policy.forbidden_concepts] + \
            [("required_concept", rule) for rule in policy.required_concepts]
    planned = []
    for kind, rule in rules:
        if rule.concept not in labels and rule.concept not in probes:
            named = ", ".join(sorted(labels)) or "none"
            raise ValueError(f"{kind} {rule.concept!r}: no node of the graph carries this name and the audit had no "
                             f"such probe; named concepts: {named}; probes: {', '.join(sorted(probes)) or 'none'} "
                             "(`gigaudit audit --probes DIR`)")
        classes = [n["id"] for n in view.class_nodes()] if rule.classes == "all" else \
            [view.class_node(c) for c in rule.classes]  # ValueError lists the valid classes
        planned.append((kind, rule, classes))
    checks = []
    for kind, rule, classes in planned:
        if rule.concept not in labels:  # a probe that named nothing: reported, never a silent pass
            best = ((naming.get("probes") or {}).get(rule.concept) or {}).get("best") or {}
            how_close = f" (best score {best['score']:.2f} at {best.get('node')})" if best.get("score") else ""
            outcome = ("passes: no concept of the model matches what is forbidden (allow_unmatched: false fails "
                       "instead)" if rule.allow_unmatched and kind == "forbidden_concept" else
                       "allowed by allow_unmatched" if rule.allow_unmatched else
                       "fails: the model has no concept like what is required" if kind == "required_concept" else
                       "fails (allow_unmatched: false)")
            checks.append(Check(f"{kind}[{rule.concept}]", rule.allow_unmatched, detail=(
                f"unmatched: probe {rule.concept!r} named no concept of the audit{how_close}; {outcome}")))
            continue
        for class_id in classes:
            shares = named_shares(view, class_id, rule.concept)
            label = view.class_label(class_id)
            checks.append(_forbidden(kind, rule, label, shares) if kind == "forbidden_concept"
                          else _required(kind, rule, label, shares))
    return checks


def _forbidden(kind: str, rule: ForbiddenConcept, label: str, shares: dict) -> Check:
    """Fails when at some layer the share exceeds ``max_share`` by more than its uncertainty."""
    layer, (share, error) = max(shares.items(), key=lambda item: item[1][0] - item[1][1])
    passed = share - error <= rule.max_share
    relation = ">" if share > rule.max_share else "≤"
    within = ", within its uncertainty" if passed and share > rule.max_share else ""
    return Check(f"{kind}[{rule.concept}, {label}]", passed, share, rule.max_share,
                 f"share {share:.2f} ± {error:.2f} {relation} {rule.max_share:.2f} at {layer}{within}", error)


def _required(kind: str, rule: RequiredConcept, label: str, shares: dict) -> Check:
    """Fails when at every layer the share falls short of ``min_share`` by more than its uncertainty."""
    layer, (share, error) = max(shares.items(), key=lambda item: item[1][0] + item[1][1])
    passed = share + error >= rule.min_share
    relation = "<" if share < rule.min_share else "≥"
    within = ", within its uncertainty" if passed and share < rule.min_share else ""
    return Check(f"{kind}[{rule.concept}, {label}]", passed, share, rule.min_share,
                 f"share {share:.2f} ± {error:.2f} {relation} {rule.min_share:.2f} at {layer}{within}", error)
