"""gig.graph and gig.build: the concept graph built on a real PartsNet, its exact merge, views and dict format."""
import json
import math

import pytest
import torch

import gig
from gig.concepts.extract import extract_concepts
from gig.graph import ConceptGraph
from gig.synthetic import CLASS_NAMES, load_parts_net, make_parts_dataset

LAYERS = ["features.2", "features.3"]
BATCH = 8


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model, _ = load_parts_net()
    images, labels, _ = make_parts_dataset(24, seed=11)
    batches = [(images[i:i + BATCH], labels[i:i + BATCH]) for i in range(0, 24, BATCH)]
    concepts = extract_concepts(model, batches, LAYERS, n_concepts=6, lam=0.1, nonneg=True, seed=0)
    return model, batches, concepts


def build(setup, batches=None, **kwargs):
    model, all_batches, concepts = setup
    kwargs = {"steps": 8, "top_t": 3, "class_names": CLASS_NAMES, **kwargs}
    return gig.build_graph(model, all_batches if batches is None else batches, concepts, **kwargs)


@pytest.fixture(scope="module")
def graph(setup):
    return build(setup)


def assert_close(a, b, path="graph"):
    """Equal structure and integers, floats equal to 1e-6 relative (sums over shards add in another order)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {set(a) ^ set(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def test_graph_has_every_node_and_consecutive_edges(graph, setup):
    _, _, concepts = setup
    d = graph.to_dict()
    assert d["layers"] == LAYERS + ["logits"] and d["n_images"] == 24 and d["classes"] == CLASS_NAMES
    kinds = [n["kind"] for n in d["nodes"]]
    assert kinds.count("concept") == 12 and kinds.count("class") == 6
    rank = {layer: i for i, layer in enumerate(d["layers"])}
    assert d["edges"]
    for e in d["edges"]:
        source, target = graph.node(e["source"]), graph.node(e["target"])
        assert rank[target["layer"]] == rank[source["layer"]] + 1
        assert e["count"] == target["target_count"] > 0
    # every image has exactly one class target and top_t = 3 concept targets
    assert sum(graph.node(f"logits:{c}")["target_count"] for c in range(6)) == 24
    assert sum(graph.node(f"features.3:{k}")["target_count"] for k in range(6)) == 24 * 3
    # labelled data: the class node counts the images of its label
    labels = torch.cat([y for _, y in setup[1]])
    assert [graph.node(f"logits:{c}")["count"] for c in range(6)] == labels.bincount(minlength=6).tolist()
    assert graph.node("logits:0")["name"] == CLASS_NAMES[0]


def test_class_edges_equal_attribute_on_the_same_images(graph, setup):
    model, batches, concepts = setup
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    result = gig.attribute(model, images, concepts, "features.3", "logits", labels=labels, steps=8)
    for c in range(6):
        mine = result.attributions[labels == c, :, 0].double().sum(0)
        for q in range(6):
            stored = graph._edges.get((f"features.3:{q}", f"logits:{c}"))
            assert math.isclose(stored.sum if stored else 0.0, float(mine[q]), rel_tol=1e-4, abs_tol=1e-4)


def test_completeness_and_reconstruction_evidence(graph):
    completeness = graph.evidence["completeness"]
    assert set(completeness) == {"features.2->features.3", "features.3->logits"}
    assert completeness["features.3->logits"]["count"] == 24
    assert completeness["features.2->features.3"]["count"] == 24 * 3
    for entry in completeness.values():
        assert 0 <= entry["dataset_delta"] < 0.05 and entry["delta_max"] >= entry["delta_mean"]
    for layer in LAYERS:
        entry = graph.evidence["reconstruction"][layer]
        assert 0 < entry["relative_error"] < 1 and 0 < entry["l0"] <= 1


def test_auto_steps_raise_the_steps_until_the_delta_meets_the_tolerance(setup, graph):
    fixed = graph.evidence["completeness"]["features.2->features.3"]
    tolerance = fixed["dataset_delta"] / 4  # stricter than 8 steps achieve
    auto = build(setup, steps="auto", tolerance=tolerance).evidence["completeness"]["features.2->features.3"]
    assert auto["steps"] > 16 and auto["dataset_delta"] <= tolerance < fixed["dataset_delta"]


def test_evidence_names_the_rule_and_params_record_the_class_target(graph):
    for entry in graph.evidence["completeness"].values():
        assert entry["method"] == "gausslegendre"  # PartsNet has no normalisation: method="auto" keeps GL
        assert entry["converged"] is None and entry["tolerance"] is None
    assert graph.params["class_target"] == "contrastive" and graph.params["method"] == "auto"
    assert ConceptGraph.from_dict(json.loads(json.dumps(graph.to_dict()))).evidence == graph.evidence


def test_contrastive_class_target_changes_only_the_class_edges(setup, graph):
    contrastive, graph = graph, build(setup, class_target="logit")  # the default is contrastive
    assert contrastive.params["class_target"] == "contrastive"
    with pytest.raises(ValueError, match="different params"):
        graph.merge(contrastive)
    for e in graph.edges():
        other = contrastive.edge(e["source"], e["target"])
        if e["target"].startswith("logits:"):
            continue
        assert other["sum"] == pytest.approx(e["sum"], rel=1e-6, abs=1e-9)  # concept edges are unchanged
    class_sums = [(e["sum"], contrastive.edge(e["source"], e["target"])["sum"]) for e in graph.edges()
                  if e["target"].startswith("logits:")]
    assert any(abs(a - b) > 1e-3 * max(abs(a), 1e-9) for a, b in class_sums)
    assert contrastive.evidence["completeness"]["features.3->logits"]["dataset_delta"] < 0.05
    model, batches, concepts = setup
    images, labels = batches[0]
    result = gig.attribute(model, images, concepts, "features.3", "logits", labels=labels, steps=8,
                           class_target="contrastive")
    first = build(setup, batches[:1], class_target="contrastive")
    for c in labels.unique().tolist():
        mine = result.attributions[labels == c, :, 0].double().sum(0)
        for q in range(6):
            stored = first._edges.get((f"features.3:{q}", f"logits:{c}"))
            assert math.isclose(stored.sum if stored else 0.0, float(mine[q]), rel_tol=1e-4, abs_tol=1e-4)


def test_merged_completeness_is_converged_only_where_every_part_was():
    from gig.graph import completeness_entry, merge_evidence

    def entry(converged, method="loglegendre", steps=32):
        tolerance = None if converged is None else 1e-2
        return completeness_entry(4, 0.1, 0.05, 0.2, 10.0, steps, method, converged, tolerance)

    def merged(x, y):
        return merge_evidence({"completeness": {"a->b": x}}, {"completeness": {"a->b": y}})["completeness"]["a->b"]

    assert merged(entry(True), entry(False, steps=512))["converged"] is False
    both = merged(entry(True), entry(True, steps=64))
    assert both["converged"] is True and both["steps"] == 64 and both["count"] == 8 and both["tolerance"] == 1e-2
    assert merged(entry(None), entry(None))["converged"] is None
    assert merged(entry(None), entry(None))["tolerance"] is None
    assert merged(entry(None), entry(None, "gausslegendre"))["method"] == "gausslegendre+loglegendre"
    old = {k: v for k, v in entry(None).items() if k not in ("method", "converged", "tolerance")}  # older graphs
    assert merged(old, old)["count"] == 8 and "method" not in merged(old, old)


def test_shares_sum_to_one_in_absolute_value_per_target(graph):
    totals = {}
    for e in graph.edges():
        totals[e["target"]] = totals.get(e["target"], 0.0) + abs(e["share"])
        assert e["share"] == pytest.approx(e["mean"] / sum(abs(f["mean"]) for f in graph.incoming(e["target"])))
    assert totals and all(t == pytest.approx(1.0) for t in totals.values())


def test_two_shards_merge_to_one_pass(setup, graph):
    _, batches, _ = setup
    first = build(setup, batches[:1])
    second = build(setup, batches[1:], start_index=BATCH)
    merged = first.merge(second)
    assert_close(merged.to_dict(), graph.to_dict())
    exemplar_images = {e["image"] for n in second.to_dict()["nodes"] for e in n.get("exemplars", [])}
    assert exemplar_images and min(exemplar_images) >= BATCH  # global image ids


def test_merge_is_associative_and_commutative(setup):
    _, batches, _ = setup
    a, b, c = (build(setup, [batch], start_index=i * BATCH) for i, batch in enumerate(batches))
    left = a.merge(b).merge(c).to_dict()
    assert_close(a.merge(b.merge(c)).to_dict(), left)
    assert_close(c.merge(b).merge(a).to_dict(), left)
    assert a.merge(b).to_dict()["n_images"] == 2 * BATCH


def test_merge_refuses_different_graphs(setup, graph):
    other = build(setup, setup[1][:1], steps=4)
    with pytest.raises(ValueError, match="different params"):
        graph.merge(other)
    with pytest.raises(ValueError, match="ConceptGraph"):
        graph.merge(graph.to_dict())


@pytest.mark.parametrize("path", ["reconstruction", "activation"])
def test_dict_round_trip_is_exact_through_json(setup, graph, path):
    g = graph if path == "reconstruction" else build(setup, setup[1][:1], path=path)
    d = g.to_dict()
    again = ConceptGraph.from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert again.merge(g).to_dict()["n_images"] == 2 * g.n_images
    if path == "activation":
        residuals = [n for n in d["nodes"] if n["kind"] == "residual"]
        assert [n["id"] for n in residuals] == ["features.2:6", "features.3:6"]
        assert any(e["source"] == "features.3:6" for e in d["edges"])


def test_from_dict_rejects_views_and_corrupt_dicts(graph):
    with pytest.raises(ValueError, match="pruned display view"):
        ConceptGraph.from_dict(graph.prune(2))
    with pytest.raises(ValueError, match="format"):
        ConceptGraph.from_dict({"format": "something-else"})
    broken = graph.to_dict()
    del broken["nodes"][0]["target_count"]
    with pytest.raises(ValueError, match="corrupt"):
        ConceptGraph.from_dict(broken)


def test_prune_keeps_top_incoming_edges_and_the_stored_graph(graph):
    before = graph.to_dict()
    view = graph.prune(2)
    assert graph.to_dict() == before
    assert len(view["edges"]) < len(before["edges"])
    for target in {e["target"] for e in before["edges"]}:
        kept = [e for e in view["edges"] if e["target"] == target]
        best = sorted((e for e in before["edges"] if e["target"] == target), key=lambda e: -abs(e["share"]))[:2]
        assert kept and {e["source"] for e in kept} == {e["source"] for e in best}
    with pytest.raises(ValueError, match="top_k"):
        graph.prune(0)


def test_class_graphs_sum_to_the_full_graph(graph):
    full = graph.to_dict()
    parts = [graph.class_graph(c).to_dict() for c in range(6)]
    assert sum(p["n_images"] for p in parts) == full["n_images"]
    for i, node in enumerate(full["nodes"]):
        assert sum(p["nodes"][i]["count"] for p in parts) == node["count"]
        assert sum(p["nodes"][i]["target_count"] for p in parts) == node["target_count"]
    for edge in full["edges"]:
        key = (edge["source"], edge["target"])
        found = [e for p in parts for e in p["edges"] if (e["source"], e["target"]) == key]
        assert sum(e["sum"] for e in found) == pytest.approx(edge["sum"])
        assert sum(e["count"] for e in found) == sum(n for _, n in edge["class_sums"].values())
        assert all(e["std"] is None for e in found)
    assert graph.class_graph(CLASS_NAMES[2]).to_dict() == parts[2]
    with pytest.raises(ValueError, match="valid classes are 0..5"):
        graph.class_graph(6)


def test_circuit_holds_the_top_edges_of_its_class(graph):
    from gigaudit.results import ConceptGraph as ClientGraph

    for c in range(6):
        circuit = graph.circuit(c, coverage=0.8)
        assert circuit["class"] == f"logits:{c}" and circuit["relevance"][f"logits:{c}"] == 1.0
        into_class = graph.class_graph(c).incoming(f"logits:{c}")
        top = into_class[0]["source"]
        assert (top, f"logits:{c}") in circuit["edges"]
        into_top = [e for e in graph.class_graph(c).incoming(top) if e["share"]]
        assert (into_top[0]["source"], top) in circuit["edges"]
        assert set(circuit["nodes"]) == {n for edge in circuit["edges"] for n in edge} | {f"logits:{c}"}
        # the thin client computes the same circuit from the dict
        client = ClientGraph(graph.to_dict()).circuit(c, coverage=0.8)
        assert set(client["edges"]) == set(circuit["edges"])
        assert client["relevance"] == pytest.approx(circuit["relevance"])
    everything = graph.circuit(0, coverage=1.0)
    assert {s for s, t in everything["edges"] if t == "logits:0"} == {
        e["source"] for e in graph.class_graph(0).incoming("logits:0") if e["share"]}
    with pytest.raises(ValueError, match="coverage"):
        graph.circuit(0, coverage=0)


def test_unlabelled_data_uses_predicted_classes_and_reports_progress(setup):
    model, batches, _ = setup
    calls = []
    g = build(setup, [x for x, _ in batches], progress=lambda *a: calls.append(a))
    assert calls[0] == ("graph", 0, 24) and calls[-1] == ("graph", 24, 24)
    with torch.no_grad():
        predicted = torch.cat([model(x).argmax(1) for x, _ in batches])
    assert [g.node(f"logits:{c}")["count"] for c in range(6)] == predicted.bincount(minlength=6).tolist()


def test_to_networkx(graph):
    nx_graph = graph.to_networkx()
    assert nx_graph.number_of_nodes() == 18 and nx_graph.number_of_edges() == len(graph.edges())
    assert nx_graph.nodes["logits:1"]["name"] == CLASS_NAMES[1]


@pytest.mark.parametrize("kwargs, match", [
    ({"layers": ["features.1"]}, r"no concepts for \['features.1'\].*features.2, features.3"),
    ({"layers": ["features.9"]}, "no concepts for"),
    ({"path": "straight"}, "valid paths are: reconstruction, activation"),
    ({"method": "simpson"}, "gausslegendre"),
    ({"steps": 0}, "steps must be a positive integer"),
    ({"steps": "many"}, "steps must be a positive integer or 'auto'"),
    ({"steps": "auto", "tolerance": 0}, "tolerance must be a positive number"),
    ({"class_target": "margin"}, "valid class targets are: logit, contrastive"),
    ({"top_t": 0}, "top_t must be a positive integer"),
    ({"start_index": -1}, "start_index"),
    ({"class_names": ["a", "b"]}, "2 class names given for 6 classes"),
])
def test_bad_arguments(setup, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(setup, setup[1][:1], **kwargs)


def test_empty_data_and_wrong_concepts(setup):
    model, batches, concepts = setup
    with pytest.raises(ValueError, match="no images"):
        gig.build_graph(model, [], concepts)
    with pytest.raises(ValueError, match="ConceptSet"):
        gig.build_graph(model, batches, {"features.2": torch.randn(4, 32)})
    wrong = gig.ConceptSet.from_vectors({"features.2": torch.randn(4, 16)})  # features.2 has 32 channels
    with pytest.raises(ValueError, match="32"):
        gig.build_graph(model, batches, wrong)


def test_merge_adds_raw_evidence_and_keeps_only_agreed_sections(setup):
    from gig.graph import merge_evidence

    _, batches, _ = setup
    a, b = build(setup, batches[:1]), build(setup, batches[1:2], start_index=BATCH)
    a.evidence.update(images=8, sanity={"top_k_overlap": 0.1})
    b.evidence.update(images=8, sanity={"top_k_overlap": 0.3})
    merged = a.merge(b).evidence
    assert merged["images"] == 8 and "sanity" not in merged
    pair = "features.3->logits"
    assert merged["completeness"][pair]["count"] == 2 * BATCH
    maxima = [g.evidence["completeness"][pair]["delta_max"] for g in (a, b)]
    assert merged["completeness"][pair]["delta_max"] == max(maxima)
    # an entry without raw sums (e.g. only summary figures) cannot be added up and is dropped
    summary = {"completeness": {pair: {"dataset_delta": 0.1}}}
    assert merge_evidence(summary, a.evidence)["completeness"] == {
        k: v for k, v in a.evidence["completeness"].items() if k != pair}
