"""gig.quadrature: the rules integrate what they should, match Captum's nodes, the rule for scale-invariant
segments is chosen where it belongs, and bad input is refused."""
import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import fx, nn
from torch.nn import functional as F

from gig.quadrature import DEFAULT, LOG_FLOOR, RULES, choose_rule, default_steps, is_scale_invariant, quadrature, \
    register


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


# ---------------------------------------------------------------------------------------------- loglegendre
def _transition(scale):
    """``G(α) = s / √(1 + s²)`` with ``s = α / scale`` (how a LayerNorm of ``α · x`` turns on) and ``G'``."""
    def g(alpha):
        s = alpha / scale
        return s / np.sqrt(1 + s * s)

    def derivative(alpha):
        s = alpha / scale
        return (1 + s * s) ** -1.5 / scale

    return g, derivative


@pytest.mark.parametrize("scale", [1e-7, 1e-5, 1e-3])
def test_log_legendre_integrates_a_change_near_zero_that_gauss_legendre_misses(scale):
    g, derivative = _transition(scale)
    exact = g(1.0) - g(0.0)

    def error(method, steps):
        alphas, weights = (t.numpy() for t in quadrature(method, steps))
        return abs(float((weights * derivative(alphas)).sum()) - exact) / exact

    assert error("loglegendre", 32) < 3e-3  # measured 3e-4 .. 1.6e-3
    assert error("loglegendre", 64) < 1e-5  # spectral: doubling the steps gains orders of magnitude
    assert error("gausslegendre", 32) > 0.1


def test_log_legendre_is_exact_for_constants_and_grades_its_nodes_towards_zero():
    alphas, weights = quadrature("loglegendre", 32)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
    assert float(alphas[0]) == pytest.approx(LOG_FLOOR / 2) and float(weights[0]) == pytest.approx(LOG_FLOOR)
    log_alphas = torch.log10(alphas[1:])
    for decade in range(-9, 0):  # every decade from 1e-9 to 1 holds at least two nodes
        assert int(((log_alphas >= decade) & (log_alphas < decade + 1)).sum()) >= 2
    gl_alphas, _ = quadrature("gausslegendre", 32)
    assert float(gl_alphas.min()) > 1e-3


class _Block(nn.Module):
    def __init__(self, norm: str):
        super().__init__()
        self.linear, self.norm = nn.Linear(4, 4), norm
        self.layer_norm, self.group_norm = nn.LayerNorm(4), nn.GroupNorm(2, 4)

    def forward(self, x):
        x = self.linear(x)
        if self.norm == "module":
            return self.layer_norm(x)
        if self.norm == "group":
            return self.group_norm(x.unsqueeze(-1)).squeeze(-1)
        if self.norm == "function":
            return F.layer_norm(x, (4,))
        if self.norm == "normalize":
            return F.normalize(x, dim=-1)
        return torch.relu(x)


@pytest.mark.parametrize("norm, invariant", [("module", True), ("group", True), ("function", True),
                                             ("normalize", True), ("none", False)])
def test_auto_picks_loglegendre_exactly_where_a_normalisation_is(norm, invariant):
    segment = fx.symbolic_trace(_Block(norm))
    assert is_scale_invariant(segment) is invariant
    assert choose_rule(DEFAULT, segment) == ("loglegendre" if invariant else "gausslegendre")
    assert choose_rule("riemann_left", segment) == "riemann_left"


def test_default_steps_per_rule():
    assert default_steps("gausslegendre") == 16 and default_steps("loglegendre") == 32
    assert default_steps("riemann_middle") == 16


def test_auto_and_bad_loglegendre_input_raise_value_errors():
    with pytest.raises(ValueError, match="resolve it with choose_rule"):
        quadrature("auto", 8)
    with pytest.raises(ValueError, match="loglegendre needs at least 2 steps"):
        quadrature("loglegendre", 1)
    with pytest.raises(ValueError, match="needs a torch.fx GraphModule segment, not Linear"):
        choose_rule("auto", nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"unknown quadrature method 'simpson'.*loglegendre or 'auto'"):
        choose_rule("simpson", fx.symbolic_trace(_Block("none")))
