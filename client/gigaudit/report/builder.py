"""Builds the self-contained HTML audit report: one file, images inline as base64, JS/CSS inline, no network."""
from __future__ import annotations

import base64
import io
import json
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from gigaudit import evidence as ev
from gigaudit.policy import PolicyResult
from gigaudit.report import charts
from gigaudit.results import CLASS_LAYER, ConceptGraph, Exemplar


def build_report(graph: ConceptGraph | dict, *, exemplars: Mapping[str, Sequence[Exemplar]] | None = None,
                 policy: PolicyResult | dict | None = None, title: str = "gigaudit report", top_k: int = 3,
                 nodes_per_layer: int = 12, coverage: float = 0.8, thumb_size: int = 48, max_edges: int = 10,
                 max_circuits: int = 200) -> str:
    """The report as one HTML string.

    `exemplars` maps node ids to their exemplars (crop PNGs, optional iERF maps); `policy` is the result of
    `evaluate_policy` (its checks and drift are shown); `top_k`, `nodes_per_layer` are the initial display controls.
    The page carries the `max_edges` strongest inputs of every node (plus circuit edges) and the circuits of the
    first `max_circuits` classes, which keeps it small and quick for large graphs.
    """
    view = graph if isinstance(graph, ConceptGraph) else ConceptGraph(graph)
    if min(top_k, nodes_per_layer, max_edges) < 1 or max_circuits < 0:
        raise ValueError(f"top_k, nodes_per_layer, max_edges must be >= 1 and max_circuits >= 0, got {top_k}, "
                         f"{nodes_per_layer}, {max_edges}, {max_circuits}")
    policy_dict = policy.to_dict() if isinstance(policy, PolicyResult) else policy
    payload = _payload(view, exemplars or {}, coverage, thumb_size, max_edges, max_circuits)
    payload["controls"] = {"top_k": min(top_k, max_edges), "nodes_per_layer": nodes_per_layer, "max_edges": max_edges}
    evidence = ev.in_layer_order(view.evidence, view.layers)
    fields = {
        "title": escape(title),
        "css": _asset("report.css"),
        "js": _asset("report.js"),
        "data": json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c"),
        "summary": _summary(view, policy_dict),
        "policy": _policy_section(policy_dict),
        "evidence": _evidence_section(evidence),
    }
    html = _asset("template.html")
    for key, value in fields.items():
        html = html.replace("{{" + key + "}}", value)
    return html


def write_report(out_dir: str | Path, graph: ConceptGraph | dict, **kwargs: Any) -> Path:
    """Write `<out_dir>/index.html` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(build_report(graph, **kwargs), encoding="utf-8")
    return path


def _asset(name: str) -> str:
    return resources.files("gigaudit.report").joinpath(name).read_text(encoding="utf-8")


def _payload(view: ConceptGraph, exemplars, coverage: float, thumb_size: int, max_edges: int,
             max_circuits: int) -> dict:
    relevance = view.overall_relevance()
    circuits = {}
    for node in view.class_nodes()[:max_circuits]:
        circuit = view.circuit(node["index"], coverage)
        circuits[node["id"]] = {"label": view.class_label(node["id"]), "nodes": circuit["nodes"],
                                "edges": circuit["edges"]}
    nodes = []
    for node in view.data["nodes"]:
        shots = exemplars.get(node["id"], [])
        label = view.class_label(node["id"]) if node.get("kind") == "class" else node["id"]
        nodes.append({"id": node["id"], "layer": node["layer"], "kind": node.get("kind", "concept"),
                      "label": label, "count": node.get("count", 0), "frequency": node.get("frequency", 0.0),
                      "mean_coefficient": node.get("mean_coefficient"),
                      "relevance": round(relevance.get(node["id"], 0.0), 6),
                      "thumb": _data_uri(_resized(shots[0].png, thumb_size)) if shots else None})
    gallery = {nid: [{"image": e.image, "name": e.image_name, "position": e.position, "coefficient": e.coefficient,
                      "src": _data_uri(_resized(e.png, 2 * thumb_size)),
                      "overlay": _data_uri(_resized(e.ierf_overlay_png(), 2 * thumb_size)) if e.ierf_png else None}
                     for e in shots] for nid, shots in exemplars.items() if nid in view.nodes}
    # the strongest `max_edges` inputs of every node, and every circuit edge: enough for every view the page offers
    wanted = {(e["source"], e["target"]) for e in view.prune(max_edges)}
    wanted |= {tuple(edge) for c in circuits.values() for edge in c["edges"]}
    edges = [[e["source"], e["target"], e["share"], e.get("mean", 0.0), e.get("count", 0)] for e in view.edges
             if (e["source"], e["target"]) in wanted]
    columns = view.concept_layers + [CLASS_LAYER]
    return {"columns": columns, "nodes": nodes, "edges": edges, "circuits": circuits, "gallery": gallery,
            "n_images": view.n_images, "params": view.data.get("params", {}), "n_edges": len(view.edges)}


def _resized(png: bytes, size: int) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    if max(img.size) <= size:
        return png
    img.thumbnail((size, size), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _summary(view: ConceptGraph, policy: dict | None) -> str:
    n_concepts = sum(1 for n in view.data["nodes"] if n.get("kind", "concept") == "concept")
    facts = [("images", view.n_images), ("analysed layers", len(view.concept_layers)), ("concepts", n_concepts),
             ("classes", len(view.class_nodes())), ("edges", len(view.edges))]
    facts += [(k, v) for k, v in (view.data.get("params") or {}).items()]
    items = "".join(f"<li><b>{escape(str(k))}</b> {escape(_fmt(v))}</li>" for k, v in facts)
    verdict = ""
    if policy is not None:
        ok = policy["passed"]
        verdict = (f'<p class="verdict {"pass" if ok else "fail"}">Policy “{escape(policy["policy"])}”: '
                   f'{"PASSED" if ok else "FAILED"}</p>')
    return f"{verdict}<ul class=facts>{items}</ul>"


def _policy_section(policy: dict | None) -> str:
    if policy is None:
        return "<p>No policy was evaluated.</p>"
    rows = [[c["name"], "pass" if c["passed"] else "FAIL", _fmt(c["value"]), _fmt(c["threshold"]), c["detail"]]
            for c in policy["checks"]]
    html = _table(["check", "result", "value", "threshold", "detail"], rows, status_col=1)
    if policy.get("drift"):
        d = policy["drift"]
        html += "<h3>Drift against the reference audit</h3>"
        html += _table(["measure", "value"], [[k, _fmt(v)] for k, v in d["summary"].items()])
        html += charts.bar_chart("circuit overlap per class", d["circuit_overlap"], y_label="Jaccard")
        html += charts.bar_chart("matched concepts per layer", d["matched_fraction"], y_label="fraction")
    return html


def _evidence_section(evidence: dict) -> str:
    parts = []
    comp = ev.completeness(evidence)
    if comp:
        parts.append("<h3>Completeness (relative delta per layer pair)</h3>")
        cols = ["dataset_delta", "delta_mean", "delta_max", "steps"]
        parts.append(_table(["pair", *cols], [[p, *(_fmt(v.get(c)) for c in cols)] for p, v in comp.items()]))
        parts.append(charts.bar_chart("completeness delta (mean)",
                                      {p: float(v.get("delta_mean", 0.0)) for p, v in comp.items()}))
        for pair, v in comp.items():
            versus = [r for r in v.get("versus_steps") or [] if r.get("delta_mean") is not None]
            if len(versus) > 1:
                series = {stat: [float(r[stat]) for r in versus] for stat in ("delta_mean", "delta_max") if
                          all(r.get(stat) is not None for r in versus)}
                parts.append(charts.line_chart(f"delta vs steps: {pair}", [float(r["steps"]) for r in versus],
                                               series, x_label="steps"))
    recon = ev.reconstruction(evidence)
    if recon:
        cols = ["relative_error", "l0", "spliced_top1", "spliced_kl"]
        parts.append("<h3>Concept decomposition per layer</h3>")
        parts.append(_table(["layer", *cols], [[layer, *(_fmt(v.get(c)) for c in cols)] for layer, v in recon.items()]))
        for metric in ("relative_error", "l0", "spliced_top1"):
            bars = {layer: float(v[metric]) for layer, v in recon.items() if v.get(metric) is not None}
            parts.append(charts.bar_chart(metric.replace("_", " "), bars))
    curve_sets = ev.curve_sets(evidence)
    if curve_sets:
        parts.append("<h3>Deletion and insertion against baselines</h3><div class=charts>")
        for s in curve_sets:
            parts.append('<figure>' + charts.line_chart(s.label, s.fractions, s.curves,
                                                        x_label="fraction of concepts", highlight=ev.METHOD))
            parts.append(_table(["order", f"AUC ({s.better} is better)"],
                                [[k, _fmt(v)] for k, v in sorted(s.auc.items(), key=lambda kv: kv[1])]))
            parts.append("</figure>")
        parts.append("</div>")
    other = ev.other_metrics(evidence)
    if other:
        parts.append("<h3>Other evidence</h3>" + _table(["metric", "value"], [[k, _fmt(v)] for k, v in other.items()]))
    return "".join(parts) or "<p>The graph carries no evidence.</p>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], status_col: int | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{"pass" if cell == "pass" else "fail"}"' if i == status_col else ""
            cells.append(f"<td{cls}>{escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
