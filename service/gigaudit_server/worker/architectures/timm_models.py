"""Family ``timm``: ``timm:<name>`` is ``timm.create_model(name, pretrained=False, num_classes=n, **options)``.

Nothing is downloaded: ``pretrained`` is always false and the options that point timm at files or pretrained
configurations are refused. Users upload the weights as safetensors.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util

from torch import nn

FAMILY = "timm"
WEIGHTS_FORMAT = "safetensors"
PREFIX = "timm:"
# create_model arguments that load files, pick pretrained configurations or change what the model returns
REFUSED_OPTIONS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                             "cache_dir", "num_classes", "features_only", "out_indices", "feature_cfg",
                             "pretrained_strict"})


@functools.cache
def _models() -> tuple[str, ...]:
    """timm's model names; none where timm is not installed (the server extra pins it)."""
    if importlib.util.find_spec("timm") is None:
        return ()
    import timm

    return tuple(timm.list_models())


def version() -> str:
    import timm

    return timm.__version__


def names() -> list[str]:
    return [PREFIX + name for name in _models()]


def source(name: str) -> str:
    return f"timm {version()}"


def describe(name: str) -> str:
    """The first line of the timm entry point's docstring, else the model's name."""
    from timm.models import model_entrypoint

    doc = (model_entrypoint(name.removeprefix(PREFIX)).__doc__ or "").strip().split("\n")[0].strip()
    return doc or f"timm model {name.removeprefix(PREFIX)}"


def check_name(name: str) -> str:
    """The timm model name of ``timm:<name>``; ``ValueError`` with the closest names for an unknown one."""
    model_name = name.removeprefix(PREFIX)
    known = _models()
    if not known:
        raise ValueError(f"timm is not installed on this worker, so {name!r} cannot be built; install gigaudit[server]")
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(PREFIX + c) for c in close)}? " if close else ""
        raise ValueError(f"unknown timm model {model_name!r}; {hint}timm {version()} has {len(known)} models "
                         "(timm.list_models(); ListArchitectures with family timm)")
    return model_name


def build(name: str, num_classes: int, options: dict) -> nn.Module:
    import timm

    model_name = check_name(name)
    refused = sorted(REFUSED_OPTIONS & set(options))
    if refused:
        raise ValueError(f"timm option(s) {', '.join(refused)} cannot be set: gigaudit builds timm models with "
                         "pretrained=False and its own num_classes, and loads the uploaded safetensors weights")
    try:
        return timm.create_model(model_name, pretrained=False, num_classes=num_classes, **options)
    except TypeError as exc:
        raise ValueError(f"timm model {model_name!r} refuses the architecture_options "
                         f"{', '.join(sorted(options))}: {exc}") from None
