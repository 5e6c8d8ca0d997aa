"""Shortcut benchmark (issue 9): does the gate catch a model that learned a spurious cue? The full version of
tests/gig/test_shortcuts.py.

Per cue kind (``gig.shortcuts``: ``patch`` = a 5×5 px watermark in a corner, ``cast`` = a purple background cast)
and seed: a cheating PartsNet (cue on every training image of the affected class), a clean one (same images
without the cue) and a second clean one (the next seed: the benign reference for drift), each audited at the
library's defaults on the same fresh images (cue on the affected class), the cue named by its probe set of
cue-only images (``gig.naming``). Measured:

- ``reliance``: accuracy on the other classes' images without / with the cue, and how many then go to the affected
  class (``gig.shortcuts.cue_reliance``);
- ``rank``: the affected class's top-3 incoming concepts (edges into its class node) with their shares, their
  names, and the naming-free cue score (``cue_concept_scores``: coefficient raised by the cue where it is); the
  rank of the named cue concept there (``named_rank``) and within its own layer by the class's relevance
  (``named_in_layer``);
- ``policy``: ``forbidden_concepts: [{concept: <cue>, max_share: 0.2}]`` (the default: an unmatched probe passes, reported);
- ``drift``: the summary of ``gigaudit.drift`` from the clean model to the cheating one and to the other clean one,
  the affected class's edge change in each, and whether ``drift: {min_circuit_overlap: 0.3}`` fails;
- ``exemplars_on_cue``: the fraction of the named cue concept's exemplars (as the report embeds them) on cue cells.

    OMP_NUM_THREADS=1 python benchmarks/bench_shortcuts.py --seeds 0 1 2 > shortcuts.json

Prints one JSON line per (kind, seed) and a summary line per kind.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import gig.shortcuts as shortcuts
from gigaudit import drift
from gigaudit.policy import evaluate_policy
from gigaudit.report import build_report
from gigaudit.report.builder import report_data
from gigaudit.results import ConceptGraph

DRIFT_POLICY = {"drift": {"min_circuit_overlap": 0.3}}


def forbidden(kind: str, max_share: float = 0.2) -> dict:
    return {"forbidden_concepts": [{"concept": shortcuts.cue(kind).name, "max_share": max_share}]}


def ranking(model, audit: dict, kind: str) -> dict:
    spec = shortcuts.cue(kind)
    scores = shortcuts.cue_concept_scores(model, audit["concepts"], audit["layers"][-1], kind)
    view = ConceptGraph(audit["graph"])
    incoming = sorted(view.incoming(view.class_node(spec.affected)), key=lambda e: -e["share"])
    best = f"{audit['layers'][-1]}:{int(scores.argmax())}"
    sources = [e["source"] for e in incoming]
    return {"top3": [{"node": e["source"], "share": round(e["share"], 4), "label": view.nodes[e["source"]].get("label"),
                      "cue_score": round(float(scores[view.nodes[e["source"]]["index"]]), 4)} for e in incoming[:3]],
            "cue_score_best": {"node": best, "score": round(float(scores.max()), 4),
                               "rank": sources.index(best) + 1 if best in sources else None},
            "named_rank": shortcuts.cue_rank(audit["graph"], kind)["rank"],
            "named_in_layer": shortcuts.cue_relevance_ranks(audit["graph"], kind),
            "naming_best": audit["naming"].probes[spec.name]["best"], "unmatched": audit["naming"].unmatched}


def policy_figures(graph: dict, kind: str) -> dict:
    result = evaluate_policy(forbidden(kind), graph)
    affected = shortcuts.CLASS_NAMES[shortcuts.cue(kind).affected]
    check = next(c for c in result.checks if c.name.endswith(f", {affected}]") or "unmatched" in c.detail)
    return {"passed": result.passed, "failures": [c.name for c in result.failures], "affected": check.detail}


def run(kind: str, seed: int, n_audit: int) -> dict:
    start = time.perf_counter()
    models = shortcuts.train_shortcut_models(kind, seed=seed)
    models["clean_other_seed"] = shortcuts.train_shortcut_models(kind, seed=seed + 1)["clean"]
    data = shortcuts.make_shortcut_dataset(kind, n_audit, seed=5000 + seed)
    audits = {name: shortcuts.audit_model(model, kind, data) for name, (model, _) in models.items()}
    row = {"kind": kind, "seed": seed, "cue": shortcuts.cue(kind).name, "affected": shortcuts.cue(kind).affected,
           "n_audit": n_audit}
    for name in ("cheating", "clean"):
        model, info = models[name]
        row[name] = {"test_accuracy": info["test_accuracy"], "train_seconds": info["train_seconds"],
                     "audit_seconds": audits[name]["seconds"], "reliance": shortcuts.cue_reliance(model, kind),
                     "rank": ranking(model, audits[name], kind), "policy": policy_figures(audits[name]["graph"], kind)}
    affected = f"logits:{shortcuts.cue(kind).affected}"
    reference = audits["clean"]["graph"]
    row["drift"] = {}
    for name in ("cheating", "clean_other_seed"):
        d = drift.compare(reference, audits[name]["graph"])
        gate = evaluate_policy(DRIFT_POLICY, audits[name]["graph"], reference=reference)
        row["drift"][name] = {**{k: round(v, 4) for k, v in d.summary().items()},
                              "affected_edge_change": round(d.edge_change.get(affected, float("nan")), 4),
                              "gate_passed": gate.passed}
    last = audits["cheating"]["layers"][-1]
    named = [r for r in row["cheating"]["rank"]["named_in_layer"] if r["rank"] <= 3]
    if named:  # the strongest named cue concept outside the last layer (whose PFVs see the whole image), if any
        chosen = min(named, key=lambda r: (r["layer"] == last, -r["share"]))
        shots = shortcuts.report_exemplars(models["cheating"][0], audits["cheating"]["concepts"], data.images,
                                           audits["cheating"]["graph"], [chosen["node"]])
        page = report_data(build_report(audits["cheating"]["graph"], exemplars=shots))
        node = next(n for n in page["nodes"] if n["id"] == chosen["node"])
        gallery = page["gallery"].get(chosen["node"], [])
        row["report"] = {"node": chosen["node"], "name": node.get("name"), "exemplars": len(gallery),
                         "embedded": sum("src" in e for e in gallery),
                         "exemplars_on_cue": shortcuts.exemplars_on_cue(
                             gallery, data, audits["cheating"]["grids"][chosen["layer"]]),
                         "exemplar_images_with_cue": sum(bool(data.has_cue[e["image"]]) for e in gallery)
                         / max(1, len(gallery))}
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def summary(rows: list[dict]) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return round(sum(values) / len(values), 3) if values else None

    def frac(values):
        return round(sum(map(bool, values)) / len(values), 3)

    out = {"kind": rows[0]["kind"], "seeds": [r["seed"] for r in rows]}
    for name in ("cheating", "clean"):
        out[name] = {
            "drop": mean([r[name]["reliance"]["drop"] for r in rows]),
            "to_affected": mean([r[name]["reliance"]["to_affected"] for r in rows]),
            "cue_concept_top3_naming_free": frac([(r[name]["rank"]["cue_score_best"]["rank"] or 99) <= 3
                                                  and r[name]["rank"]["cue_score_best"]["score"] > 0.1
                                                  for r in rows]),
            "named_cue_top3_class_inputs": frac([(r[name]["rank"]["named_rank"] or 99) <= 3 for r in rows]),
            "named_cue_top3_in_layer": frac([any(x["rank"] <= 3 and x["share"] > 0.05
                                                 for x in r[name]["rank"]["named_in_layer"]) for r in rows]),
            "policy_passed": frac([r[name]["policy"]["passed"] for r in rows]),
            "unmatched": frac([bool(r[name]["rank"]["unmatched"]) for r in rows]),
        }
    for name in ("cheating", "clean_other_seed"):
        figures = [r["drift"][name] for r in rows]
        out[f"drift_to_{name}"] = {"gate_passed": frac([f["gate_passed"] for f in figures]),
                                   "affected_edge_change": mean([f["affected_edge_change"] for f in figures]),
                                   "min_circuit_overlap": mean([f["min_circuit_overlap"] for f in figures])}
    out["exemplars_on_cue"] = mean([r.get("report", {}).get("exemplars_on_cue") for r in rows])
    out["named_cue_shown"] = frac([r.get("report", {}).get("name") == r["cue"] for r in rows])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", nargs="+", default=list(shortcuts.KINDS), choices=shortcuts.KINDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-audit", type=int, default=240, help="audit images (the CI test uses 120)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for kind in args.kinds:
        rows = []
        for seed in args.seeds:
            rows.append(run(kind, seed, args.n_audit))
            print(json.dumps(rows[-1], default=float), flush=True)
        print(json.dumps({"summary": summary(rows)}), flush=True)


if __name__ == "__main__":
    main()
