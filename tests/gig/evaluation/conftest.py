"""Tiny real models for the evaluation tests."""
import pytest
import torch
from torch import nn

from gig.concepts import ConceptSet


class LinearNet(nn.Module):
    """Two 1×1 convolutions (with biases) and a linear head on the mean: every segment is affine."""

    def __init__(self, channels=(3, 4, 5), n_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels[0], channels[1], 1), nn.Conv2d(channels[1], channels[2], 1))
        self.head = nn.Linear(channels[2], n_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def linear_net():
    torch.manual_seed(0)
    return LinearNet().double().eval()


@pytest.fixture
def linear_concepts():
    """Eight random concepts per layer of :class:`LinearNet`, least squares (exact reconstruction)."""
    generator = torch.Generator().manual_seed(1)
    return ConceptSet.from_vectors({
        "features.0": torch.randn(8, 4, generator=generator, dtype=torch.float64),
        "features.1": torch.randn(8, 5, generator=generator, dtype=torch.float64),
    })
