"""Flags for how the server builds and traces a model: the builder's options (timm, plugins) and the tracer options
for models torch.fx cannot trace as they are (docs/architectures.md, docs/tracing.md)."""
from __future__ import annotations

import argparse
import json

from gigaudit.v1 import model_service_pb2 as model_pb


def add_build_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of the architecture's builder, repeatable; VALUE is JSON when it "
                             "parses (64, true, [1, 2]), else a string (e.g. --arch-option img_size=64 for timm)")
    parser.add_argument("--leaf-module", action="append", default=[], metavar="NAME",
                        help="module class name or path torch.fx keeps whole, repeatable")
    parser.add_argument("--autowrap-function", action="append", default=[], metavar="MODULE.FUNCTION",
                        help="function torch.fx records as a call instead of tracing into, repeatable")
    parser.add_argument("--hooked-layer", action="append", default=[], metavar="PATH",
                        help="for a model torch.fx cannot trace: a layer captured with a forward hook, repeatable")


def architecture_options(args) -> dict:
    """``{key: value}`` of the ``--arch-option KEY=VALUE`` flags; ValueError for a flag without ``=``."""
    options = {}
    for flag in getattr(args, "arch_option", None) or []:
        key, sep, raw = flag.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--arch-option takes KEY=VALUE, got {flag!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def tracer_options(args) -> model_pb.TracerOptions | None:
    """The TracerOptions of the tracer flags, or None when none is given."""
    fields = {"leaf_modules": getattr(args, "leaf_module", None) or [],
              "autowrap_functions": getattr(args, "autowrap_function", None) or [],
              "hooked_layers": getattr(args, "hooked_layer", None) or []}
    return model_pb.TracerOptions(**fields) if any(fields.values()) else None


def build_settings(args) -> dict:
    """The build settings that change an audit, for the model's id (empty when none is given)."""
    settings = {}
    if architecture_options(args):
        settings["architecture_options"] = architecture_options(args)
    tracer = tracer_options(args)
    if tracer is not None:
        settings["tracer"] = {"leaf_modules": list(tracer.leaf_modules),
                              "autowrap_functions": list(tracer.autowrap_functions),
                              "hooked_layers": list(tracer.hooked_layers)}
    return settings
