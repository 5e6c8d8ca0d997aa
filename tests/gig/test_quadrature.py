"""gig.quadrature: the rules integrate what they should, match Captum's nodes, and refuse bad input."""
import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from gig.quadrature import RULES, quadrature, register


@pytest.mark.parametrize("method", RULES)
@pytest.mark.parametrize("steps", [2, 7, 16])
def test_weights_sum_to_one_and_nodes_lie_in_the_unit_interval(method, steps):
    alphas, weights = quadrature(method, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert alphas.dtype == torch.float64
    assert torch.isclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)
    assert (alphas >= 0).all() and (alphas <= 1).all() and (weights > 0).all()


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1(steps):
    alphas, weights = quadrature("gausslegendre", steps)
    for degree in range(2 * steps):
        assert float((weights * alphas**degree).sum()) == pytest.approx(1 / (degree + 1), abs=1e-12)
    if steps <= 3:  # and no more: degree 2n is not exact
        assert float((weights * alphas ** (2 * steps)).sum()) != pytest.approx(1 / (2 * steps + 1), abs=1e-6)


@pytest.mark.parametrize("method, order", [("riemann_left", 1), ("riemann_right", 1), ("riemann_middle", 2),
                                           ("riemann_trapezoid", 2)])
def test_riemann_rules_converge_at_their_order(method, order):
    def error(n):
        alphas, weights = quadrature(method, n)
        return abs(float((weights * torch.exp(alphas)).sum()) - (np.e - 1))

    assert error(64) < error(16) / (4**order) * 1.2  # quadrupling the steps divides the error by 4^order


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_nodes_and_weights_match_captum(method):
    step_sizes, alphas = approximation_parameters(method)
    ours_alphas, ours_weights = quadrature(method, 10)
    assert np.allclose(ours_alphas.numpy(), alphas(10), atol=1e-7)
    assert np.allclose(ours_weights.numpy(), step_sizes(10), atol=1e-7)


def test_dtype_and_device_are_honoured():
    alphas, weights = quadrature("riemann_middle", 4, dtype=torch.float32, device="cpu")
    assert alphas.dtype == weights.dtype == torch.float32


def test_bad_method_and_steps_raise_value_errors():
    with pytest.raises(ValueError, match=r"unknown quadrature method 'simpson'.*gausslegendre.*riemann_trapezoid"):
        quadrature("simpson", 8)
    for steps in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            quadrature("gausslegendre", steps)
    with pytest.raises(ValueError, match="at least 2 steps"):
        quadrature("riemann_trapezoid", 1)


def test_registered_rules_are_found_by_name():
    @register("test_midpoint_once")
    def _one_point(n):
        return np.full(1, 0.5), np.ones(1)

    try:
        alphas, weights = quadrature("test_midpoint_once", 3)
        assert alphas.tolist() == [0.5] and weights.tolist() == [1.0]
    finally:
        del RULES["test_midpoint_once"]
