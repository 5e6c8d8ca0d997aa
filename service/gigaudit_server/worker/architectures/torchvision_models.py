"""Family ``torchvision``: every torchvision classification builder by its bare name (``resnet50``, ``vit_b_16``)."""
from __future__ import annotations

import re

import torchvision
from torch import nn

from gigaudit_server.worker.architectures.options import no_options

FAMILY = "torchvision"
WEIGHTS_FORMAT = "safetensors"


def names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def source(name: str) -> str:
    return f"torchvision {torchvision.__version__.split('+')[0]}"


def describe(name: str) -> str:
    """The first sentence of the builder's docstring, reStructuredText links as plain titles."""
    builder = torchvision.models.get_model_builder(name)
    text = " ".join((builder.__doc__ or "").strip().split("\n\n")[0].split())
    return re.sub(r"`([^`<]+?)\s*<[^>]*>`_{1,2}", r"\1", text).replace("``", "")


def build(name: str, num_classes: int, options: dict) -> nn.Module:
    no_options(FAMILY, options)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
