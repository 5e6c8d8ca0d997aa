"""The server-side registry of model architectures, by name.

Every torchvision classification builder (``resnet50``, ``vit_b_16``, …) plus the project's own ``partsnet``
(:class:`gig.synthetic.PartsNet`). Models are built with random weights and never download anything: users
upload their weights as safetensors (:mod:`gigaudit_server.worker.models`).
"""
from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

OWN_ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {}


def _own(name: str):
    def register(builder: Callable[[int], nn.Module]):
        OWN_ARCHITECTURES[name] = builder
        return builder

    return register


@_own("partsnet")
def _partsnet(num_classes: int) -> nn.Module:
    from gig.synthetic import PartsNet

    return PartsNet(num_classes)


def list_architectures() -> list[str]:
    """Every architecture name the server can build, sorted."""
    return sorted([*torchvision.models.list_models(module=torchvision.models), *OWN_ARCHITECTURES])


def build_architecture(name: str, num_classes: int) -> nn.Module:
    """A randomly initialised ``name`` with ``num_classes`` outputs, in eval mode.

    ``ValueError`` for an unknown name (listing the valid ones) or a bad class count.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, not {num_classes!r}")
    if name in OWN_ARCHITECTURES:
        model = OWN_ARCHITECTURES[name](num_classes)
    elif name in torchvision.models.list_models(module=torchvision.models):
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    else:
        raise ValueError(f"unknown architecture {name!r}; valid architectures are: {', '.join(list_architectures())}")
    return model.eval()
