"""Drift between two audits of the same dataset: an earlier model version (reference) and the current one.

Concepts are matched per layer, one to one and greedily by similarity: the Jaccard overlap of their exemplars (the
same image ids and positions; `key="image"` ignores positions) or the cosine of their concept vectors when both
nodes carry a `vector`. Classes match by index. Then, for every matched target, the change of its incoming shares is
the total-variation distance (0 = identical, 1 = disjoint), and every class circuit is compared by the Jaccard
overlap of its (matched) nodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from gigaudit.results import CLASS_LAYER, ConceptGraph

MATCH_METHODS = ("auto", "exemplars", "cosine")
EXEMPLAR_KEYS = ("image_position", "image")


@dataclass(frozen=True)
class Match:
    reference: str
    current: str
    similarity: float


@dataclass
class Drift:
    matches: dict[str, list[Match]]
    matched_fraction: dict[str, float]  # per layer: reference concepts found again
    edge_change: dict[str, float]  # per matched reference target: total-variation distance of incoming shares
    circuit_overlap: dict[str, float]  # per class name: Jaccard of the class circuits' nodes
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # per layer: reference concepts not found

    def summary(self) -> dict[str, float]:
        tv = list(self.edge_change.values())
        return {
            "min_matched_fraction": min(self.matched_fraction.values(), default=0.0),
            "mean_edge_change": sum(tv) / len(tv) if tv else 0.0,
            "max_edge_change": max(tv, default=0.0),
            "min_circuit_overlap": min(self.circuit_overlap.values(), default=1.0),
        }

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(),
            "matched_fraction": self.matched_fraction,
            "edge_change": self.edge_change,
            "circuit_overlap": self.circuit_overlap,
            "matches": {layer: [vars(m) for m in ms] for layer, ms in self.matches.items()},
            "unmatched": self.unmatched,
        }


def compare(reference: ConceptGraph | dict, current: ConceptGraph | dict, *, method: str = "auto",
            key: str = "image_position", min_similarity: float = 0.1, coverage: float = 0.8) -> Drift:
    """Compare two audits of the same dataset; see the module docstring."""
    ref, cur = _view(reference), _view(current)
    if method not in MATCH_METHODS:
        raise ValueError(f"unknown match method {method!r}; valid: {', '.join(MATCH_METHODS)}")
    if key not in EXEMPLAR_KEYS:
        raise ValueError(f"unknown exemplar key {key!r}; valid: {', '.join(EXEMPLAR_KEYS)}")
    if ref.classes and cur.classes and ref.classes != cur.classes:
        raise ValueError(f"the audits have different classes: {ref.classes} vs {cur.classes}")
    layers = [layer for layer in ref.concept_layers if layer in cur.concept_layers]
    if not layers:
        raise ValueError(f"no analysed layer in common: {ref.concept_layers} vs {cur.concept_layers}")

    matches, fraction, unmatched = {}, {}, {}
    for layer in layers:
        ref_nodes, cur_nodes = ref.layer_nodes(layer), cur.layer_nodes(layer)
        matches[layer] = _greedy_match(ref_nodes, cur_nodes, method, key, min_similarity)
        fraction[layer] = len(matches[layer]) / len(ref_nodes) if ref_nodes else 1.0
        found = {m.reference for m in matches[layer]}
        unmatched[layer] = [n["id"] for n in ref_nodes if n["id"] not in found]

    to_ref = {m.current: m.reference for ms in matches.values() for m in ms}
    for node in cur.class_nodes():
        ref_id = f"{CLASS_LAYER}:{node['index']}"
        if ref_id in ref.nodes:
            to_ref[node["id"]] = ref_id
    to_cur = {r: c for c, r in to_ref.items()}

    def mapped(cur_id: str) -> str:
        return to_ref.get(cur_id, "current/" + cur_id)

    edge_change = {}
    for target, target_cur in to_cur.items():
        ref_shares = ref.shares(target)
        cur_shares = {mapped(q): s for q, s in cur.shares(target_cur).items()}
        if ref_shares or cur_shares:
            sources = ref_shares.keys() | cur_shares.keys()
            edge_change[target] = 0.5 * sum(abs(ref_shares.get(q, 0.0) - cur_shares.get(q, 0.0)) for q in sources)

    circuit_overlap = {}
    for node in ref.class_nodes():
        if node["id"] not in to_cur:
            continue
        a = set(ref.circuit(node["index"], coverage)["nodes"])
        b = {mapped(n) for n in cur.circuit(node["index"], coverage)["nodes"]}
        circuit_overlap[ref.class_label(node["id"])] = len(a & b) / len(a | b)
    return Drift(matches, fraction, edge_change, circuit_overlap, unmatched)


def _view(graph: ConceptGraph | dict) -> ConceptGraph:
    return graph if isinstance(graph, ConceptGraph) else ConceptGraph(graph)


def _greedy_match(ref_nodes, cur_nodes, method, key, min_similarity) -> list[Match]:
    pairs = []
    for r in ref_nodes:
        for c in cur_nodes:
            sim = _similarity(r, c, method, key)
            if sim >= min_similarity and sim > 0:
                pairs.append((sim, r["id"], c["id"]))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_ref, used_cur, out = set(), set(), []
    for sim, r, c in pairs:
        if r not in used_ref and c not in used_cur:
            used_ref.add(r)
            used_cur.add(c)
            out.append(Match(r, c, sim))
    return out


def _similarity(a: dict, b: dict, method: str, key: str) -> float:
    if method == "cosine" or (method == "auto" and "vector" in a and "vector" in b):
        if "vector" not in a or "vector" not in b:
            raise ValueError(f"cosine matching needs concept vectors; node {a['id']} or {b['id']} has none")
        return _cosine(a["vector"], b["vector"])
    return _jaccard(_exemplar_keys(a, key), _exemplar_keys(b, key))


def _exemplar_keys(node: dict, key: str) -> set:
    ex = node.get("exemplars") or []
    return {e["image"] for e in ex} if key == "image" else {(e["image"], e["position"]) for e in ex}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _cosine(u: list[float], v: list[float]) -> float:
    if len(u) != len(v):
        raise ValueError(f"concept vectors differ in length: {len(u)} vs {len(v)}")
    nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(x * x for x in v))
    return sum(x * y for x, y in zip(u, v)) / (nu * nv) if nu and nv else 0.0
