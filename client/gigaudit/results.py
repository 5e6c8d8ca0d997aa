"""Typed, torch-free views of audit results: the concept graph and concept exemplars.

`ConceptGraph` wraps the graph dict of `docs/graph-format.md` (as `graph.json` or as the server returns it) and adds
what a reader needs: class-conditional shares, circuits, display pruning and exports (JSON, networkx, GraphML).
The dict itself is never changed.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gigaudit import circuits

GRAPH_FORMAT = "gigaudit.concept-graph/1"
CLASS_LAYER = "logits"


class ConceptGraph:
    """A read-only view over a concept-graph dict."""

    def __init__(self, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ValueError(f"a concept graph is a dict, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != GRAPH_FORMAT:
            raise ValueError(f"unknown graph format {fmt!r}; expected {GRAPH_FORMAT!r}")
        for key in ("layers", "nodes", "edges"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"graph field {key!r} must be a list")
        self.data = data
        self.nodes: dict[str, dict] = {n["id"]: n for n in data["nodes"]}
        self._incoming: dict[str, list[dict]] = {}
        for edge in data["edges"]:
            for end in ("source", "target"):
                if edge[end] not in self.nodes:
                    raise ValueError(f"edge {edge['source']}->{edge['target']}: unknown {end} node {edge[end]!r}")
            self._incoming.setdefault(edge["target"], []).append(edge)

    # --- construction and export --------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str | bytes) -> "ConceptGraph":
        return cls(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> "ConceptGraph":
        return cls.from_json(Path(path).read_text())

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.data, indent=indent)

    def to_networkx(self):
        """A `networkx.DiGraph`: node and edge attributes are the scalar fields of the dict."""
        import networkx as nx

        g = nx.DiGraph(layers=list(self.layers), classes=list(self.classes), n_images=self.n_images)
        for node in self.data["nodes"]:
            g.add_node(node["id"], **_scalars(node))
        for edge in self.data["edges"]:
            g.add_edge(edge["source"], edge["target"], **_scalars(edge))
        return g

    def write_graphml(self, path: str | Path) -> None:
        import networkx as nx

        g = self.to_networkx()
        g.graph = {k: json.dumps(v) for k, v in g.graph.items()}  # GraphML wants scalar graph attributes
        nx.write_graphml(g, str(path))

    # --- accessors ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[str]:
        return self.data["layers"]

    @property
    def concept_layers(self) -> list[str]:
        return [layer for layer in self.layers if layer != CLASS_LAYER]

    @property
    def classes(self) -> list[str]:
        return self.data.get("classes") or []

    @property
    def n_images(self) -> int:
        return int(self.data.get("n_images", 0))

    @property
    def evidence(self) -> dict[str, Any]:
        return self.data.get("evidence") or {}

    @property
    def edges(self) -> list[dict]:
        return self.data["edges"]

    def layer_nodes(self, layer: str) -> list[dict]:
        return [n for n in self.data["nodes"] if n["layer"] == layer]

    def class_nodes(self) -> list[dict]:
        return [n for n in self.data["nodes"] if n.get("kind") == "class"]

    def class_node(self, cls: int | str) -> str:
        """Node id of a class given by index or name; ValueError lists the valid classes."""
        nodes = self.class_nodes()
        for node in nodes:
            if cls == node["index"] or cls == node.get("name") or cls == node["id"]:
                return node["id"]
        valid = [f"{n['index']} ({n.get('name', '')})" for n in nodes]
        raise ValueError(f"unknown class {cls!r}; valid classes: {', '.join(valid) or 'none'}")

    def class_label(self, node_id: str) -> str:
        node = self.nodes[node_id]
        index = node["index"]
        return node.get("name") or (self.classes[index] if index < len(self.classes) else f"class {index}")

    def incoming(self, node_id: str) -> list[dict]:
        return self._incoming.get(node_id, [])

    # --- shares, circuits, pruning -----------------------------------------------------------
    def shares(self, node_id: str, cls: int | None = None) -> dict[str, float]:
        """Shares of the edges into `node_id` (source id → share), conditioned on class index `cls` if given.

        The class-conditional share uses the per-class accumulators `class_sums`; edges without them for
        `cls` are left out.
        """
        edges = self.incoming(node_id)
        if cls is None:
            return {e["source"]: float(e["share"]) for e in edges}
        means = {}
        for e in edges:
            total, count = (e.get("class_sums") or {}).get(str(cls), (0.0, 0))
            if count:
                means[e["source"]] = total / count
        norm = sum(abs(m) for m in means.values())
        return {q: (m / norm if norm else 0.0) for q, m in means.items()}

    def relevance(self, cls: int | str, coverage: float = 1.0) -> tuple[dict[str, float], list[tuple[str, str]]]:
        """Propagate a class's relevance backwards along |class-conditional share|.

        Returns (relevance per node, kept edges). At each layer the edges are kept, largest flow first, until they
        carry `coverage` of the flow into that layer; relevance flows only along kept edges.
        """
        start = self.class_node(cls)
        return self._propagate({start: 1.0}, self.nodes[start]["index"], coverage)

    def overall_relevance(self) -> dict[str, float]:
        """Relevance of every node for all classes at once (each class weighs 1/n, unconditional shares).

        One pass over the edges, so cheap on graphs with many classes; used to rank nodes for display.
        """
        classes = [n["id"] for n in self.class_nodes()]
        return self._propagate({c: 1.0 / len(classes) for c in classes}, None, 1.0)[0] if classes else {}

    def _propagate(self, start: dict[str, float], cls: int | None, coverage: float):
        return circuits.propagate(start, lambda target: self.shares(target, cls).items(), coverage)

    def circuit(self, cls: int | str, coverage: float = 0.8) -> dict[str, Any]:
        """The subgraph carrying `coverage` of a class's relevance: {"class", "nodes", "edges", "relevance"}."""
        rel, kept = self.relevance(cls, coverage)
        return {"class": self.class_node(cls), "nodes": sorted(rel), "edges": kept, "relevance": rel}

    def prune(self, top_k: int) -> list[dict]:
        """Display view: the `top_k` incoming edges of each node by |share|. The stored graph is unchanged."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        kept = []
        for edges in self._incoming.values():
            kept.extend(sorted(edges, key=lambda e: -abs(e["share"]))[:top_k])
        return kept


def _scalars(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) and k != "id"}


@dataclass(frozen=True)
class Exemplar:
    """One exemplar of a concept: the image crop (PNG) and, when computed, its iERF map (greyscale PNG)."""

    node_id: str
    image: int
    position: int
    coefficient: float
    png: bytes
    ierf_png: bytes | None = None
    image_name: str = ""

    def to_pil(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.png)).convert("RGB")

    def ierf_overlay_png(self) -> bytes | None:
        """The iERF as a translucent heat map (RGBA PNG, same size as the crop), or None without an iERF."""
        if self.ierf_png is None:
            return None
        from PIL import Image

        size = self.to_pil().size
        heat = Image.open(io.BytesIO(self.ierf_png)).convert("L").resize(size, Image.BILINEAR)
        lo, hi = heat.getextrema()
        if hi > lo:
            heat = heat.point(lambda v: int(255 * (v - lo) / (hi - lo)))
        overlay = Image.new("RGBA", size, (255, 60, 0, 0))
        overlay.putalpha(heat.point(lambda v: int(v * 0.85)))
        out = io.BytesIO()
        overlay.save(out, format="PNG")
        return out.getvalue()
