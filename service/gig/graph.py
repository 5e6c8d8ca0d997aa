"""The dataset-wide concept graph: nodes, edges, their raw accumulators, class-conditional views and circuits.

A :class:`ConceptGraph` stores sums, never means, so that graphs of dataset shards merge exactly
(:meth:`ConceptGraph.merge` is associative and commutative). Everything a reader wants — means, standard
deviations, shares, frequencies — is derived when asked for. The dict format is ``docs/graph-format.md``.

Who counts what:
- a concept node counts the images in which it is *present* (a positive coefficient somewhere), in total and per
  class, sums its positive coefficients and keeps its top exemplars (one position per image, its strongest) —
  as :func:`gig.extract_concepts` does for a concept set; a class node counts the images whose class (label,
  else prediction) it is;
- every node counts the images in which it was a GIG *target*; that is the ``count`` of all of its incoming edges,
  because an edge ``q → r`` receives a value (possibly zero) from every image in which ``r`` was a target;
- an edge sums ``GIG(q → r)`` over those images, in total, squared, split by sign and per class of the image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch

from gig.layers import LOGITS
from gigaudit import circuits

FORMAT = "gigaudit.concept-graph/1"
N_EXEMPLARS = 8


def node_id(layer: str, index: int) -> str:
    """``"<layer>:<index>"``; class nodes live on layer ``"logits"``."""
    return f"{layer}:{index}"


@dataclass
class _Node:
    count: int = 0  # images where present (concepts) or of this class (classes)
    class_counts: dict[int, int] = field(default_factory=dict)  # concepts: class -> images where present
    coefficient_sum: float = 0.0  # concepts: sum of the positive coefficients
    positive_count: int = 0  # concepts: number of positive coefficients (PFVs)
    target_count: int = 0  # images in which the node was a target
    target_class_counts: dict[int, int] = field(default_factory=dict)
    exemplars: list[tuple[int, int, float]] = field(default_factory=list)  # (image, position, coefficient)


@dataclass
class _Edge:
    sum: float = 0.0
    sum_sq: float | None = 0.0  # None in a class-conditional graph: only [sum, count] is kept per class
    pos_sum: float | None = 0.0
    neg_sum: float | None = 0.0
    class_sums: dict[int, float] = field(default_factory=dict)


class ConceptGraph:
    """Concept nodes of every analysed layer, class nodes on ``"logits"``, and GIG edges between consecutive layers.

    ``sizes`` maps each analysed layer to its number of concepts ``K``; ``n_classes`` is the number of logits.
    With ``residual=True`` (GIG on the activation path) every analysed layer has one more node, index ``K``, kind
    ``"residual"``: the part of the activation the concepts do not reconstruct. Graphs are filled by
    :func:`gig.build_graph` through :meth:`add_images`, :meth:`add_presence` and :meth:`add_attributions`.
    """

    def __init__(self, sizes: dict[str, int], n_classes: int, classes: Sequence[str] | None = None,
                 params: dict | None = None, n_exemplars: int = N_EXEMPLARS, residual: bool = False):
        if not isinstance(sizes, dict) or not sizes or LOGITS in sizes:
            raise ValueError(f"sizes must map analysed layers (not {LOGITS!r}) to concept counts, got {sizes!r}")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in [*sizes.values(), n_classes]):
            raise ValueError(f"concept counts and n_classes must be positive integers, got {sizes}, {n_classes}")
        classes = list(classes or [])
        if classes and len(classes) != n_classes:
            raise ValueError(f"{len(classes)} class names given for {n_classes} classes")
        self.sizes = {**sizes, LOGITS: n_classes}
        self.layers = list(self.sizes)
        self.classes = [str(c) for c in classes]
        self.params = dict(params or {})
        self.n_exemplars = n_exemplars
        self.residual = bool(residual)
        self.n_images = 0
        self.evidence: dict = {}
        self._nodes = {node_id(layer, i): _Node() for layer, k in self.sizes.items()
                       for i in range(k + (self.residual and layer != LOGITS))}
        self._edges: dict[tuple[str, str], _Edge] = {}

    # ------------------------------------------------------------------ filling
    def add_images(self, n: int) -> None:
        self.n_images += int(n)

    def add_presence(self, layer: str, coefficients: torch.Tensor, classes: torch.Tensor,
                     image_ids: torch.Tensor) -> None:
        """Count where each concept of ``layer`` is present: ``coefficients`` ``(B, P, K)``, ``classes`` and global
        ``image_ids`` ``(B,)``. Keeps each concept's top exemplars (one position per image)."""
        self._check_layer(layer, coefficients.shape[-1])
        positive = coefficients.detach().double().clamp_min(0).cpu()
        best, where = positive.max(1)  # (B, K): each image's strongest position per concept
        sums, counts = positive.sum((0, 1)).tolist(), (positive > 0).sum((0, 1)).tolist()
        n = min(self.n_exemplars, best.shape[0])
        top_values, top_rows = best.topk(n, dim=0)  # (n, K)
        classes, image_ids, where = classes.cpu().tolist(), image_ids.cpu().tolist(), where.tolist()
        for b, k in (best > 0).nonzero().tolist():
            node = self._nodes[node_id(layer, k)]
            node.count += 1
            node.class_counts[classes[b]] = node.class_counts.get(classes[b], 0) + 1
        for k, (values, rows) in enumerate(zip(top_values.T.tolist(), top_rows.T.tolist())):
            node = self._nodes[node_id(layer, k)]
            node.coefficient_sum += sums[k]
            node.positive_count += counts[k]
            found = [(image_ids[r], where[r][k], v) for v, r in zip(values, rows) if v > 0]
            if found:
                node.exemplars = _top_exemplars(node.exemplars + found, self.n_exemplars)

    def add_attributions(self, source: str, target: str, attributions: torch.Tensor, targets: torch.Tensor,
                         classes: torch.Tensor) -> None:
        """Add per-image GIG values ``attributions`` ``(B, K_source, T)`` to the targets ``targets`` ``(B, T)`` of
        layer ``target`` (classes for ``"logits"``); ``classes`` ``(B,)`` are the images' classes."""
        rank = {layer: i for i, layer in enumerate(self.layers)}
        if source not in rank or target not in rank or rank[target] != rank[source] + 1:
            raise ValueError(f"edges run between consecutive layers of {self.layers}, not {source!r} -> {target!r}")
        batch, k_source, n_targets = attributions.shape
        self._check_layer(source, k_source - self.residual)
        targets, classes = targets.cpu().numpy(), classes.cpu().numpy()
        for b in range(batch):
            for t in range(n_targets):
                node = self._nodes[node_id(target, int(targets[b, t]))]
                node.target_count += 1
                node.target_class_counts[int(classes[b])] = node.target_class_counts.get(int(classes[b]), 0) + 1
                if target == LOGITS:
                    node.count += 1
        values = attributions.detach().double().cpu().numpy()
        b, q, t = np.nonzero(values)
        if not len(b):
            return
        # Sum the batch's non-zero values per (source, target, class) before touching Python objects.
        keys = np.stack([q, targets[b, t], classes[b]], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        v = values[b, q, t]
        sums = [np.bincount(inverse.ravel(), weights=w, minlength=len(unique)).tolist()
                for w in (v, v * v, np.maximum(v, 0), np.minimum(v, 0))]
        for (qi, ri, ci), s, s2, pos, neg in zip(unique.tolist(), *sums):
            edge = self._edges.setdefault((node_id(source, qi), node_id(target, ri)), _Edge())
            edge.sum += s
            edge.sum_sq += s2
            edge.pos_sum += pos
            edge.neg_sum += neg
            edge.class_sums[ci] = edge.class_sums.get(ci, 0.0) + s

    def _check_layer(self, layer: str, size: int) -> None:
        if layer not in self.sizes or layer == LOGITS:
            raise ValueError(f"unknown layer {layer!r}; this graph's layers are: {', '.join(self.layers[:-1])}")
        if size != self.sizes[layer]:
            raise ValueError(f"layer {layer!r} has {self.sizes[layer]} concepts in this graph, not {size}")

    # ------------------------------------------------------------------ derived views
    def node(self, nid: str) -> dict:
        """The node ``nid`` as in the dict format (derived fields included)."""
        if nid not in self._nodes:
            raise ValueError(f"unknown node {nid!r}; node ids are '<layer>:<index>' with layers {self.layers}")
        node = self._nodes[nid]
        layer, _, index = nid.rpartition(":")
        kind = "class" if layer == LOGITS else "residual" if int(index) == self.sizes[layer] else "concept"
        out = {"id": nid, "layer": layer, "index": int(index), "kind": kind}
        if layer == LOGITS and self.classes:
            out["name"] = self.classes[int(index)]
        out.update(count=node.count, frequency=node.count / self.n_images if self.n_images else 0.0)
        if layer != LOGITS:
            out.update(mean_coefficient=node.coefficient_sum / node.positive_count if node.positive_count else 0.0,
                       coefficient_sum=node.coefficient_sum, positive_count=node.positive_count,
                       class_counts={str(c): n for c, n in sorted(node.class_counts.items())},
                       exemplars=[{"image": i, "position": p, "coefficient": c} for i, p, c in node.exemplars])
        out.update(target_count=node.target_count,
                   target_class_counts={str(c): n for c, n in sorted(node.target_class_counts.items())})
        return out

    def edge(self, source: str, target: str) -> dict:
        """The edge ``source → target`` as in the dict format: raw sums, ``mean``, ``std``, ``share``."""
        edge = self._edges.get((source, target))
        if edge is None:
            raise ValueError(f"no edge {source!r} -> {target!r} in this graph")
        return self._edge_dict(source, target, edge, self._norms().get(target, 0.0))

    def edges(self) -> list[dict]:
        """Every stored edge, in forward order of target layer, then target, then source."""
        norms = self._norms()
        ordered = sorted(self._edges.items(), key=_order_key(self))
        return [self._edge_dict(s, t, e, norms.get(t, 0.0)) for (s, t), e in ordered]

    def _norms(self) -> dict[str, float]:
        """``Σ_q |sum(q → r)|`` per target ``r``: all edges into ``r`` share one count, so shares are sum ratios."""
        norms: dict[str, float] = {}
        for (_, target), edge in self._edges.items():
            norms[target] = norms.get(target, 0.0) + abs(edge.sum)
        return norms

    def _edge_dict(self, source: str, target: str, edge: _Edge, norm: float) -> dict:
        node = self._nodes[target]
        count = node.target_count
        mean = edge.sum / count if count else 0.0
        std = None
        if edge.sum_sq is not None:
            std = math.sqrt(max(edge.sum_sq / count - mean * mean, 0.0)) if count else 0.0
        return {
            "source": source, "target": target, "count": count, "sum": edge.sum, "sum_sq": edge.sum_sq,
            "pos_sum": edge.pos_sum, "neg_sum": edge.neg_sum, "mean": mean, "std": std,
            "share": edge.sum / norm if norm else 0.0,
            "class_sums": {str(c): [s, node.target_class_counts.get(c, 0)] for c, s in sorted(edge.class_sums.items())},
        }

    def incoming(self, nid: str) -> list[dict]:
        """Edges into ``nid``, largest ``|share|`` first."""
        return sorted((e for e in self.edges() if e["target"] == nid), key=lambda e: -abs(e["share"]))

    def class_index(self, cls) -> int:
        """A class given by index or name; ``ValueError`` lists the valid classes."""
        n = self.sizes[LOGITS]
        if isinstance(cls, str) and cls in self.classes:
            return self.classes.index(cls)
        if not isinstance(cls, bool) and isinstance(cls, int) and 0 <= cls < n:
            return cls
        names = f" or one of {self.classes}" if self.classes else ""
        raise ValueError(f"unknown class {cls!r}; valid classes are 0..{n - 1}{names}")

    def class_graph(self, cls) -> "ConceptGraph":
        """The graph of the images of one class only (their label, else their predicted class).

        Edges keep ``[sum, count]`` per class, so the class graph's edges have ``sum`` and ``count`` (hence
        ``mean`` and ``share``) but no ``sum_sq`` / ``pos_sum`` / ``neg_sum`` / ``std`` (``None``). Concept nodes
        count the class's images; their mean coefficient and exemplars are those of the whole graph. Summing the
        class graphs of all classes gives back every count and sum.
        """
        c = self.class_index(cls)
        out = self._empty_like()
        out.n_images = self._nodes[node_id(LOGITS, c)].count
        for nid, node in self._nodes.items():
            mine = out._nodes[nid]
            if nid.startswith(LOGITS + ":"):
                mine.count = node.count if nid == node_id(LOGITS, c) else 0
            else:
                mine.count = node.class_counts.get(c, 0)
                mine.class_counts = {c: mine.count} if mine.count else {}
                mine.coefficient_sum, mine.positive_count = node.coefficient_sum, node.positive_count
            mine.target_count = node.target_class_counts.get(c, 0)
            mine.target_class_counts = {c: mine.target_count} if mine.target_count else {}
            mine.exemplars = list(node.exemplars)
        for key, edge in self._edges.items():
            if c in edge.class_sums:
                out._edges[key] = _Edge(edge.class_sums[c], None, None, None, {c: edge.class_sums[c]})
        out.evidence = {}
        return out

    def circuit(self, cls, coverage: float = 0.8) -> dict:
        """The subgraph that carries ``coverage`` of a class's relevance.

        Relevance starts at 1 on the class node and flows backwards, layer by layer, along the class-conditional
        ``|share|`` of each edge (flow = relevance of the target × ``|share|``). At each layer the largest flows
        are kept until they carry ``coverage`` of that layer's total; a source's relevance is the sum of its kept
        flows. Returns ``{"class": id, "nodes": [...], "edges": [(source, target), ...], "relevance": {id: r}}``.
        """
        circuits.check_coverage(coverage)
        c = self.class_index(cls)
        graph = self.class_graph(c)
        start = node_id(LOGITS, c)
        incoming: dict[str, list[tuple[str, float]]] = {}
        for e in graph.edges():
            incoming.setdefault(e["target"], []).append((e["source"], e["share"]))
        relevance, kept = circuits.propagate({start: 1.0}, lambda target: incoming.get(target, ()), coverage)
        return {"class": start, "nodes": sorted(relevance), "edges": kept, "relevance": relevance}

    def prune(self, top_k: int) -> dict:
        """A display view: :meth:`to_dict` with only the ``top_k`` incoming edges of each node by ``|share|``
        (shares of the full graph). The graph itself is unchanged; the view cannot be loaded back."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        view = self.to_dict()
        by_target: dict[str, list[dict]] = {}
        for e in view["edges"]:
            by_target.setdefault(e["target"], []).append(e)
        kept = {id(e) for edges in by_target.values() for e in sorted(edges, key=lambda e: -abs(e["share"]))[:top_k]}
        view["edges"] = [e for e in view["edges"] if id(e) in kept]
        view["view"] = {"top_k": top_k}
        return view

    # ------------------------------------------------------------------ merging
    def merge(self, other: "ConceptGraph") -> "ConceptGraph":
        """A new graph holding the sums of both (e.g. two dataset shards). Both must have the same layers,
        concept counts, classes and parameters. Completeness and reconstruction evidence are added up; other
        evidence is kept only where both graphs agree (recompute it on the merged graph)."""
        if not isinstance(other, ConceptGraph):
            raise ValueError(f"can only merge a ConceptGraph, not {type(other).__name__}")
        for what in ("sizes", "classes", "params", "n_exemplars", "residual"):
            if getattr(self, what) != getattr(other, what):
                raise ValueError(f"cannot merge graphs with different {what}: {getattr(self, what)!r} "
                                 f"vs {getattr(other, what)!r}")
        out = self._empty_like()
        out.n_images = self.n_images + other.n_images
        for nid, mine in out._nodes.items():
            a, b = self._nodes[nid], other._nodes[nid]
            mine.count = a.count + b.count
            mine.class_counts = _add_dicts(a.class_counts, b.class_counts)
            mine.coefficient_sum = a.coefficient_sum + b.coefficient_sum
            mine.positive_count = a.positive_count + b.positive_count
            mine.target_count = a.target_count + b.target_count
            mine.target_class_counts = _add_dicts(a.target_class_counts, b.target_class_counts)
            mine.exemplars = _top_exemplars(a.exemplars + b.exemplars, self.n_exemplars)
        for key in self._edges.keys() | other._edges.keys():
            a, b = self._edges.get(key, _Edge()), other._edges.get(key, _Edge())
            out._edges[key] = _Edge(a.sum + b.sum, _add(a.sum_sq, b.sum_sq), _add(a.pos_sum, b.pos_sum),
                                    _add(a.neg_sum, b.neg_sum), _add_dicts(a.class_sums, b.class_sums))
        out.evidence = merge_evidence(self.evidence, other.evidence)
        return out

    def _empty_like(self) -> "ConceptGraph":
        sizes = {k: v for k, v in self.sizes.items() if k != LOGITS}
        return ConceptGraph(sizes, self.sizes[LOGITS], self.classes, self.params, self.n_exemplars, self.residual)

    # ------------------------------------------------------------------ dict format
    def to_dict(self) -> dict:
        """The JSON-able dict of ``docs/graph-format.md`` (raw accumulators and derived fields)."""
        return {
            "format": FORMAT,
            "layers": list(self.layers),
            "classes": list(self.classes),
            "n_images": self.n_images,
            "params": {**self.params, "n_exemplars": self.n_exemplars},
            "nodes": [self.node(nid) for nid in self._nodes],
            "edges": self.edges(),
            "evidence": _plain(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ConceptGraph":
        """Inverse of :meth:`to_dict`: ``from_dict(g.to_dict()).to_dict() == g.to_dict()``."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a concept graph dict (expected format {FORMAT!r})")
        if "view" in data:
            raise ValueError("this dict is a pruned display view (prune()); load the full graph instead")
        try:
            sizes: dict[str, int] = {}
            for n in data["nodes"]:
                if n["kind"] != "residual":
                    sizes[n["layer"]] = max(sizes.get(n["layer"], 0), n["index"] + 1)
            residual = any(n["kind"] == "residual" for n in data["nodes"])
            params = dict(data["params"])
            n_exemplars = params.pop("n_exemplars", N_EXEMPLARS)
            n_classes = sizes.pop(LOGITS)
            graph = cls({layer: sizes[layer] for layer in data["layers"] if layer != LOGITS}, n_classes,
                        data["classes"], params, n_exemplars, residual)
            graph.n_images = int(data["n_images"])
            for n in data["nodes"]:
                node = graph._nodes[n["id"]]
                node.count, node.target_count = int(n["count"]), int(n["target_count"])
                node.target_class_counts = {int(c): int(v) for c, v in n["target_class_counts"].items()}
                if n["kind"] != "class":
                    node.coefficient_sum, node.positive_count = float(n["coefficient_sum"]), int(n["positive_count"])
                    node.class_counts = {int(c): int(k) for c, k in n["class_counts"].items()}
                    node.exemplars = [(int(e["image"]), int(e["position"]), float(e["coefficient"]))
                                      for e in n["exemplars"]]
            for e in data["edges"]:
                if e["target"] not in graph._nodes or e["source"] not in graph._nodes:
                    raise KeyError(f"edge {e['source']} -> {e['target']}")
                graph._edges[(e["source"], e["target"])] = _Edge(
                    float(e["sum"]), _float(e["sum_sq"]), _float(e["pos_sum"]), _float(e["neg_sum"]),
                    {int(c): float(s) for c, (s, _) in e["class_sums"].items()})
            graph.evidence = _plain(data.get("evidence", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt concept graph dict: missing or malformed {exc}") from exc
        return graph

    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with the scalar fields of nodes and edges as attributes."""
        g = nx.DiGraph(layers=list(self.layers), classes=list(self.classes), n_images=self.n_images)
        for nid in self._nodes:
            g.add_node(nid, **_scalars(self.node(nid)))
        for e in self.edges():
            g.add_edge(e["source"], e["target"], **_scalars(e))
        return g

    def __repr__(self) -> str:
        sizes = ", ".join(f"{layer}: {k}" for layer, k in self.sizes.items())
        return f"ConceptGraph({sizes}; {self.n_images} images, {len(self._edges)} edges)"


# ---------------------------------------------------------------------------------------------- evidence
def merge_evidence(a: dict, b: dict) -> dict:
    """Add up the additive evidence sections (``completeness``, ``reconstruction``: entries with raw sums, as
    :func:`gig.build_graph` writes them; an entry in one graph only is kept, one without raw sums is dropped);
    keep every other section only where both graphs agree."""
    out = {}
    for key in a.keys() | b.keys():
        if key in _ADDITIVE:
            merge, raw = _ADDITIVE[key]
            merged = {}
            for name in a.get(key, {}).keys() | b.get(key, {}).keys():
                x, y = a.get(key, {}).get(name), b.get(key, {}).get(name)
                if x is None or y is None:
                    merged[name] = _plain(x if y is None else y)
                elif raw <= x.keys() and raw <= y.keys():
                    merged[name] = merge(x, y)
            out[key] = dict(sorted(merged.items()))
        elif a.get(key) == b.get(key):
            out[key] = a[key]
    return out


def completeness_entry(count: int, delta_sum: float, delta_max: float, error_sum: float, difference_sum: float,
                       steps: int, method: str | None = None, converged: bool | None = None,
                       tolerance: float | None = None) -> dict:
    """Evidence of one layer pair: raw sums (``delta`` per target, ``|Σ GIG − diff|``, ``|diff|``) and means;
    ``steps`` (the most used), the quadrature ``method`` actually used and, for a tolerance run, the ``tolerance``
    and whether every batch met it (``converged``; ``None`` without a tolerance)."""
    entry = {"count": count, "delta_sum": delta_sum, "delta_max": delta_max, "error_sum": error_sum,
             "difference_sum": difference_sum, "steps": steps,
             "delta_mean": delta_sum / count if count else 0.0,
             "dataset_delta": error_sum / difference_sum if difference_sum else 0.0}
    if method is not None:
        entry["method"] = method
    entry["converged"] = converged
    entry["tolerance"] = tolerance
    return entry


def reconstruction_entry(error_sq_sum: float, norm_sq_sum: float, nonzero: int, coefficients: int) -> dict:
    """Evidence of one layer's decomposition over the graph's images: raw sums, ``relative_error`` and ``l0``."""
    return {"error_sq_sum": error_sq_sum, "norm_sq_sum": norm_sq_sum, "nonzero": nonzero,
            "coefficients": coefficients,
            "relative_error": math.sqrt(error_sq_sum / norm_sq_sum) if norm_sq_sum else 0.0,
            "l0": nonzero / coefficients if coefficients else 0.0}


def _merge_completeness(x: dict, y: dict) -> dict:
    methods = sorted({e["method"] for e in (x, y) if e.get("method")})
    flags = [e["converged"] for e in (x, y) if e.get("converged") is not None]
    tolerances = [e["tolerance"] for e in (x, y) if e.get("tolerance") is not None]
    return completeness_entry(x["count"] + y["count"], x["delta_sum"] + y["delta_sum"],
                              max(x["delta_max"], y["delta_max"]), x["error_sum"] + y["error_sum"],
                              x["difference_sum"] + y["difference_sum"], max(x["steps"], y["steps"]),
                              "+".join(methods) or None, all(flags) if flags else None,
                              max(tolerances) if tolerances else None)


def _merge_reconstruction(x: dict, y: dict) -> dict:
    return reconstruction_entry(x["error_sq_sum"] + y["error_sq_sum"], x["norm_sq_sum"] + y["norm_sq_sum"],
                                x["nonzero"] + y["nonzero"], x["coefficients"] + y["coefficients"])


_ADDITIVE = {
    "completeness": (_merge_completeness, {"count", "delta_sum", "delta_max", "error_sum", "difference_sum", "steps"}),
    "reconstruction": (_merge_reconstruction, {"error_sq_sum", "norm_sq_sum", "nonzero", "coefficients"}),
}


# ---------------------------------------------------------------------------------------------- helpers
def _top_exemplars(exemplars, n: int) -> list[tuple[int, int, float]]:
    unique = {(i, p): c for i, p, c in exemplars}  # the same PFV seen twice is one exemplar
    return sorted(((i, p, c) for (i, p), c in unique.items()), key=lambda e: (-e[2], e[0], e[1]))[:n]


def _add(x, y):
    return None if x is None or y is None else x + y


def _add_dicts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(a.keys() | b.keys())}


def _float(x):
    return None if x is None else float(x)


def _plain(value):
    """A deep copy made of dicts, lists and scalars (JSON-able when the leaves are)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scalars(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) and k != "id"}


def _order_key(graph: ConceptGraph):
    rank = {layer: i for i, layer in enumerate(graph.layers)}

    def key(item):
        (source, target), _ = item
        (sl, _, si), (tl, _, ti) = source.rpartition(":"), target.rpartition(":")
        return rank[tl], int(ti), rank[sl], int(si)

    return key
