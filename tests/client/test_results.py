import json

import networkx as nx
import pytest
from graph_factory import exemplars_for, make_graph, random_graph
from PIL import Image

from gigaudit.results import ConceptGraph


def test_rejects_unknown_format_and_dangling_edges(graph):
    with pytest.raises(ValueError, match="gigaudit.concept-graph/1"):
        ConceptGraph({**graph, "format": "other"})
    bad = {**graph, "edges": [{**graph["edges"][0], "source": "features.0:99"}]}
    with pytest.raises(ValueError, match="features.0:99"):
        ConceptGraph(bad)


def test_class_lookup_names_valid_classes(graph):
    view = ConceptGraph(graph)
    assert view.class_node("class2") == view.class_node(2) == "logits:2"
    with pytest.raises(ValueError, match="valid classes: 0 \\(class0\\)"):
        view.class_node("cat")


def test_shares_sum_to_one_in_absolute_value(graph):
    view = ConceptGraph(graph)
    for target in {e["target"] for e in graph["edges"]}:
        assert sum(abs(s) for s in view.shares(target).values()) == pytest.approx(1.0)
        for cls in range(3):
            shares = view.shares(target, cls)
            if shares:
                assert sum(abs(s) for s in shares.values()) == pytest.approx(1.0)


def test_class_conditional_share_uses_only_that_class():
    edges = {("a:0", "b:0"): {"values": [1.0, -3.0], "classes": [0, 1]},
             ("a:1", "b:0"): {"values": [1.0, 1.0], "classes": [0, 1]},
             ("b:0", "logits:0"): {"values": [1.0], "classes": [0]}}
    view = ConceptGraph(make_graph(edges, ["a", "b"], 2, ["x", "y"]))
    assert view.shares("b:0", 0) == {"a:0": 0.5, "a:1": 0.5}
    assert view.shares("b:0", 1) == {"a:0": -0.75, "a:1": 0.25}
    assert view.shares("b:0")["a:0"] == pytest.approx(-1 / 2)  # global means: -1 and 1


def test_relevance_is_conserved_and_circuit_keeps_top_edge(graph):
    view = ConceptGraph(graph)
    for cls in range(3):
        rel, _ = view.relevance(cls, coverage=1.0)
        for layer in view.concept_layers[-1:]:
            assert sum(r for n, r in rel.items() if view.nodes[n]["layer"] == layer) == pytest.approx(1.0)
        circuit = view.circuit(cls, coverage=0.5)
        top = max(view.shares(f"logits:{cls}", cls).items(), key=lambda kv: abs(kv[1]))[0]
        assert (top, f"logits:{cls}") in circuit["edges"]
        assert len(circuit["edges"]) < len(view.circuit(cls, coverage=1.0)["edges"])
    with pytest.raises(ValueError, match="coverage"):
        view.relevance(0, coverage=0.0)


def test_prune_keeps_top_k_per_target_without_changing_the_graph(graph):
    before = json.dumps(graph)
    view = ConceptGraph(graph)
    pruned = view.prune(2)
    assert json.dumps(graph) == before
    for target in {e["target"] for e in graph["edges"]}:
        kept = sorted(abs(e["share"]) for e in pruned if e["target"] == target)
        all_ = sorted(abs(e["share"]) for e in graph["edges"] if e["target"] == target)
        assert kept == all_[-2:]
    with pytest.raises(ValueError, match="top_k"):
        view.prune(0)


def test_exports_round_trip(graph, tmp_path):
    view = ConceptGraph(graph)
    assert ConceptGraph.from_json(view.to_json()).data == graph
    g = view.to_networkx()
    assert g.number_of_nodes() == len(graph["nodes"]) and g.number_of_edges() == len(graph["edges"])
    e = graph["edges"][0]
    assert g.edges[e["source"], e["target"]]["share"] == e["share"]
    view.write_graphml(tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.number_of_edges() == len(graph["edges"])
    assert json.loads(back.graph["layers"]) == graph["layers"]


def test_exemplar_images_and_overlay():
    graph = random_graph()
    ex = exemplars_for(graph)["features.0:1"][0]
    assert ex.to_pil().size == (32, 32)
    import io
    overlay = Image.open(io.BytesIO(ex.ierf_overlay_png()))
    assert overlay.mode == "RGBA" and overlay.size == (32, 32)
    alpha = overlay.getchannel("A")
    assert alpha.getextrema()[1] > 100 and alpha.getpixel((0, 0)) == 0  # hot where the map is, clear elsewhere


def test_overall_relevance_is_the_mean_over_classes_on_unconditional_shares():
    edges = {("a:0", "logits:0"): {"values": [3.0], "classes": [0]},
             ("a:1", "logits:0"): {"values": [-1.0], "classes": [0]},
             ("a:1", "logits:1"): {"values": [2.0], "classes": [1]}}
    view = ConceptGraph(make_graph(edges, ["a"], 2, ["x", "y"]))
    rel = view.overall_relevance()
    assert rel["a:0"] == pytest.approx(0.5 * 0.75) and rel["a:1"] == pytest.approx(0.5 * 0.25 + 0.5)
