"""Reports that travel: a size budget the builder keeps by degrading its images and saying what it left out; and what
the summary says about the evaluation scope, an untrained-looking model and class names."""
import io
import random

import pytest
from graph_factory import deletion_report, full_evidence, random_graph
from PIL import Image

from gigaudit.report import build_report, parse_size
from gigaudit.report.builder import report_data
from gigaudit.results import Exemplar


def noise_png(seed: int, size: int = 96, mode: str = "RGB") -> bytes:
    """Incompressible pixels: the worst case for the budget."""
    rng = random.Random(seed)
    channels = 3 if mode == "RGB" else 1
    img = Image.frombytes(mode, (size, size), bytes(rng.randrange(256) for _ in range(size * size * channels)))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def large():
    """8 layers of 40 concepts, 16 of them per layer with 6 noisy 96 px exemplars and iERF views (as the worker
    renders them, colour): about 19 MB of images at full quality."""
    graph = random_graph(n_layers=8, k=40, n_classes=10, seed=1, evidence=full_evidence())
    pool = [(noise_png(i), noise_png(1000 + i)) for i in range(12)]
    shots = {}
    for n in graph["nodes"]:
        if n["kind"] == "concept" and n["index"] < 16:
            shots[n["id"]] = [Exemplar(n["id"], j, j, 1.0 - 0.1 * j, *pool[(n["index"] + j) % 12], f"c/{j}.png")
                              for j in range(6)]
    return graph, shots


def test_default_budget_holds_a_large_audit_and_says_what_it_left_out(large):
    graph, shots = large
    html = build_report(graph, exemplars=shots)
    assert len(html.encode()) <= 5_000_000
    budget = report_data(html)["budget"]
    assert budget["max_bytes"] == 5_000_000 and budget["left_out"]
    assert 'id="budget-notice"' in html and "--report-size" in html
    data = report_data(html)
    shown = [nid for nid, entries in data["gallery"].items() if entries and entries[0].get("src")]
    assert 0 < len(shown) == budget["embedded_concepts"]  # incompressible images: degraded, then the least
    assert budget["plan"] != {"per_concept": 6, "size": 96, "quality": 80, "ierf": True}  # relevant left out
    for nid in budget["left_out_concepts"]:  # left out: the references stay
        assert [e["image"] for e in data["gallery"][nid]] == [s.image for s in shots[nid]]
    unbounded = len(build_report(graph, exemplars=shots, max_bytes=0).encode())
    print(f"report: {len(html.encode()) / 1e6:.2f} MB at the default budget ({len(shown)} of {len(shots)} concepts' "
          f"images, plan {budget['plan']}); {unbounded / 1e6:.1f} MB without a budget")


@pytest.mark.parametrize("size", ["1MB", "400kB"])
def test_smaller_budgets_degrade_step_by_step(large, size):
    graph, shots = large
    html = build_report(graph, exemplars=shots, max_bytes=parse_size(size))
    assert len(html.encode()) <= parse_size(size)
    budget = report_data(html)["budget"]
    assert not budget["plan"]["ierf"] and "the iERF views" in budget["left_out"]
    embedded = [e for entries in report_data(html)["gallery"].values() for e in entries if e.get("src")]
    assert embedded and not any("ierf" in e for e in embedded)


def test_the_most_relevant_concepts_keep_their_images_first(large):
    graph, shots = large
    data = report_data(build_report(graph, exemplars=shots, max_bytes=parse_size("300kB")))
    relevance = {n["id"]: n["relevance"] for n in data["nodes"]}
    kept = [nid for nid in shots if nid not in data["budget"]["left_out_concepts"]]
    left = data["budget"]["left_out_concepts"]
    assert kept and left
    for layer in {nid.split(":")[0] for nid in kept}:  # within a layer, every kept one outranks every left one
        ours = [relevance[n] for n in kept if n.startswith(layer + ":")]
        others = [relevance[n] for n in left if n.startswith(layer + ":")]
        assert not others or min(ours) >= max(others)


def test_parse_size():
    assert parse_size("5MB") == 5_000_000 and parse_size("2MiB") == 2 * 2**20 and parse_size("1500") == 1500
    assert parse_size("0.5 GB") == 500_000_000 and parse_size("0") == 0
    with pytest.raises(ValueError, match="e.g. 5MB"):
        parse_size("5 parsecs")


def test_summary_states_the_evaluation_scope(large):
    graph, _ = large
    html = build_report({**graph, "evidence": {**graph["evidence"], "images": 16}})
    assert "Evidence (completeness, deletion, fidelity, …): the first 16 of the 40 images" in html
    assert "<code>--evaluation-images</code>" in html
    assert "the first" not in build_report({**graph, "evidence": {"images": 40}}).split('id="scope"')[1][:200]
    recorded = {"evaluation_scope": {"images_evaluated": 8, "images_total": 40}}  # what the worker records
    assert "the first 8 of the 40 images" in build_report({**graph, "evidence": recorded})


def test_near_uniform_predictions_warn_that_the_model_looks_untrained():
    graph = random_graph(n_classes=4)
    chance = deletion_report(0.5, {"random": 1.0})
    chance["readout"] = "probability"
    for order in chance["orders"].values():
        order["deletion_curve"] = [0.26] + order["deletion_curve"][1:]
    html = build_report({**graph, "evidence": {"deletion": {"features.1->logits": chance}}})
    assert 'id="untrained-warning"' in html and "0.260" in html and "1/4 = 0.250" in html
    trained = {**chance, "orders": {k: {**v, "deletion_curve": [0.9] + v["deletion_curve"][1:]}
                                    for k, v in chance["orders"].items()}}
    assert 'id="untrained-warning"' not in build_report({**graph, "evidence": {"deletion": {"x->logits": trained}}})
    recorded = {"evaluation_scope": {"mean_max_softmax": 0.27, "num_classes": 4}}  # what the worker records
    assert "mean top-class probability" in build_report({**graph, "evidence": recorded})
    collapsed = {"evaluation_scope": {"mean_max_softmax": 0.99, "num_classes": 4, "images_evaluated": 16,
                                      "predicted_class_entropy": 0.0}}
    assert "predicts one class for all 16" in build_report({**graph, "evidence": collapsed})
    healthy = {"evaluation_scope": {"mean_max_softmax": 0.9, "num_classes": 4, "images_evaluated": 16,
                                    "predicted_class_entropy": 1.3}}
    assert 'id="untrained-warning"' not in build_report({**graph, "evidence": healthy})


def test_classes_take_the_given_names_where_the_graph_has_none():
    graph = random_graph(n_classes=3)
    graph["classes"] = []
    for node in graph["nodes"]:
        node.pop("name", None)
    data = report_data(build_report(graph, class_names=["cat", "dog", "eel"]))
    assert [n["label"] for n in data["nodes"] if n["kind"] == "class"] == ["cat", "dog", "eel"]
    assert data["circuits"]["logits:1"]["label"] == "dog"
    assert [n["label"] for n in report_data(build_report(graph))["nodes"] if n["kind"] == "class"] == \
        ["class 0", "class 1", "class 2"]
