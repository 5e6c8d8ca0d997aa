"""Architecture options: the keyword arguments a builder takes (``ModelSpec.architecture_options``)."""
from __future__ import annotations

from collections.abc import Mapping

MAX_OPTIONS = 32
_SCALARS = (str, int, float, bool)


def check_options(options: Mapping | None) -> dict:
    """``options`` as a plain dict of JSON scalars or lists of them; ``ValueError`` naming any other value."""
    if not options:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"architecture_options must be a mapping, not {type(options).__name__}")
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"architecture_options has {len(options)} keys, more than the limit of {MAX_OPTIONS}")
    checked = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"architecture option {key!r} is not a keyword argument name")
        if isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value):
            checked[key] = list(value)
        elif isinstance(value, _SCALARS):
            checked[key] = value
        else:
            raise ValueError(f"architecture option {key!r} must be a JSON number, string, boolean or a list of them, "
                             f"not {type(value).__name__}")
    return checked


def no_options(family: str, options: Mapping | None) -> None:
    """``ValueError`` when a family that takes no builder options is given some."""
    if options:
        raise ValueError(f"{family} architectures take no architecture_options (got {', '.join(sorted(options))}); "
                         "options are for timm and plugin architectures")
