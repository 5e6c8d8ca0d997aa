import copy

import pytest
from graph_factory import random_graph

from gigaudit.drift import compare


def relabel(graph: dict, perm: dict[int, int]) -> dict:
    """The same graph with the concepts of every layer renumbered (k → perm[k])."""
    def new_id(node_id: str) -> str:
        layer, k = node_id.rsplit(":", 1)
        return node_id if layer == "logits" else f"{layer}:{perm[int(k)]}"
    out = copy.deepcopy(graph)
    for n in out["nodes"]:
        if n["kind"] == "concept":
            n["index"] = perm[n["index"]]
            n["id"] = new_id(n["id"])
    for e in out["edges"]:
        e["source"], e["target"] = new_id(e["source"]), new_id(e["target"])
    return out


def test_identical_audits_do_not_drift(graph):
    d = compare(graph, graph)
    assert d.summary() == {"min_matched_fraction": 1.0, "mean_edge_change": 0.0, "max_edge_change": 0.0,
                           "min_circuit_overlap": 1.0}
    assert all(m.reference == m.current and m.similarity == 1.0 for ms in d.matches.values() for m in ms)


def test_renumbered_concepts_are_matched_by_their_exemplars(graph):
    perm = {k: (k * 5 + 2) % 6 for k in range(6)}
    d = compare(graph, relabel(graph, perm))
    for layer, matches in d.matches.items():
        assert sorted((m.reference, m.current) for m in matches) == sorted(
            (f"{layer}:{k}", f"{layer}:{perm[k]}") for k in range(6))
    assert d.summary()["max_edge_change"] == pytest.approx(0.0, abs=1e-12)
    assert d.summary()["min_circuit_overlap"] == 1.0


def test_changed_edge_gives_its_total_variation(graph):
    current = copy.deepcopy(graph)
    target = "logits:0"
    incoming = [e for e in current["edges"] if e["target"] == target]
    before = {e["source"]: e["share"] for e in incoming}
    incoming[0]["share"], incoming[1]["share"] = incoming[1]["share"], incoming[0]["share"]
    d = compare(graph, current)
    expected = 0.5 * 2 * abs(before[incoming[0]["source"]] - before[incoming[1]["source"]])
    assert d.edge_change[target] == pytest.approx(expected)
    assert all(v == 0.0 for k, v in d.edge_change.items() if k != target)


def test_a_different_model_drifts_more_than_a_copy(graph):
    other = random_graph(seed=7)  # same concepts (same exemplars), different wiring
    d = compare(graph, other)
    assert d.summary()["mean_edge_change"] > 0.2
    assert d.summary()["min_circuit_overlap"] < 1.0


def test_lost_concepts_lower_the_matched_fraction(graph):
    current = copy.deepcopy(graph)
    for n in current["nodes"]:
        if n["id"] in ("features.0:0", "features.0:1"):
            n["exemplars"] = [{"image": 999, "position": 0, "coefficient": 1.0}]
    d = compare(graph, current)
    assert d.matched_fraction["features.0"] == pytest.approx(4 / 6)
    assert set(d.unmatched["features.0"]) == {"features.0:0", "features.0:1"}


def test_cosine_matching_uses_concept_vectors(graph):
    ref, cur = copy.deepcopy(graph), relabel(graph, {k: 5 - k for k in range(6)})
    for g, flip in ((ref, False), (cur, True)):
        for n in g["nodes"]:
            if n["kind"] == "concept":
                k = 5 - n["index"] if flip else n["index"]
                n["vector"] = [1.0 if i == k else 0.0 for i in range(6)]
                n["exemplars"] = []
    d = compare(ref, cur, method="cosine")
    assert {(m.reference, m.current) for m in d.matches["features.1"]} == {
        (f"features.1:{k}", f"features.1:{5 - k}") for k in range(6)}


def test_bad_input_is_refused(graph):
    with pytest.raises(ValueError, match="valid: auto, exemplars, cosine"):
        compare(graph, graph, method="hungarian")
    with pytest.raises(ValueError, match="different classes"):
        compare(graph, {**graph, "classes": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="no analysed layer in common"):
        compare(graph, {**graph, "layers": ["x", "logits"], "nodes": [n for n in graph["nodes"] if n["kind"] == "class"],
                        "edges": []})
    with pytest.raises(ValueError, match="needs concept vectors"):
        compare(graph, graph, method="cosine")
