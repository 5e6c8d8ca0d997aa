"""Builds the self-contained HTML audit report: one file, images inline as WebP data URIs, JS/CSS inline, no network.

The report keeps to a size budget (`max_bytes`, 5 MB by default; `gigaudit audit|report --report-size`): the
graph, evidence and page come first, then the exemplars of the concepts the page shows first, most relevant
first. When they do not fit, the builder degrades step by step (lower WebP quality, fewer exemplars per concept,
no iERF views, smaller images) and, at the poorest step, leaves out the least relevant concepts' images; the page
says what it left out, and keeps the image references (dataset image, position, coefficient) of every exemplar.
"""
from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from gigaudit import evidence as ev
from gigaudit.policy import PolicyResult
from gigaudit.report import charts
from gigaudit.results import CLASS_LAYER, ConceptGraph, Exemplar

DEFAULT_MAX_BYTES = 5_000_000
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30}
_UNTRAINED_RATIO = 1.5  # mean class probability below 1.5 x chance: the model looks untrained


@dataclass(frozen=True)
class _Plan:
    """One step of the degradation ladder: how the exemplars of every embedded concept are encoded."""

    per_concept: int  # exemplars per concept (at most)
    size: int  # pixels on the longer side
    quality: int  # WebP quality
    ierf: bool  # iERF views embedded

    def describe(self) -> str:
        return (f"{self.per_concept} exemplar{'s' * (self.per_concept > 1)} per concept at {self.size} px, WebP "
                f"quality {self.quality}{'' if self.ierf else ', no iERF views'}")


LADDER = (_Plan(6, 96, 80, True), _Plan(6, 96, 60, True), _Plan(4, 80, 60, True), _Plan(4, 80, 60, False),
          _Plan(2, 64, 50, False), _Plan(1, 48, 40, False))


def parse_size(text: str | int) -> int:
    """Bytes from `5MB`, `500k`, `2MiB` or a plain number; 0 means no budget."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"a report size is a number with an optional unit (B, kB, MB, GB, KiB, MiB, GiB), "
                         f"e.g. 5MB; got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def build_report(graph: ConceptGraph | dict, *, exemplars: Mapping[str, Sequence[Exemplar]] | None = None,
                 policy: PolicyResult | dict | None = None, title: str = "gigaudit report", top_k: int = 3,
                 nodes_per_layer: int = 12, coverage: float = 0.8, max_edges: int = 10, max_circuits: int = 200,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, class_names: Sequence[str] | None = None,
                 explanations: Sequence[dict] | None = None) -> str:
    """The report as one HTML string, at most `max_bytes` long where the graph itself allows (0 or None: no budget).

    `exemplars` maps node ids to their exemplars (crop images, optional iERF views or maps); `policy` is the result
    of `evaluate_policy` (its checks and drift are shown); `top_k`, `nodes_per_layer` are the initial display
    controls. The page carries the `max_edges` strongest inputs of every node (plus circuit edges) and the circuits
    of the first `max_circuits` classes. `class_names` (e.g. the dataset's class folders) label the classes where
    the graph has no names of its own. `explanations` (dicts of `gigaudit.explanations`, e.g. from
    `AuditClient.explain_image`) add a section "Image explanations"; their overlays count towards the budget first.
    """
    view = graph if isinstance(graph, ConceptGraph) else ConceptGraph(graph)
    if min(top_k, nodes_per_layer, max_edges) < 1 or max_circuits < 0:
        raise ValueError(f"top_k, nodes_per_layer, max_edges must be >= 1 and max_circuits >= 0, got {top_k}, "
                         f"{nodes_per_layer}, {max_edges}, {max_circuits}")
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0 (0: no budget), got {max_bytes}")
    policy_dict = policy.to_dict() if isinstance(policy, PolicyResult) else policy
    labels = _class_labels(view, class_names)
    payload = _payload(view, coverage, max_edges, max_circuits, labels)
    payload["controls"] = {"top_k": min(top_k, max_edges), "nodes_per_layer": nodes_per_layer, "max_edges": max_edges}
    evidence = ev.in_layer_order(view.evidence, view.layers)
    fields = {"title": escape(title), "css": _asset("report.css"), "js": _asset("report.js"),
              "summary": _summary(view, policy_dict, labels), "policy": _policy_section(policy_dict),
              "evidence": _evidence_section(evidence), "explanations": _explanations_section(explanations)}
    shots = {nid: list(s) for nid, s in (exemplars or {}).items() if nid in view.nodes and s}
    order = _priority(payload["nodes"], shots, nodes_per_layer)
    room = None if not max_bytes else max_bytes - len(_fill(fields, payload, "").encode()) - 2048  # the notice
    payload["gallery"], payload["budget"], notice = _embed(shots, order, room, max_bytes)
    return _fill(fields, payload, notice)


def write_report(out_dir: str | Path, graph: ConceptGraph | dict, **kwargs: Any) -> Path:
    """Write `<out_dir>/index.html` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(build_report(graph, **kwargs), encoding="utf-8")
    return path


def report_data(html: str) -> dict:
    """The JSON a report page carries (nodes, edges, gallery, `budget`: what the size budget left out)."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    if not match:
        raise ValueError("not a gigaudit report: no report-data script")
    return json.loads(match.group(1))


def _fill(fields: dict[str, str], payload: dict, notice: str) -> str:
    """The template with every ``{{field}}`` replaced in one pass (text from the graph is never re-scanned)."""
    values = {**fields, "notice": notice, "data": json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")}
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], _asset("template.html"))


def _asset(name: str) -> str:
    return resources.files("gigaudit.report").joinpath(name).read_text(encoding="utf-8")


def _class_labels(view: ConceptGraph, names: Sequence[str] | None) -> dict[str, str]:
    """Label of every class node: its own name, the graph's class list, `names`, else `class i`."""
    out = {}
    for node in view.class_nodes():
        own = node.get("name") or (view.classes[node["index"]] if node["index"] < len(view.classes) else "")
        given = names[node["index"]] if names and node["index"] < len(names) else ""
        out[node["id"]] = own or given or f"class {node['index']}"
    return out


def _payload(view: ConceptGraph, coverage: float, max_edges: int, max_circuits: int, labels: dict) -> dict:
    relevance = view.overall_relevance()
    circuits = {}
    for node in view.class_nodes()[:max_circuits]:
        circuit = view.circuit(node["index"], coverage)
        circuits[node["id"]] = {"label": labels[node["id"]], "nodes": circuit["nodes"], "edges": circuit["edges"]}
    names = _concept_names(view)
    nodes = [{"id": node["id"], "layer": node["layer"], "kind": node.get("kind", "concept"),
              "label": labels.get(node["id"], node["id"]), "count": node.get("count", 0),
              "frequency": node.get("frequency", 0.0), "mean_coefficient": node.get("mean_coefficient"),
              "relevance": round(relevance.get(node["id"], 0.0), 6), **names.get(node["id"], {})}
             for node in view.data["nodes"]]
    # the strongest `max_edges` inputs of every node, and every circuit edge: enough for every view the page offers
    wanted = {(e["source"], e["target"]) for e in view.prune(max_edges)}
    wanted |= {tuple(edge) for c in circuits.values() for edge in c["edges"]}
    edges = [[e["source"], e["target"], e["share"], e.get("mean", 0.0), e.get("count", 0)] for e in view.edges
             if (e["source"], e["target"]) in wanted]
    return {"columns": view.concept_layers + [CLASS_LAYER], "nodes": nodes, "edges": edges, "circuits": circuits,
            "gallery": {}, "n_images": view.n_images, "params": view.data.get("params", {}),
            "n_edges": len(view.edges)}


def _priority(nodes: list[dict], shots: dict, per_layer: int) -> tuple[list[str], list[str]]:
    """(shown, others): the concepts with exemplars among the `per_layer` most relevant of their layer (those the
    page shows first), and the rest; each list interleaved across layers by relevance rank."""
    ranked: dict[str, list[str]] = {}
    for node in sorted(nodes, key=lambda n: -n["relevance"]):  # stable: ties keep node order, as the page does
        ranked.setdefault(node["layer"], []).append(node["id"])
    depth = max((len(ids) for ids in ranked.values()), default=0)
    rank_order = [(i, ids[i]) for i in range(depth) for ids in ranked.values() if i < len(ids)]
    return ([nid for i, nid in rank_order if nid in shots and i < per_layer],
            [nid for i, nid in rank_order if nid in shots and i >= per_layer])


def _embed(shots: dict, order: tuple[list[str], list[str]], room: int | None, max_bytes: int | None):
    """(gallery, budget, notice): the images of the concepts that fit at the richest step of `LADDER` that holds
    every shown concept (the references of all), what was left out, and the page's notice saying so."""
    shown, others = order
    everything = shown + others
    references = {nid: [_reference(s) for s in shots[nid]] for nid in everything}
    if room is not None:
        room -= len(json.dumps(references, separators=(",", ":")))
    cache: dict = {}
    decoded: dict = {}

    def entries(nid: str, plan: _Plan) -> tuple[list[dict], int]:
        out, cost = [], 0
        for rank, shot in enumerate(shots[nid][:plan.per_concept]):
            key = (nid, rank, plan)
            if key not in cache:
                cache[key] = _encode_exemplar(shot, plan, decoded)
            out.append(cache[key])
            cost += len(cache[key]["src"]) + len(cache[key].get("ierf", "")) + 24
        return out, cost

    plan, embedded = LADDER[0], everything
    if room is not None:
        for plan in LADDER:
            if plan is LADDER[-1] or _fits((entries(nid, plan)[1] for nid in shown), room):
                break
        embedded, used = [], 0
        for nid in everything:  # in priority order, at the chosen step, while they fit
            cost = entries(nid, plan)[1]
            if used + cost <= room:
                embedded.append(nid)
                used += cost
    gallery = {nid: entries(nid, plan)[0] + references[nid][plan.per_concept:] if nid in embedded
               else references[nid] for nid in everything}
    left = [nid for nid in everything if nid not in embedded]
    dropped = []
    if shots and plan.per_concept < max(len(s) for s in shots.values()):
        dropped.append(f"the images of exemplars beyond the first {plan.per_concept} of each concept")
    if not plan.ierf and any(s.ierf_png for ss in shots.values() for s in ss):
        dropped.append("the iERF views")
    if plan.size < LADDER[0].size or plan.quality < LADDER[0].quality:
        dropped.append(f"image detail ({plan.size} px, WebP quality {plan.quality})")
    if left:
        dropped.append(f"the images of {len(left)} of {len(everything)} concepts (the least relevant; their "
                       f"dataset images are listed in their details)")
    if room is not None and room < 0:
        dropped.append("every image: the page without images (graph, evidence, references) is already over the "
                       "budget")
    budget = {"max_bytes": max_bytes or 0, "plan": plan.__dict__ if shots else None,
              "embedded_concepts": len(embedded), "concepts_with_exemplars": len(everything),
              "left_out_concepts": left, "left_out": dropped}
    notice = ""
    if dropped:
        notice = (f'<p class="notice" id="budget-notice">To stay within the report size budget of '
                  f'{_megabytes(max_bytes)} (<code>--report-size</code>), this report left out '
                  f'{escape("; ".join(dropped))}. Embedded: {escape(plan.describe())}. Build it again with a '
                  f'larger <code>--report-size</code> to include them.</p>')
    return gallery, budget, notice


def _fits(costs, room: int) -> bool:
    """Whether the costs add up to at most `room`; stops at the first that overflows (no further encoding)."""
    used = 0
    for cost in costs:
        used += cost
        if used > room:
            return False
    return True


def _encode_exemplar(shot: Exemplar, plan: _Plan, decoded: dict) -> dict:
    """The exemplar's data URIs at `plan`; `decoded` caches each shot's decoded crop and iERF view."""
    from PIL import Image

    if id(shot) not in decoded:
        crop = Image.open(io.BytesIO(shot.png)).convert("RGB")
        decoded[id(shot)] = (crop, _ierf_view(crop, shot.ierf_png) if shot.ierf_png else None)
    crop, ierf = decoded[id(shot)]
    entry = {**_reference(shot), "src": _webp(_fitted(crop, plan.size), plan.quality)}
    if plan.ierf and ierf is not None:
        entry["ierf"] = _webp(_fitted(ierf, plan.size), plan.quality)
    return entry


def _reference(shot: Exemplar) -> dict:
    return {"image": shot.image, "name": shot.image_name, "position": shot.position,
            "coefficient": shot.coefficient}


def _ierf_view(crop, ierf: bytes):
    """The iERF as the worker renders it (a colour image: the picture with the region outlined), or, for a bare
    greyscale iERF map, the crop kept bright where the map is high, darkened elsewhere, with a yellow contour at
    half the maximum: nothing is painted over the region itself, so small images keep their contrast."""
    from PIL import Image, ImageChops, ImageFilter

    image = Image.open(io.BytesIO(ierf))
    if image.mode not in ("L", "LA", "I", "I;16", "F"):
        return image.convert("RGB")
    heat = image.convert("L").resize(crop.size, Image.BILINEAR)
    lo, hi = heat.getextrema()
    heat = heat.point(lambda v: int(255 * (v - lo) / (hi - lo)) if hi > lo else 0)
    shade = heat.point(lambda v: int(255 * (0.3 + 0.7 * (v / 255) ** 0.5)))
    shaded = ImageChops.multiply(crop, Image.merge("RGB", (shade, shade, shade)))
    inside = heat.point(lambda v: 255 if v >= 128 else 0)
    edge = ImageChops.subtract(inside, inside.filter(ImageFilter.MinFilter(3)))
    shaded.paste((255, 214, 0), mask=edge)
    return shaded


def _fitted(image, size: int):
    from PIL import Image

    if max(image.size) == size:
        return image
    scale = size / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.NEAREST if scale >= 1 else Image.BILINEAR)


def _webp(image, quality: int) -> str:
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=quality, method=4)
    return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _megabytes(n: int | None) -> str:
    return f"{n / 1e6:.3g} MB" if n else "none"


def _summary(view: ConceptGraph, policy: dict | None, labels: dict[str, str]) -> str:
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
    return f"{verdict}<ul class=facts>{items}</ul>{_scope(view)}{_untrained_warning(view, labels)}"


def _scope(view: ConceptGraph) -> str:
    """What the concepts and graph were computed on, and what the evidence was evaluated on."""
    scope = view.evidence.get("evaluation_scope") or {}
    evaluated = scope.get("images_evaluated", view.evidence.get("images"))
    if not isinstance(evaluated, int) or isinstance(evaluated, bool):
        return (f'<p class="scope" id="scope">Concepts and graph: all {view.n_images} images. The graph records no '
                f'evaluation scope.</p>')
    total = scope.get("images_total", view.n_images)
    part = "all" if evaluated >= total else f"the first {evaluated} of the"
    return (f'<p class="scope" id="scope">Concepts and graph: all {view.n_images} images. Evidence (completeness, '
            f'deletion, fidelity, …): {part} {total} images. The number of evaluation images is an option of the '
            f'audit (<code>--evaluation-images</code>; gig.evaluate\'s <code>max_images</code>, 16 by default).</p>')


def _untrained_warning(view: ConceptGraph, labels: dict[str, str]) -> str:
    """A warning when the model's predictions look near-uniform or collapsed (an untrained or mismatched model).

    Reads `evidence.evaluation_scope` (the worker records `mean_max_softmax`, `num_classes`,
    `predicted_class_entropy` over the evaluated images), else the class-probability deletion curve towards the
    logits: its first point is the mean probability of the images' classes with every concept kept."""
    scope = view.evidence.get("evaluation_scope") or {}
    n_classes = int(scope.get("num_classes") or len(labels))
    if n_classes < 2:
        return ""
    chance = 1.0 / n_classes
    measured, what = scope.get("mean_max_softmax"), "mean top-class probability"
    if measured is None:
        measured, what = _class_probability(view.evidence), "mean probability of the images' classes"
    advice = ("Check the weights, the class order and the preprocessing (input size, mean, std) before reading "
              "the concepts.")
    if measured is not None and measured < _UNTRAINED_RATIO * chance:
        return (f'<p class="warning" id="untrained-warning">The model looks untrained: the {what} on the evaluated '
                f'images is {measured:.3f}, close to chance (1/{n_classes} = {chance:.3f}). {advice}</p>')
    entropy, images = scope.get("predicted_class_entropy"), scope.get("images_evaluated") or 0
    if entropy is not None and images >= 2 * n_classes and entropy < 0.05:
        return (f'<p class="warning" id="untrained-warning">The model predicts one class for all {images} evaluated '
                f'images (entropy of the predicted classes {entropy:.3f} nats). {advice}</p>')
    return ""


def _class_probability(evidence: dict) -> float | None:
    for section in ev.curve_sections(evidence):
        for pair, report in evidence[section].items():
            readout = report.get("readout")
            if pair.endswith("->" + CLASS_LAYER) and readout in (None, "probability"):
                curve = ((report.get("orders") or {}).get(ev.METHOD) or {}).get("deletion_curve")
                if curve and curve[0] is not None and readout == "probability":
                    return float(curve[0])
    return None


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
        parts.append("<h3>Deletion and insertion against baselines</h3><p class=hint>AUC tables list the best "
                     "ordering first (lowest deletion AUC, highest insertion AUC); gig is the method, in black.</p>"
                     "<div class=charts>")
        for s in curve_sets:
            best_first = sorted(s.auc.items(), key=lambda kv: (kv[1] if s.better == "lower" else -kv[1], kv[0]))
            parts.append('<figure>' + charts.line_chart(s.label, s.fractions, s.curves,
                                                        x_label="fraction of concepts", highlight=ev.METHOD))
            parts.append(_table(["order", f"AUC ({s.better} is better, best first)"],
                                [[k, _fmt(v)] for k, v in best_first], css="auc"))
            parts.append("</figure>")
        parts.append("</div>")
    parts.append(_naming_section(evidence.get("naming")))
    other = {k: v for k, v in ev.other_metrics(evidence).items()
             if k != "images" and k.split(".")[0] != "naming"}  # the naming has its own section
    if other:
        parts.append("<h3>Other evidence</h3>" + _table(["metric", "value"], [[k, _fmt(v)] for k, v in other.items()]))
    return "".join(parts) or "<p>The graph carries no evidence.</p>"


def _concept_names(view: ConceptGraph) -> dict[str, dict]:
    """``{node id: {"name", "name_score"}}`` of the concepts a probe set named (node labels, else the evidence)."""
    naming = view.evidence.get("naming") if isinstance(view.evidence.get("naming"), dict) else {}
    found = {node: {"name": pair[0], "name_score": round(float(pair[1]), 4)}
             for node, pair in (naming.get("labels") or {}).items() if node in view.nodes}
    found.update({nid: {"name": n["label"], "name_score": round(float(n.get("label_score") or 0.0), 4)}
                  for nid, n in view.nodes.items() if n.get("label")})
    return found


def _naming_section(naming: Any) -> str:
    """Named concepts: every probe's namings with their held-out check, and the probes that named nothing."""
    if not isinstance(naming, dict):
        return ""
    rows = [[probe, m.get("node"), _fmt(m.get("score")), _fmt(m.get("heldout_score"))]
            for probe, found in (naming.get("matches") or {}).items() for m in found]
    params = naming.get("params") or {}
    html = ('<h3 id="naming">Named concepts (probe sets)</h3><p class=hint>A probe set names the concepts its images '
            f'decompose onto (score ≥ {_fmt(params.get("min_score"))}), checked on held-out probe images '
            f'(fraction {_fmt(params.get("holdout"))}): the held-out score must reach the same bound.</p>')
    html += (_table(["probe", "concept", "score", "held-out score"], rows) if rows
             else "<p>No probe named a concept.</p>")
    unmatched = naming.get("unmatched") or []
    if unmatched:
        best = {p: ((naming.get("probes") or {}).get(p) or {}).get("best") or {} for p in unmatched}
        items = "".join(f"<li><b>{escape(p)}</b>" + (f" (best: {escape(str(b.get('node')))}, score "
                                                    f"{_fmt(b.get('score'))})" if b else "") + "</li>"
                        for p, b in best.items())
        html += f'<p class="fail" id="unmatched">Unmatched probes: they named no concept.</p><ul>{items}</ul>'
    return html


def _explanations_section(explanations: Sequence[dict] | None) -> str:
    """Per explained image: its prediction, then per segment the concepts that carried the class (overlay,
    attribution, coefficient) and the segment's completeness."""
    if not explanations:
        return ""
    parts = ['<section id="explanations"><h2>Image explanations</h2><p class=hint>Why one image was classified as '
             'it was: GIG along the image’s own path. Per layer, the concepts that carried the class into the next '
             'layer (at the last layer: into the class), each with its iERF overlay (the input region that drives it, '
             'outlined in yellow), its attribution and its coefficient in the image. Completeness compares the sum of '
             'the attributions with the change of the target.</p>']
    for i, explanation in enumerate(explanations):
        try:
            parts.append(_explanation_html(explanation))
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"explanations[{i}] is not an explanation dict (gigaudit.explanations): "
                             f"missing or malformed {exc}") from None
    return "".join(parts) + "</section>"


def _explanation_html(e: dict) -> str:
    def name(which: str) -> str:
        label = e.get(f"{which}_label")
        return f"{label} ({e[f'{which}_class']})" if label else f"class {e[f'{which}_class']}"

    p = e["probabilities"]
    html = [f'<article class="explanation"><h3>{escape(str(e.get("image") or "image"))}: predicted '
            f'{escape(name("predicted"))} (p = {p[e["predicted_class"]]:.3f}), explaining {escape(name("target"))} '
            f'(p = {p[e["target_class"]]:.3f})</h3>']
    for layer in e["layers"]:
        pair = f'{layer["source"]}->{layer["target"]}'
        figures = (e.get("completeness") or {}).get(pair) or {}
        rows = []
        for c in layer["contributions"]:
            overlay = c.get("ierf_overlay") or b""
            image = (f'<img src="data:image/webp;base64,{base64.b64encode(overlay).decode()}" width=96 height=96 '
                     f'alt="iERF of {escape(c["node_id"])}">' if isinstance(overlay, bytes) and overlay else "–")
            concept = escape(c["node_id"]) + (f" <b>{escape(str(c['label']))}</b>" if c.get("label") else "")
            rows.append(f"<tr><td>{image}</td><td>{concept}</td><td>{_fmt(float(c['attribution']))}</td>"
                        f"<td>{_fmt(float(c['coefficient']))}</td></tr>")
        html.append(f'<h4>{escape(layer["source"])} → {escape(layer["target"])}</h4><p class=hint>completeness: sum '
                    f'{_fmt(figures.get("attribution_sum"))} vs change {_fmt(figures.get("target_difference"))} '
                    f'(relative error {_fmt(figures.get("relative"))})</p><table class="explanation-table"><thead>'
                    f'<tr><th>iERF</th><th>concept</th><th>attribution</th><th>coefficient</th></tr></thead>'
                    f'<tbody>{"".join(rows)}</tbody></table>')
    return "".join(html) + "</article>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]], status_col: int | None = None, css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{"pass" if cell == "pass" else "fail"}"' if i == status_col else ""
            cells.append(f"<td{cls}>{escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    table_class = f' class="{css}"' if css else ""
    return f"<table{table_class}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
