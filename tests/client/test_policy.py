import copy

import pytest
from graph_factory import full_evidence, make_graph

from gigaudit.policy import evaluate_policy, load_policy


def test_load_policy_from_yaml(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("name: release\nevidence:\n  max_completeness_delta: 0.05\nconcentration:\n  max_share: 0.6\n")
    policy = load_policy(path)
    assert policy.name == "release" and policy.evidence.max_completeness_delta == 0.05
    assert policy.concentration.max_share == 0.6 and policy.drift is None


@pytest.mark.parametrize("data, message", [
    ({"evidence": {"max_completness_delta": 0.1}}, "evidence.max_completness_delta: Extra inputs"),
    ({"evidence": {"min_spliced_agreement": 1.5}}, "evidence.min_spliced_agreement: Input should be less"),
    ({"concentration": {}}, "concentration.max_share: Field required"),
    ({"drift": {"match": "hungarian"}}, "drift.match: Input should be 'auto', 'exemplars' or 'cosine'"),
    ({"evidnce": {}}, "evidnce: Extra inputs"),
])
def test_bad_policies_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        load_policy(data)


def test_bad_policy_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("evidence: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_policy(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="mapping of sections"):
        load_policy(tmp_path / "list.yaml")


def test_evidence_thresholds(graph):
    result = evaluate_policy({"evidence": {"max_completeness_delta": 0.005, "max_reconstruction_error": 0.25,
                                           "min_spliced_agreement": 0.95}}, graph)
    by_name = {c.name: c for c in result.checks}
    assert by_name["completeness[features.0->features.1]"].passed  # 0.004
    assert not by_name["completeness[features.1->logits]"].passed  # 0.01
    assert by_name["reconstruction_error[features.0]"].passed and not by_name["reconstruction_error[features.1]"].passed
    assert by_name["spliced_agreement[features.0]"].passed and not by_name["spliced_agreement[features.1]"].passed
    assert not result.passed and len(result.failures) == 3
    strict_max = evaluate_policy({"evidence": {"max_completeness_delta": 0.015,
                                               "completeness_statistic": "delta_max"}}, graph)
    assert [c.value for c in strict_max.checks] == [0.02, 0.05] and not strict_max.passed


def test_baselines_must_be_beaten(graph):
    assert evaluate_policy({"evidence": {"beats_baselines": True}}, graph).passed
    worse = copy.deepcopy(graph)
    gig = worse["evidence"]["deletion_insertion"]["features.0->features.1"]["orders"]["gig"]
    gig["deletion_auc"] = 0.45  # between abs_coefficient (0.41) and random (0.5)
    result = evaluate_policy({"evidence": {"beats_baselines": True}}, worse)
    failed = result.failures
    assert [c.name for c in failed] == ["deletion_insertion: deletion[features.0->features.1]"]
    assert failed[0].value == pytest.approx(0.45) and "abs_coefficient" in failed[0].detail
    margin = evaluate_policy({"evidence": {"beats_baselines": True, "auc_margin": 0.3}}, graph)
    assert not margin.passed and len(margin.failures) == 4  # every AUC beats its best baseline by less than 0.3


def test_missing_evidence_fails_unless_skipped(graph):
    bare = {**graph, "evidence": {}}
    result = evaluate_policy({"evidence": {"max_completeness_delta": 0.1, "beats_baselines": True}}, bare)
    assert not result.passed and all("no " in c.detail for c in result.checks)
    assert evaluate_policy({"evidence": {"max_completeness_delta": 0.1, "on_missing": "skip"}}, bare).checks == []


def concentrated_graph(top_value: float) -> dict:
    """Class 0 takes `top_value` from a:0 and 1.0 from a:1; class 1 is balanced."""
    edges = {("a:0", "logits:0"): {"values": [top_value], "classes": [0]},
             ("a:1", "logits:0"): {"values": [1.0], "classes": [0]},
             ("a:0", "logits:1"): {"values": [1.0], "classes": [1]},
             ("a:1", "logits:1"): {"values": [1.0], "classes": [1]}}
    return make_graph(edges, ["a"], 2, ["cat", "dog"], evidence=full_evidence())


def test_concentration_of_class_relevance():
    result = evaluate_policy({"concentration": {"max_share": 0.7}}, concentrated_graph(9.0))
    by_name = {c.name: c for c in result.checks}
    assert by_name["concentration[cat]"].value == pytest.approx(0.9) and not by_name["concentration[cat]"].passed
    assert "a:0" in by_name["concentration[cat]"].detail
    assert by_name["concentration[dog]"].value == pytest.approx(0.5) and by_name["concentration[dog]"].passed
    assert evaluate_policy({"concentration": {"max_share": 0.7}}, concentrated_graph(2.0)).passed


def test_drift_needs_a_reference_and_gates_on_change(graph):
    policy = {"drift": {"max_mean_edge_change": 0.1, "min_matched_fraction": 0.9, "min_circuit_overlap": 0.9}}
    missing = evaluate_policy(policy, graph)
    assert not missing.passed and "no reference" in missing.checks[0].detail
    same = evaluate_policy(policy, graph, reference=copy.deepcopy(graph))
    assert same.passed and same.drift["summary"]["mean_edge_change"] == 0.0
    flipped = copy.deepcopy(graph)
    for e in flipped["edges"]:
        e["share"] = -e["share"]
    changed = evaluate_policy(policy, flipped, reference=graph)
    assert [c.name for c in changed.failures] == ["drift.mean_edge_change"]
    assert changed.failures[0].value == pytest.approx(1.0)


def test_result_is_json_ready(graph):
    import json
    result = evaluate_policy({"concentration": {"max_share": 1.0}}, graph)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["passed"] is True and len(data["checks"]) == 3
