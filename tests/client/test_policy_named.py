"""Policies on named concepts (forbidden_concepts, required_concepts) on hand-made graphs whose answer is known."""
from __future__ import annotations

import math
import random

import pytest
from graph_factory import make_graph, name_nodes

from gigaudit.policy import evaluate_policy, load_policy, named_share
from gigaudit.results import ConceptGraph

LAYERS = ["features.0", "features.1"]
N = 16  # images per edge


def spread(mean: float, deviation: float, n: int = N) -> list[float]:
    """``n`` values of exactly this mean and (population) standard deviation."""
    return [mean + deviation, mean - deviation] * (n // 2)


def cue_graph(named_mean: float, deviation: float, other_deviation: float | None = None, deep: bool = True) -> dict:
    """Class cat (0) draws ``named_mean`` from features.1:0 ("watermark") and ``1 - named_mean`` from
    features.1:1 at the last layer; class dog (1) draws nothing from the watermark. ``deep``: features.0:0 is
    named "watermark" too."""
    other = deviation if other_deviation is None else other_deviation
    edges = {("features.1:0", "logits:0"): {"values": spread(named_mean, deviation), "classes": [0] * N},
             ("features.1:1", "logits:0"): {"values": spread(1 - named_mean, other), "classes": [0] * N},
             ("features.1:1", "logits:1"): {"values": spread(0.5, 0.1), "classes": [1] * N},
             ("features.1:2", "logits:1"): {"values": spread(0.5, 0.1), "classes": [1] * N},
             ("features.0:0", "features.1:0"): {"values": spread(0.3, 0.1), "classes": [0] * N},
             ("features.0:1", "features.1:0"): {"values": spread(0.1, 0.1), "classes": [0] * N},
             ("features.0:1", "features.1:1"): {"values": spread(0.2, 0.1), "classes": [0] * N}}
    graph = make_graph(edges, LAYERS, 3, ["cat", "dog"])
    labels = {"features.1:0": "watermark", "features.1:2": "fur", **({"features.0:0": "watermark"} if deep else {})}
    return name_nodes(graph, labels, unmatched=["grass"])


def forbid(max_share: float, classes="all", **extra) -> dict:
    return {"forbidden_concepts": [{"concept": "watermark", "classes": classes, "max_share": max_share, **extra}]}


def test_the_share_and_its_standard_error_are_the_analytic_ones():
    graph = cue_graph(0.4, 0.2, other_deviation=0.3)
    share, error = named_share(graph, "cat", "watermark")
    # last layer: w = 1 (the class), A = 0.4, D = 1; dS/dm = (D - A)/D² = 0.6 for the named edge, -A/D² = -0.4
    assert share == pytest.approx(0.4)
    assert error == pytest.approx(math.hypot(0.6 * 0.2 / math.sqrt(N), 0.4 * 0.3 / math.sqrt(N)))
    assert named_share(graph, "dog", "watermark") == (0.0, 0.0)  # no class-dog edge from the watermark
    # features.0: relevance of features.1:0 and :1 is 0.4 and 0.6; watermark carries 0.3/0.4 of the first, 0 of
    # the second: 0.4 · 0.75 = 0.3, below the last layer's 0.4, so the largest share is the last layer's
    from gigaudit.policy import named_shares

    shares = named_shares(ConceptGraph(graph), "cat", "watermark")
    assert shares["features.0"][0] == pytest.approx(0.4 * 0.3 / 0.4)
    assert set(shares) == {"features.0", "features.1"}


def test_the_standard_error_matches_the_spread_of_resampled_audits():
    """The delta-method error equals the standard deviation of the share over many audits of new images."""
    rng = random.Random(0)
    means, deviations, n = (0.3, 0.7), (0.25, 0.35), 40
    shares = []
    for _ in range(400):
        values = [[rng.gauss(m, d) for _ in range(n)] for m, d in zip(means, deviations)]
        edges = {(f"features.1:{k}", "logits:0"): {"values": v, "classes": [0] * n} for k, v in enumerate(values)}
        graph = name_nodes(make_graph(edges, LAYERS, 2, ["cat"]), {"features.1:0": "watermark"})
        shares.append(named_share(graph, "cat", "watermark")[0])
    edges = {(f"features.1:{k}", "logits:0"): {"values": spread(m, d, n), "classes": [0] * n}
             for k, (m, d) in enumerate(zip(means, deviations))}
    _, predicted = named_share(name_nodes(make_graph(edges, LAYERS, 2, ["cat"]), {"features.1:0": "watermark"}),
                               "cat", "watermark")
    mean = sum(shares) / len(shares)
    observed = math.sqrt(sum((s - mean) ** 2 for s in shares) / (len(shares) - 1))
    assert observed == pytest.approx(predicted, rel=0.15)


def test_a_share_just_above_the_threshold_passes_within_its_uncertainty_and_fails_beyond_it():
    noisy = evaluate_policy(forbid(0.2, ["cat"]), cue_graph(0.22, 0.4, deep=False))  # SE ≈ 0.08
    check = noisy.checks[0]
    assert noisy.passed and check.value == pytest.approx(0.22) and check.uncertainty > 0.02
    assert check.name == "forbidden_concept[watermark, cat]"
    assert "share 0.22 ± 0.08 > 0.20 at features.1, within its uncertainty" in check.detail
    precise = evaluate_policy(forbid(0.2, ["cat"]), cue_graph(0.22, 0.04, deep=False))  # same share, SE ≈ 0.008
    check = precise.checks[0]
    assert not precise.passed and check.uncertainty < 0.02
    assert check.detail == "share 0.22 ± 0.01 > 0.20 at features.1"
    assert evaluate_policy(forbid(0.3, ["cat"]), cue_graph(0.22, 0.04, deep=False)).passed
    # the deciding layer is the one with the largest share less its error (here features.0's 0.165 ± 0.011)
    deep = evaluate_policy(forbid(0.2, ["cat"]), cue_graph(0.22, 0.4)).checks[0]
    assert deep.passed and deep.detail.endswith("± 0.01 ≤ 0.20 at features.0")
    assert deep.value == pytest.approx(0.22 * 0.3 / 0.4)


def test_forbidden_concepts_check_every_class_by_default():
    result = evaluate_policy(forbid(0.2), cue_graph(0.41, 0.05))
    by_name = {c.name: c for c in result.checks}
    assert set(by_name) == {"forbidden_concept[watermark, cat]", "forbidden_concept[watermark, dog]"}
    assert not by_name["forbidden_concept[watermark, cat]"].passed
    assert by_name["forbidden_concept[watermark, cat]"].detail.startswith("share 0.41 ± 0.01 > 0.20")
    dog = by_name["forbidden_concept[watermark, dog]"]
    assert dog.passed and dog.value == 0
    assert not result.passed and result.to_dict()["checks"][0]["uncertainty"] is not None


def test_required_concepts():
    graph = cue_graph(0.4, 0.05)
    # class dog draws half its last-layer relevance from features.1:2 ("fur")
    passed = evaluate_policy({"required_concepts": [{"concept": "fur", "classes": ["dog"], "min_share": 0.45}]}, graph)
    assert passed.passed and passed.checks[0].value == pytest.approx(0.5)
    failed = evaluate_policy({"required_concepts": [{"concept": "fur", "classes": [0], "min_share": 0.1}]}, graph)
    assert not failed.passed and "share 0.00 ± 0.00 < 0.10" in failed.checks[0].detail
    within = evaluate_policy({"required_concepts": [{"concept": "watermark", "classes": ["cat"],
                                                     "min_share": 0.42}]}, cue_graph(0.4, 0.4))
    assert within.passed and "within its uncertainty" in within.checks[0].detail


def test_names_kept_only_in_the_evidence_give_the_same_checks():
    graph = cue_graph(0.41, 0.05)
    bare = cue_graph(0.41, 0.05)
    for node in bare["nodes"]:
        node.pop("label", None)
        node.pop("label_score", None)
    assert evaluate_policy(forbid(0.2), bare).to_dict() == evaluate_policy(forbid(0.2), graph).to_dict()


def test_an_unmatched_probe_is_reported_never_silently_and_fails_a_required_concept():
    policy = {"forbidden_concepts": [{"concept": "grass", "max_share": 0.2}]}
    result = evaluate_policy(policy, cue_graph(0.4, 0.05))
    assert result.passed and len(result.checks) == 1  # nothing the model uses matches the forbidden probe
    assert result.checks[0].detail.startswith("unmatched: probe 'grass' named no concept of the audit")
    assert "passes" in result.checks[0].detail
    policy["forbidden_concepts"][0]["allow_unmatched"] = False
    strict = evaluate_policy(policy, cue_graph(0.4, 0.05))
    assert not strict.passed and "unmatched" in strict.checks[0].detail
    required = evaluate_policy({"required_concepts": [{"concept": "grass", "min_share": 0.1}]}, cue_graph(0.4, 0.05))
    assert not required.passed and required.checks[0].detail.startswith("unmatched")


@pytest.mark.parametrize("policy, message", [
    (forbid(0.2, ["cat", "cow"]), r"unknown class 'cow'; valid classes: 0 \(cat\), 1 \(dog\)"),
    (forbid(0.2, [7]), "unknown class 7"),
    ({"forbidden_concepts": [{"concept": "logo", "max_share": 0.2}]},
     "forbidden_concept 'logo': no node of the graph carries this name and the audit had no such probe; named "
     "concepts: fur, watermark; probes: fur, grass, watermark"),
    ({"required_concepts": [{"concept": "logo", "min_share": 0.2}]}, "required_concept 'logo'"),
])
def test_unknown_classes_and_concepts_are_refused(policy, message):
    with pytest.raises(ValueError, match=message):
        evaluate_policy(policy, cue_graph(0.4, 0.05))


def test_a_graph_without_names_refuses_named_policies():
    graph = make_graph({("features.1:0", "logits:0"): {"values": [1.0], "classes": [0]}}, LAYERS, 2, ["cat"])
    with pytest.raises(ValueError, match="named concepts: none; probes: none"):
        evaluate_policy(forbid(0.2), graph)


@pytest.mark.parametrize("data, message", [
    ({"forbidden_concepts": [{"concept": "x"}]}, "forbidden_concepts.0.max_share: Field required"),
    ({"forbidden_concepts": [{"concept": "x", "max_share": 1.5}]}, "max_share: Input should be less"),
    ({"required_concepts": [{"concept": "", "min_share": 0.1}]}, "concept: String should have at least 1"),
    ({"required_concepts": [{"concept": "x", "min_share": 0.1, "clases": "all"}]}, "clases: Extra inputs"),
    ({"forbidden_concepts": [{"concept": "x", "max_share": 0.1, "classes": "some"}]}, "classes"),
])
def test_bad_named_policies_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        load_policy(data)
