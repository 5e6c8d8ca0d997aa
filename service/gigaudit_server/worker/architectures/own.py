"""Family ``gigaudit``: the project's own architectures (``partsnet``, :class:`gig.synthetic.PartsNet`)."""
from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from torch import nn

from gigaudit_server.worker.architectures.options import no_options

FAMILY = "gigaudit"
WEIGHTS_FORMAT = "safetensors"
_BUILDERS: dict[str, Callable[[int], nn.Module]] = {}


def _own(name: str):
    def register(builder: Callable[[int], nn.Module]):
        _BUILDERS[name] = builder
        return builder

    return register


@_own("partsnet")
def _partsnet(num_classes: int) -> nn.Module:
    """PartsNet, the project's demo CNN (four conv blocks, global average pooling, a linear head) for the planted
    parts images of ``gig.synthetic``."""
    from gig.synthetic import PartsNet

    return PartsNet(num_classes)


def names() -> list[str]:
    return sorted(_BUILDERS)


def source(name: str) -> str:
    try:
        return f"gigaudit {importlib.metadata.version('gigaudit')}"
    except importlib.metadata.PackageNotFoundError:
        return "gigaudit"


def describe(name: str) -> str:
    return " ".join((_BUILDERS[name].__doc__ or "").split())


def build(name: str, num_classes: int, options: dict) -> nn.Module:
    no_options(FAMILY, options)
    return _BUILDERS[name](num_classes)
