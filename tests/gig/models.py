"""Tiny test networks for the gig tests (real torch modules; seconds to run on a CPU).

``TinyCNN`` has the analysed layers ``block1``, ``block2``, ``block3`` (all cuts) and ends in ``head``; with
``act="relu"`` it is piecewise linear, with ``"gelu"`` or ``"softplus"`` smooth, so quadrature converges fast.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "softplus": nn.Softplus}


class TinyCNN(nn.Module):
    def __init__(self, act: str = "gelu", width: int = 8, n_classes: int = 5):
        super().__init__()
        make = ACTIVATIONS[act]
        self.block1 = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), make())
        self.block2 = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), make())
        self.block3 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), make())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, n_classes))

    def forward(self, x):
        return self.head(self.block3(self.block2(self.block1(x))))


def tiny_cnn(act: str = "gelu", seed: int = 0, **kwargs) -> TinyCNN:
    """A seeded ``TinyCNN`` in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = TinyCNN(act, **kwargs)
    norm = model.block1[1]
    norm.running_mean.uniform_(-0.2, 0.2)
    norm.running_var.uniform_(0.5, 1.5)
    return model.eval()


def small_vit(n_classes: int = 5) -> nn.Module:
    """A 3-layer torchvision ViT on 32×32 images (16 tokens + class token, width 16), with a random head
    (torchvision initialises it to zero, which would make every logit constant)."""
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=n_classes
    )
    nn.init.normal_(model.heads.head.weight, std=0.2)
    return model


def has_hooks(model: nn.Module) -> bool:
    """True when any module of ``model`` carries a forward, forward-pre or backward hook."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in model.modules())
