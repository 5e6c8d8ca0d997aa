"""The server-side registry of model architectures, by family.

- ``torchvision``: every torchvision classification builder by its bare name (``resnet50``, ``vit_b_16``, …);
- ``gigaudit``: the project's own ``partsnet`` (:class:`gig.synthetic.PartsNet`);
- ``timm``: ``timm:<name>``, any timm model (``timm.create_model(name, pretrained=False, ...)``);
- ``huggingface``: a transformers image classifier from an uploaded ``config.json`` + ``model.safetensors``;
- ``onnx``: an uploaded ``.onnx`` file, converted with onnx2torch;
- ``plugin``: the ``gigaudit.architectures`` entry points of installed packages.

Models are built with random weights and never download anything: users upload their weights (see each
architecture's ``weights_format``; :mod:`gigaudit_server.worker.models` loads and checks them).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import ModuleType

from torch import nn

from gigaudit_server.worker.architectures import (
    huggingface,
    onnx_models,
    own,
    plugins,
    timm_models,
    torchvision_models,
)
from gigaudit_server.worker.architectures.options import check_options

FAMILIES = ("torchvision", "gigaudit", "timm", "huggingface", "onnx", "plugin")
# families whose model carries its own preprocessing configuration (so input_size may be left out)
OWN_CONFIG_FAMILIES = ("timm", "huggingface", "onnx")
_FIXED: tuple[ModuleType, ...] = (own, torchvision_models, huggingface, onnx_models)


@dataclass(frozen=True)
class Architecture:
    """What ListArchitectures says about one architecture."""
    name: str
    family: str
    source: str  # the package that provides it and its version, e.g. "timm 1.0.31"
    weights_format: str  # "safetensors", "huggingface" or "onnx"
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


def _builtin_names() -> set[str]:
    return {name for module in _FIXED for name in module.names()}


def _plugins() -> dict:
    return plugins.entry_points(_builtin_names())


def family_of(name: str) -> str:
    """The family of architecture ``name``; ``ValueError`` for an unknown name."""
    if name.startswith(timm_models.PREFIX):
        timm_models.check_name(name)
        return timm_models.FAMILY
    for module in _FIXED:
        if name in module.names():
            return module.FAMILY
    if name in _plugins():
        return plugins.FAMILY
    others = sorted([*_builtin_names(), *_plugins()])
    close = difflib.get_close_matches(name, [*others, *timm_models.names()], n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(f"unknown architecture {name!r}; {hint}valid architectures are: {', '.join(others)}, and "
                     f"timm:<name> for any of timm's {len(timm_models.names())} models")


def architecture(name: str) -> Architecture:
    """The :class:`Architecture` of ``name``; ``ValueError`` for an unknown name."""
    family = family_of(name)
    if family == plugins.FAMILY:
        entry = _plugins()[name]
        return Architecture(name, family, plugins.distribution(entry), plugins.WEIGHTS_FORMAT, plugins.describe(entry))
    module = _module(family)
    return Architecture(name, family, module.source(name), module.WEIGHTS_FORMAT, module.describe(name))


def architectures(family: str | None = None) -> list[Architecture]:
    """Every architecture the server can build (or those of one ``family``), sorted by name."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown architecture family {family!r}; valid families are: {', '.join(FAMILIES)}")
    found = []
    for module in (*_FIXED, timm_models):
        if family in (None, module.FAMILY):
            found += [Architecture(n, module.FAMILY, module.source(n), module.WEIGHTS_FORMAT, module.describe(n))
                      for n in module.names()]
    if family in (None, plugins.FAMILY):
        found += [Architecture(n, plugins.FAMILY, plugins.distribution(e), plugins.WEIGHTS_FORMAT, plugins.describe(e))
                  for n, e in _plugins().items()]
    return sorted(found, key=lambda a: a.name)


def list_architectures() -> list[str]:
    """Every architecture name the server can build, sorted."""
    return [a.name for a in architectures()]


def describe_architecture(name: str) -> str:
    """One line about ``name`` (``ResNet-18 from Deep Residual Learning for Image Recognition.``)."""
    return architecture(name).description


def architecture_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` of every architecture the server can build."""
    return {a.name: a.description for a in architectures()}


def architecture_details() -> dict[str, dict]:
    """``{name: {name, family, source, weights_format, description}}``: what workers publish to the catalog."""
    return {a.name: a.to_dict() for a in architectures()}


def build_architecture(name: str, num_classes: int, options: Mapping | None = None) -> nn.Module:
    """A randomly initialised ``name`` with ``num_classes`` outputs, in eval mode; ``options`` are the builder's
    keyword arguments (timm and plugins only).

    ``ValueError`` for an unknown name (listing the valid ones), a bad class count or options, an architecture that
    is built from its uploaded file (huggingface, onnx), or a plugin that fails.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, not {num_classes!r}")
    options = check_options(options)
    family = family_of(name)
    if family == plugins.FAMILY:
        model = plugins.build(_plugins()[name], num_classes, options)
    else:
        model = _module(family).build(name, num_classes, options)
    return model.eval()


def _module(family: str) -> ModuleType:
    return {m.FAMILY: m for m in (*_FIXED, timm_models)}[family]
