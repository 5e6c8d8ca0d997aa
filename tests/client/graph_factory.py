"""Hand-made concept graphs (docs/graph-format.md) and exemplar PNGs for the client tests.

A module of its own (not conftest.py): test modules import it by a name no other test folder uses."""
from __future__ import annotations

import io
import random

from PIL import Image

from gigaudit.results import Exemplar


def make_graph(edges: dict[tuple[str, str], dict], layers: list[str], n_concepts: int, classes: list[str],
               exemplars: dict[str, list[tuple[int, int]]] | None = None, evidence: dict | None = None) -> dict:
    """A graph dict from edge specs {(source, target): {"values": [...], "classes": [...]}}.

    `values` are per-image contributions, `classes` the class of each image; the accumulators and derived fields
    are computed as the format defines them.
    """
    nodes = []
    for layer in layers:
        for k in range(n_concepts):
            nid = f"{layer}:{k}"
            ex = [{"image": i, "position": p, "coefficient": 1.0 - 0.1 * j}
                  for j, (i, p) in enumerate((exemplars or {}).get(nid, [(k, k), (k + 10, 0)]))]
            nodes.append({"id": nid, "layer": layer, "index": k, "kind": "concept", "count": 5 + k,
                          "frequency": (5 + k) / 40, "mean_coefficient": 0.5, "exemplars": ex})
    for c, name in enumerate(classes):
        nodes.append({"id": f"logits:{c}", "layer": "logits", "index": c, "kind": "class", "name": name,
                      "count": 10, "frequency": 0.25})
    out_edges = []
    for (source, target), spec in edges.items():
        values, labels = spec["values"], spec["classes"]
        class_sums: dict[str, list] = {}
        for v, c in zip(values, labels):
            s = class_sums.setdefault(str(c), [0.0, 0])
            s[0] += v
            s[1] += 1
        n = len(values)
        mean = sum(values) / n
        out_edges.append({"source": source, "target": target, "count": n, "sum": sum(values),
                          "sum_sq": sum(v * v for v in values), "pos_sum": sum(v for v in values if v > 0),
                          "neg_sum": sum(v for v in values if v < 0), "mean": mean,
                          "std": (sum((v - mean) ** 2 for v in values) / n) ** 0.5, "class_sums": class_sums})
    for e in out_edges:
        norm = sum(abs(o["mean"]) for o in out_edges if o["target"] == e["target"])
        e["share"] = e["mean"] / norm
    return {"format": "gigaudit.concept-graph/1", "layers": layers + ["logits"], "classes": classes,
            "n_images": 40, "params": {"steps": 16, "method": "gausslegendre", "top_t": 5},
            "nodes": nodes, "edges": out_edges, "evidence": evidence or {}}


def random_graph(n_layers: int = 2, k: int = 6, n_classes: int = 3, seed: int = 0, evidence: dict | None = None):
    rng = random.Random(seed)
    layers = [f"features.{i}" for i in range(n_layers)]
    edges = {}
    columns = [[f"{layer}:{j}" for j in range(k)] for layer in layers]
    columns.append([f"logits:{c}" for c in range(n_classes)])
    for sources, targets in zip(columns, columns[1:]):
        for t in targets:
            for s in rng.sample(sources, min(len(sources), 4)):
                labels = [rng.randrange(n_classes) for _ in range(6)]
                if t.startswith("logits:"):
                    labels = [int(t.split(":")[1])] * 6
                edges[(s, t)] = {"values": [rng.gauss(0.3, 0.4) for _ in labels], "classes": labels}
    return make_graph(edges, layers, k, [f"class{c}" for c in range(n_classes)], evidence=evidence)


def deletion_report(gig_power: float, baselines: dict[str, float]) -> dict:
    """A `gig.evaluation` deletion/insertion report whose curves are 1 - f**p (deletion) and f**p (insertion)."""
    fr = [i / 10 for i in range(11)]
    orders = {}
    for name, power in {"gig": gig_power, **baselines}.items():
        deletion, insertion = [1 - f ** power for f in fr], [f ** power for f in fr]
        orders[name] = {"deletion_curve": deletion, "insertion_curve": insertion,
                        "deletion_auc": 1 - 1 / (1 + power), "insertion_auc": 1 / (1 + power)}
    return {"orders": orders, "n_rows": 8, "n_points": 10}


def full_evidence() -> dict:
    versus = [{"steps": 8, "delta_mean": 0.02, "delta_max": 0.08}, {"steps": 16, "delta_mean": 0.004, "delta_max": 0.02},
              {"steps": 32, "delta_mean": 0.001, "delta_max": 0.005}]
    return {
        "completeness": {"features.0->features.1": {"dataset_delta": 0.003, "delta_mean": 0.004, "delta_max": 0.02,
                                                     "steps": 16, "versus_steps": versus},
                         "features.1->logits": {"delta_mean": 0.01, "delta_max": 0.05, "steps": 16}},
        "reconstruction": {"features.0": {"relative_error": 0.2, "l0": 0.05, "spliced_top1": 0.97, "spliced_kl": 0.01},
                           "features.1": {"relative_error": 0.3, "l0": 0.07, "spliced_top1": 0.93, "spliced_kl": 0.03}},
        "deletion_insertion": {"features.0->features.1": deletion_report(0.3, {"random": 1.0, "abs_coefficient": 0.7}),
                               "features.1->logits": deletion_report(0.5, {"random": 1.0})},
        "stability": {"matched_cosine": 0.91},
    }


def png(colour: tuple[int, int, int], size: int = 32, grey: bool = False) -> bytes:
    img = Image.new("L" if grey else "RGB", (size, size), colour[0] if grey else colour)
    if not grey:
        for x in range(size // 4, size // 2):
            for y in range(size // 4, size // 2):
                img.putpixel((x, y), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    else:
        for x in range(size // 3, 2 * size // 3):
            img.putpixel((x, size // 2), 255)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def exemplars_for(graph: dict, per_node: int = 3) -> dict[str, list[Exemplar]]:
    out = {}
    for i, node in enumerate(n for n in graph["nodes"] if n["kind"] == "concept"):
        colour = ((53 * i) % 256, (97 * i + 40) % 256, (151 * i + 80) % 256)
        out[node["id"]] = [Exemplar(node["id"], e["image"], e["position"], e["coefficient"], png(colour),
                                    png((30,), grey=True)) for e in node["exemplars"][:per_node]]
    return out


def name_nodes(graph: dict, labels: dict[str, str], unmatched: list[str] = (), on_nodes: bool = True) -> dict:
    """``graph`` with nodes named as ``gig.naming.label_graph`` names them (``label``, ``label_score`` and
    ``evidence.naming``); ``on_nodes=False`` keeps the names in ``evidence.naming.labels`` only."""
    probes = sorted({*labels.values(), *unmatched})
    for node in graph["nodes"]:
        if on_nodes and node["id"] in labels:
            node["label"], node["label_score"] = labels[node["id"]], 0.9
    matches = {p: [{"layer": n.split(":")[0], "concept": int(n.split(":")[1]), "node": n, "score": 0.9,
                    "heldout_score": 0.85} for n, name in labels.items() if name == p] for p in probes}
    graph.setdefault("evidence", {})["naming"] = {
        "format": "gigaudit.naming/1", "labels": {n: [name, 0.9] for n, name in labels.items()}, "matches": matches,
        "unmatched": list(unmatched), "params": {"min_score": 0.6, "holdout": 0.3},
        "probes": {p: {"images": 10, "fit": 7, "heldout": 3, "best": (matches[p] or [{"node": "features.1:2",
                                                                                      "score": 0.55}])[0]}
                   for p in probes}}
    return graph
