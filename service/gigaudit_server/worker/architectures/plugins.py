"""Family ``plugin``: architectures of installed packages, entry-point group ``gigaudit.architectures``.

An entry point ``name = package.module:builder`` names a callable ``builder(num_classes: int, **options) -> nn.Module``
(``options``: the model's ``architecture_options``). Listing reads package metadata only; a plugin is imported when
one of its models is built, and a plugin that fails to import or build is reported as a ``ValueError`` naming it,
its distribution and the exception, while the worker goes on serving the others. A name that clashes with a
built-in architecture is skipped (and logged). See examples/gigaudit-example-plugin.
"""
from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Collection

from torch import nn

FAMILY = "plugin"
WEIGHTS_FORMAT = "safetensors"
GROUP = "gigaudit.architectures"
_log = logging.getLogger(__name__)


def entry_points(builtin: Collection[str]) -> dict[str, importlib.metadata.EntryPoint]:
    """``{name: entry point}`` of the installed plugins, without names that clash with ``builtin`` ones."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=GROUP):
        if entry.name in builtin or entry.name.startswith("timm:"):
            _log.warning("plugin architecture %r of %s clashes with a built-in architecture: skipped", entry.name,
                         distribution(entry))
        elif entry.name in found:
            _log.warning("plugin architecture %r of %s is also provided by %s: the first is kept", entry.name,
                         distribution(entry), distribution(found[entry.name]))
        else:
            found[entry.name] = entry
    return found


def distribution(entry: importlib.metadata.EntryPoint) -> str:
    """``"name version"`` of the distribution that declares ``entry``."""
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def describe(entry: importlib.metadata.EntryPoint) -> str:
    """The distribution's summary (package metadata, nothing imported) and the entry point."""
    summary = (entry.dist.metadata.get("Summary") or "").strip() if entry.dist is not None else ""
    return f"{summary + ' ' if summary else ''}(plugin {entry.value})"


def build(entry: importlib.metadata.EntryPoint, num_classes: int, options: dict) -> nn.Module:
    """Import the plugin and build its model; ``ValueError`` naming the plugin for anything that goes wrong."""
    what = f"plugin architecture {entry.name!r} ({distribution(entry)}, {entry.value})"
    try:
        builder = entry.load()
    except Exception as exc:  # noqa: BLE001 - a plugin's import may raise anything; the worker must go on
        raise ValueError(f"{what} failed to import: {type(exc).__name__}: {exc}") from None
    try:
        model = builder(num_classes, **options)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{what} failed to build with num_classes={num_classes}"
                         f"{' and options ' + ', '.join(sorted(options)) if options else ''}: "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model
