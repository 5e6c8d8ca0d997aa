"""Protobuf messages of gigaudit.v1 → the plain dicts and results the client hands out."""
from __future__ import annotations

from typing import Iterable

from google.protobuf import json_format

from gigaudit.results import GRAPH_FORMAT, Exemplar
from gigaudit.v1 import audit_service_pb2 as audit_pb


def struct_to_dict(struct) -> dict:
    return json_format.MessageToDict(struct) if struct is not None else {}


def node_to_dict(node: audit_pb.ConceptNode) -> dict:
    out = {"id": node.id, "layer": node.layer, "index": node.index, "kind": node.kind or "concept",
           "count": node.count, "frequency": node.frequency}
    if node.kind == "class":
        out["name"] = node.name
    else:
        out["mean_coefficient"] = node.mean_coefficient
        out["exemplars"] = [{"image": e.image, "position": e.position, "coefficient": e.coefficient}
                            for e in node.exemplars]
        if node.label:
            out["label"], out["label_score"] = node.label, node.label_score
    return out


def edge_to_dict(edge: audit_pb.ConceptEdge) -> dict:
    return {"source": edge.source, "target": edge.target, "count": edge.count, "sum": edge.sum,
            "sum_sq": edge.sum_sq, "pos_sum": edge.pos_sum, "neg_sum": edge.neg_sum, "mean": edge.mean,
            "std": edge.std, "share": edge.share,
            "class_sums": {str(k): [v.sum, v.count] for k, v in sorted(edge.class_sums.items())}}


def graph_to_dict(pages: Iterable[audit_pb.ConceptGraph]) -> dict:
    """The graph dict of `docs/graph-format.md` from the FULL pages of one GetConceptGraph listing."""
    pages = list(pages)
    first = pages[0]
    nodes = [node_to_dict(n) for page in pages for n in page.nodes]
    edges = [edge_to_dict(e) for page in pages for e in page.edges]
    if len(nodes) != first.node_count or len(edges) != first.edge_count:
        raise ValueError(f"incomplete graph {first.name}: {len(nodes)}/{first.node_count} nodes, "
                         f"{len(edges)}/{first.edge_count} edges")
    return {"format": GRAPH_FORMAT, "name": first.name, "layers": list(first.layers),
            "classes": list(first.classes), "n_images": first.image_count, "params": struct_to_dict(first.params),
            "nodes": nodes, "edges": edges, "evidence": struct_to_dict(first.evidence)}


def exemplars_to_list(node_id: str, response: audit_pb.GetConceptExemplarsResponse) -> list[Exemplar]:
    """Exemplars of one concept; one that was not rendered has `png == b""` and `ierf_png is None`."""
    return [Exemplar(node_id, e.image, e.position, e.coefficient, e.thumbnail_png, e.ierf_png or None, e.image_name)
            for e in response.exemplars]
