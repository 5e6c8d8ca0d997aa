"""PFV sampling: weights by mode, weighted draws without replacement, fallbacks, determinism."""
import pytest
import torch

from gig.concepts.sampling import position_weights, sample_positions


def test_contribution_weights_are_clamped_inner_products():
    pfvs = torch.tensor([[[1.0, 2.0], [1.0, -1.0], [0.0, 0.0]]])
    grads = torch.tensor([[[1.0, 1.0], [1.0, 2.0], [5.0, 5.0]]])
    assert position_weights("contribution", pfvs, grads).tolist() == [[3.0, 0.0, 0.0]]
    assert position_weights("uniform", pfvs).tolist() == [[1.0, 1.0, 1.0]]
    torch.testing.assert_close(position_weights("norm", pfvs), pfvs.norm(dim=-1))


def test_only_positive_positions_are_drawn_first():
    weights = torch.zeros(50, 9)
    weights[torch.arange(50), torch.arange(50) % 9] = 0.3  # one contributing position per image
    picked = sample_positions(weights, 1, torch.Generator().manual_seed(0))
    assert picked[:, 0].tolist() == (torch.arange(50) % 9).tolist()
    two = sample_positions(weights, 2, torch.Generator().manual_seed(0))
    assert two[:, 0].tolist() == (torch.arange(50) % 9).tolist()
    assert (two[:, 1] != two[:, 0]).all()  # distinct positions; the second from the zero-weight rest


def test_zero_rows_fall_back_to_uniform_and_draws_follow_weights():
    g = torch.Generator().manual_seed(1)
    zero = sample_positions(torch.zeros(4000, 4), 1, g)
    counts = torch.bincount(zero[:, 0], minlength=4).float() / 4000
    assert (counts - 0.25).abs().max() < 0.03
    weighted = sample_positions(torch.tensor([[1.0, 3.0]]).expand(4000, 2), 1, g)
    assert abs(weighted.float().mean().item() - 0.75) < 0.03


def test_deterministic_for_a_seed():
    w = torch.rand(20, 30)
    a = sample_positions(w, 3, torch.Generator().manual_seed(7))
    b = sample_positions(w, 3, torch.Generator().manual_seed(7))
    c = sample_positions(w, 3, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert all(len(set(row)) == 3 for row in a.tolist())


@pytest.mark.parametrize("call", [
    lambda: sample_positions(torch.ones(2, 3), 4),
    lambda: sample_positions(torch.ones(2, 3), 0),
    lambda: position_weights("random", torch.ones(1, 2, 3)),
    lambda: position_weights("contribution", torch.ones(1, 2, 3)),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call()
