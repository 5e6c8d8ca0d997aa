"""Deletion / insertion curves and orderings: analytic answers on affine segments, and real ReLU models."""
import pytest
import torch

from gig.evaluation.deletion import auc, curves, deletion_insertion
from gig.evaluation.orders import ORDERS, check_orders, ranks
from gig.evaluation.pairs import analyse, pair_problem

LAYERS = ["features.0", "features.1"]


def _problem(model, concepts, size, target="features.1", seed=0):
    images = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return pair_problem(model, analyse(model, concepts, images, LAYERS), "features.0", target, steps=4)


def test_ranks_put_active_concepts_first_by_score():
    scores = torch.tensor([[0.1, 5.0, 3.0, 9.0]])
    active = torch.tensor([[True, True, True, False]])
    assert ranks(scores, active).tolist() == [[2, 0, 1, 3]]


def test_gig_is_the_optimal_deletion_order_on_an_affine_segment(linear_net, linear_concepts):
    # One position per image: the readout equals the GIG target, and GIG is exact and additive, so deleting in
    # GIG order gives the lowest possible curve: 1 − (sorted cumulative GIG) / full value.
    problem = _problem(linear_net, linear_concepts, size=1)
    report = deletion_insertion(problem, n_points=8)
    gig = problem.gig()
    full, _ = problem.full_values()
    sorted_gig = gig.sort(dim=1, descending=True).values  # all 8 concepts are active (least squares)
    assert bool(problem.active.all())
    expected = 1 - torch.cat([torch.zeros(6, 1, dtype=gig.dtype), sorted_gig.cumsum(1)], 1) / full.unsqueeze(1)
    valid = full > 0
    assert report["n_rows"] == int(valid.sum()) > 0
    assert report["orders"]["gig"]["deletion_auc"] == pytest.approx(float(auc(expected[valid]).mean()), abs=1e-9)
    for name in ORDERS:
        if name != "gig":
            assert report["orders"]["gig"]["deletion_auc"] <= report["orders"][name]["deletion_auc"] + 1e-12
            assert report["orders"]["gig"]["insertion_auc"] >= report["orders"][name]["insertion_auc"] - 1e-12
    assert report["gig_beats"]["random"] == {"deletion": True, "insertion": True}


def test_baseline_orders_equal_gig_on_an_affine_segment(linear_net, linear_concepts):
    problem = _problem(linear_net, linear_concepts, size=3)
    gig = problem.gig()
    generator = torch.Generator()
    assert torch.allclose(ORDERS["grad_x_coefficient"](problem, generator), gig, atol=1e-10)
    assert torch.allclose(ORDERS["leave_one_out"](problem, generator), gig, atol=1e-10)
    assert not torch.allclose(ORDERS["abs_coefficient"](problem, generator), gig)


def test_curves_start_and_end_where_they_must(linear_net, linear_concepts):
    problem = _problem(linear_net, linear_concepts, size=3)
    found = curves(problem, ORDERS["random"](problem, torch.Generator().manual_seed(0)), n_points=5)
    valid = found["valid"]
    assert torch.allclose(found["deletion"][valid, 0], torch.ones(int(valid.sum()), dtype=torch.float64))
    assert torch.allclose(found["insertion"][valid, -1], torch.ones(int(valid.sum()), dtype=torch.float64))
    # Everything removed and nothing restored are the same input: X̂ = 0.
    assert torch.allclose(found["deletion"][:, -1], found["insertion"][:, 0])


def test_class_deletion_follows_the_probability_of_the_class(linear_net, linear_concepts):
    problem = _problem(linear_net, linear_concepts, size=3, target="logits")
    report = deletion_insertion(problem, orders=("gig", "random"), n_points=4)
    curve = report["orders"]["gig"]["deletion_curve"]
    assert all(0 <= p <= 1 for p in curve) and len(curve) == 5
    assert report["orders"]["gig"]["deletion_auc"] < report["orders"]["random"]["deletion_auc"]


def test_unknown_orders_and_bad_points_are_value_errors(linear_net, linear_concepts):
    with pytest.raises(ValueError, match="valid orders are: gig, random"):
        check_orders(["gig", "saliency"])
    with pytest.raises(ValueError, match="n_points"):
        curves(_problem(linear_net, linear_concepts, size=1), torch.zeros(6, 8), n_points=0)
