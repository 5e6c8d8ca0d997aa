"""The randomised copy behind the weight-randomisation sanity check."""
import pytest
import torch
from torch import nn

from gig.evaluation.sanity import randomized_copy
from models import tiny_cnn


def test_randomized_copy_changes_every_layer_and_leaves_the_model_alone():
    model = tiny_cnn("relu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clone = randomized_copy(model, seed=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    for name, parameter in clone.named_parameters():
        if parameter.dim() > 1:  # weights are redrawn (biases of a BatchNorm reset to constants may coincide)
            assert not torch.allclose(parameter, dict(model.named_parameters())[name]), name
    assert torch.equal(clone.block1[1].running_var, torch.ones(8))
    again = randomized_copy(model, seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in clone.state_dict().items())
    x = torch.rand(2, 3, 8, 8)
    assert not torch.allclose(clone(x), model(x))


def test_a_model_without_resettable_modules_is_a_value_error():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.weight

    with pytest.raises(ValueError, match="reset_parameters"):
        randomized_copy(Scale())
