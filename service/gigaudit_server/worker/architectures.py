"""The server-side registry of model architectures, by name.

Every torchvision classification builder (``resnet50``, ``vit_b_16``, …) plus the project's own ``partsnet``
(:class:`gig.synthetic.PartsNet`). Models are built with random weights and never download anything: users
upload their weights as safetensors (:mod:`gigaudit_server.worker.models`).
"""
from __future__ import annotations

import re
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
    """PartsNet, the project's demo CNN (four conv blocks, global average pooling, a linear head) for the planted
    parts images of ``gig.synthetic``."""
    from gig.synthetic import PartsNet

    return PartsNet(num_classes)


def list_architectures() -> list[str]:
    """Every architecture name the server can build, sorted."""
    return sorted([*torchvision.models.list_models(module=torchvision.models), *OWN_ARCHITECTURES])


def describe_architecture(name: str) -> str:
    """One line about ``name``: the first sentence of its builder's docstring, reStructuredText links as plain
    titles (``ResNet-18 from Deep Residual Learning for Image Recognition.``); ``""`` when it has none."""
    if name in OWN_ARCHITECTURES:
        builder = OWN_ARCHITECTURES[name]
    else:
        try:
            builder = torchvision.models.get_model_builder(name)
        except ValueError:
            raise ValueError(f"unknown architecture {name!r}; valid architectures are: "
                             f"{', '.join(list_architectures())}") from None
    text = " ".join((builder.__doc__ or "").strip().split("\n\n")[0].split())
    return re.sub(r"`([^`<]+?)\s*<[^>]*>`_{1,2}", r"\1", text).replace("``", "")


def architecture_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` of every architecture the server can build."""
    return {name: describe_architecture(name) for name in list_architectures()}


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
