"""The gate catches a cheating model (issue 9, item 3): the small CPU version of benchmarks/bench_shortcuts.py.

For each kind of cue (a local watermark patch, a global background cast), a cheating PartsNet is trained with the
cue on one class and a clean one on the same images without it (plus a second clean model, another seed, as the
benign reference for drift). All are audited on the same 120 fresh images, cue on the affected class, at the
library's defaults, with the cue named by its probe set of cue-only images (gig.naming).
"""
import pytest
import torch

import gig.shortcuts as shortcuts
from gigaudit import drift
from gigaudit.policy import evaluate_policy
from gigaudit.report import build_report
from gigaudit.report.builder import report_data
from gigaudit.results import ConceptGraph

N_AUDIT = 120


@pytest.fixture(scope="module", params=shortcuts.KINDS)
def bench(request):
    kind = request.param
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = shortcuts.train_shortcut_models(kind, seed=0)
        models["clean_other_seed"] = shortcuts.train_shortcut_models(kind, seed=1)["clean"]
        data = shortcuts.make_shortcut_dataset(kind, N_AUDIT, seed=5000)
        audits = {name: shortcuts.audit_model(model, kind, data) for name, (model, _) in models.items()}
    finally:
        torch.set_num_threads(threads)
    return kind, models, data, audits


def test_the_cheating_model_uses_the_cue_and_the_clean_one_does_not(bench, record_property):
    kind, models, _, _ = bench
    cheating = shortcuts.cue_reliance(models["cheating"][0], kind)
    clean = shortcuts.cue_reliance(models["clean"][0], kind)
    record_property("reliance", {"cheating": cheating, "clean": clean})
    assert models["cheating"][1]["test_accuracy"] > 0.95 and models["clean"][1]["test_accuracy"] > 0.95
    assert cheating["accuracy_other"] > 0.95 and cheating["drop"] > 0.3 and cheating["to_affected"] > 0.3
    assert clean["drop"] < 0.05 and clean["to_affected"] < 0.05


def test_the_cue_concept_feeds_the_affected_class_of_the_cheating_model_only(bench, record_property):
    kind, models, _, audits = bench
    spec = shortcuts.cue(kind)
    found = {}
    for name in ("cheating", "clean"):
        model, audit = models[name][0], audits[name]
        last = audit["layers"][-1]
        scores = shortcuts.cue_concept_scores(model, audit["concepts"], last, kind)
        view = ConceptGraph(audit["graph"])
        top = sorted(view.incoming(view.class_node(spec.affected)), key=lambda e: -e["share"])[:3]
        found[name] = {"top3": [(e["source"], e["share"], float(scores[view.nodes[e["source"]]["index"]]))
                                for e in top],
                       "named_rank": shortcuts.cue_rank(audit["graph"], kind),
                       "named_in_layer": shortcuts.cue_relevance_ranks(audit["graph"], kind)}
    record_property("ranking", found)
    # naming-free: the last layer's cue concept (raised by the cue where it is) is a top-3 input of the class
    cheater_best = max(score for _, _, score in found["cheating"]["top3"])
    assert cheater_best > 0.3
    assert all(score < 0.1 * cheater_best for _, _, score in found["clean"]["top3"])
    # named by the probe set: a cue concept is among the three most relevant of its layer for the class
    named = found["cheating"]["named_in_layer"]
    assert named and named[0]["rank"] <= 3 and named[0]["share"] > 0.2, named
    assert all(r["rank"] > 3 or r["share"] < 0.05 for r in found["clean"]["named_in_layer"]), found["clean"]


def forbidden(kind: str) -> dict:
    # the default policy: an unmatched forbidden probe (the clean model has nothing like the cue) passes, reported
    return {"forbidden_concepts": [{"concept": shortcuts.cue(kind).name, "classes": "all", "max_share": 0.2}]}


def test_a_forbidden_concepts_policy_fails_the_cheating_model_and_passes_the_clean_one(bench, record_property):
    kind, _, _, audits = bench
    results = {name: evaluate_policy(forbidden(kind), audits[name]["graph"]) for name in ("cheating", "clean")}
    record_property("policy", {name: r.to_dict() for name, r in results.items()})
    assert not results["cheating"].passed
    affected = shortcuts.CLASS_NAMES[shortcuts.cue(kind).affected]
    name = shortcuts.cue(kind).name
    assert [c.name for c in results["cheating"].failures] == [f"forbidden_concept[{name}, {affected}]"]
    assert results["clean"].passed, [c.detail for c in results["clean"].checks]


def test_the_drift_gate_from_the_clean_model_to_the_cheating_one_fails(bench, record_property):
    kind, _, _, audits = bench
    affected = f"logits:{shortcuts.cue(kind).affected}"
    policy = {"drift": {"min_circuit_overlap": 0.3}}
    cheat = evaluate_policy(policy, audits["cheating"]["graph"], reference=audits["clean"]["graph"])
    assert not cheat.passed
    # recorded, not asserted: the gate is not specific (benchmarks/bench_shortcuts.py: a clean retrain with another
    # seed fails it too, and the affected class's edge change does not separate the two on every seed)
    benign = drift.compare(audits["clean"]["graph"], audits["clean_other_seed"]["graph"])
    cheating = drift.compare(audits["clean"]["graph"], audits["cheating"]["graph"])
    record_property("drift", {"cheating": cheating.summary(), "benign": benign.summary(),
                              "affected_edge_change": [cheating.edge_change[affected], benign.edge_change[affected]]})


def report_node(audit: dict, kind: str) -> dict:
    """The named cue concept the report is checked on: among those in the top 3 of their layer for the affected
    class, the strongest outside the last layer (whose PFVs see the whole image) when there is one."""
    named = [r for r in shortcuts.cue_relevance_ranks(audit["graph"], kind) if r["rank"] <= 3]
    return min(named, key=lambda r: (r["layer"] == audit["layers"][-1], -r["share"]))


def test_the_report_shows_the_cue_concept_with_its_exemplars_on_the_cue(bench):
    kind, models, data, audits = bench
    audit, model = audits["cheating"], models["cheating"][0]
    named = report_node(audit, kind)
    shots = shortcuts.report_exemplars(model, audit["concepts"], data.images, audit["graph"], [named["node"]])
    html = build_report(audit["graph"], exemplars=shots,
                        policy=evaluate_policy(forbidden(kind), audit["graph"]))
    page = report_data(html)
    node = next(n for n in page["nodes"] if n["id"] == named["node"])
    assert node.get("name") == shortcuts.cue(kind).name
    gallery = page["gallery"][named["node"]]
    assert gallery and "src" in gallery[0]  # images embedded (the size budget may keep only the first few)
    grid = audit["grids"][named["layer"]]
    assert shortcuts.exemplars_on_cue(gallery, data, grid) >= 0.75


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="valid kinds are: patch, cast"):
        shortcuts.make_shortcut_dataset("stripes", 4)
    with pytest.raises(ValueError, match="cue_rate"):
        shortcuts.make_shortcut_dataset("patch", 4, cue_rate=1.5)
    with pytest.raises(ValueError, match="cue_classes"):
        shortcuts.make_shortcut_dataset("patch", 4, cue_classes=[9])
    with pytest.raises(ValueError, match="part_masks"):
        shortcuts.draw_cue("cast", torch.zeros(2, 3, 32, 32), torch.zeros(3, 32, 32, dtype=torch.int64))


def test_cue_probes_hold_the_cue_alone_with_masks():
    probes = shortcuts.cue_probes("patch", n=6)
    assert probes.name == "watermark" and probes.images.shape == (6, 3, 32, 32)
    assert probes.masks is not None and (probes.masks.flatten(1).sum(1) == 25).all()
    assert shortcuts.cue_probes("cast", n=3).masks is None
    clean, cued = (shortcuts.make_shortcut_dataset("patch", 60, seed=3, cue_classes=c) for c in ((), None))
    differs = (clean.images != cued.images).any(1)
    assert torch.equal(differs, cued.cue_masks > 0)  # only the cue differs
    assert torch.equal(cued.has_cue, cued.labels == shortcuts.cue("patch").affected)
