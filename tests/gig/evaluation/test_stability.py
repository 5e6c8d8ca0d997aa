"""Concept matching across seeds and graph comparison."""
import pytest
import torch

from gig.concepts import ConceptSet
from gig.evaluation.stability import compare_graphs, concept_stability, match_concepts


def test_a_set_matched_with_itself_in_any_order_is_perfectly_stable():
    vectors = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    permuted = vectors[torch.randperm(10, generator=torch.Generator().manual_seed(1))] * 3.0  # scale is ignored
    assert match_concepts(vectors, permuted) == {"mean_cosine": pytest.approx(1.0), "min_cosine": pytest.approx(1.0),
                                                 "matched": 10}
    concepts = ConceptSet.from_vectors({"a": vectors})
    assert concept_stability(concepts, concepts)["a"]["mean_cosine"] == pytest.approx(1.0)


def test_unrelated_sets_match_poorly_and_the_hungarian_beats_greedy_pairs():
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(16, 32, generator=generator), torch.randn(16, 32, generator=generator)
    assert match_concepts(a, b)["mean_cosine"] < 0.6
    # One-to-one: two copies of the same row cannot both match it.
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    report = match_concepts(x, y)
    assert report["matched"] == 2 and report["min_cosine"] < 0.2


def _graph(weights):
    return {"edges": [{"source": s, "target": t, "mean": w} for (s, t), w in weights.items()]}


def test_graph_comparison_sees_order_and_overlap():
    a = {("l:0", "m:0"): 3.0, ("l:1", "m:0"): -2.0, ("l:2", "m:1"): 1.0, ("l:3", "m:1"): 0.5}
    same = compare_graphs(_graph(a), _graph({e: 2 * w for e, w in a.items()}), top_k=2)
    assert same == {"top_k_overlap": 1.0, "rank_correlation": pytest.approx(1.0), "top_k": 2, "n_edges": 4}
    reversed_ = {e: w for e, w in zip(a, [0.5, 1.0, -2.0, 3.0])}
    other = compare_graphs(_graph(a), _graph(reversed_), top_k=2)
    assert other["top_k_overlap"] == 0.0 and other["rank_correlation"] < 0


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="channels"):
        match_concepts(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="top_k"):
        compare_graphs(_graph({("a", "b"): 1.0}), _graph({("a", "b"): 1.0}), top_k=0)
    with pytest.raises(ValueError, match="share no layer"):
        concept_stability(ConceptSet.from_vectors({"a": torch.eye(2)}), ConceptSet.from_vectors({"b": torch.eye(2)}))
