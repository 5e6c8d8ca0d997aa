"""C-μFidelity: exactly 1 on affine segments, lower on a ReLU network, and undefined rows are left out."""
import pytest
import torch

from gig.concepts import ConceptSet
from gig.evaluation.fidelity import mu_fidelity
from gig.evaluation.pairs import analyse, pair_problem
from models import tiny_cnn


def _images(n=4, size=6, dtype=torch.float64):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize("target", ["features.1", "logits"])
def test_mu_fidelity_is_one_on_an_affine_segment(linear_net, linear_concepts, target):
    batch = analyse(linear_net, linear_concepts, _images(), ["features.0", "features.1"])
    report = mu_fidelity(pair_problem(linear_net, batch, "features.0", target, steps=2), n_subsets=16)
    assert report["n_rows"] == 4
    assert report["mu_fidelity"] == pytest.approx(1.0, abs=1e-9)


def test_mu_fidelity_is_below_one_on_a_relu_network():
    model = tiny_cnn("relu").double()
    generator = torch.Generator().manual_seed(0)
    concepts = ConceptSet.from_vectors({
        "block2": torch.randn(16, 8, generator=generator, dtype=torch.float64),
        "block3": torch.randn(16, 16, generator=generator, dtype=torch.float64),
    })
    batch = analyse(model, concepts, _images(size=8), ["block2", "block3"])
    report = mu_fidelity(pair_problem(model, batch, "block2", "block3", steps=16), n_subsets=16, fraction=0.3)
    assert report["n_rows"] > 0
    assert -1 <= report["mu_fidelity"] < 0.999


def test_bad_settings_are_value_errors(linear_net, linear_concepts):
    problem = pair_problem(linear_net, analyse(linear_net, linear_concepts, _images(), ["features.0", "features.1"]),
                           "features.0", "features.1")
    with pytest.raises(ValueError, match="n_subsets"):
        mu_fidelity(problem, n_subsets=1)
    with pytest.raises(ValueError, match="fraction"):
        mu_fidelity(problem, fraction=1.5)
