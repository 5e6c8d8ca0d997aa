"""An example gigaudit architecture plugin: ``tiny_cnn``, a small CNN for 32-64 px images."""
from __future__ import annotations

from torch import nn


class TinyCNN(nn.Module):
    """Three conv blocks (conv, batch norm, ReLU; the last two halve the resolution), global average pooling and a
    linear classifier."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width),
                                    nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
                                    nn.BatchNorm2d(4 * width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


def tiny_cnn(num_classes: int, width: int = 16) -> nn.Module:
    """The builder gigaudit calls: ``architecture_options`` arrive as keyword arguments (here ``width``)."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, not {width!r}")
    return TinyCNN(num_classes, width)
