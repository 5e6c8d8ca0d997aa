"""`gigaudit layers` (an architecture's layers before any upload) and `gigaudit architectures` (with descriptions).

A layer is analysable when every path from the input to the logits passes through its output (a cut); the others
come with the server's reason. Defaults (`*`) are what `gigaudit audit` analyses without `--layers`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from gigaudit.commands.build_options import add_build_flags, architecture_options, tracer_options
from gigaudit.commands.common import DefaultsFormatter, add_connection, add_output, client_for, output_format
from gigaudit.output import COLUMNS, render
from gigaudit.suggest import unknown

EXIT_OK = 0


def add_parsers(sub) -> None:
    layers = sub.add_parser("layers", help="list an architecture's layers: analysable or not (and why), defaults "
                            "marked", description=__doc__, formatter_class=DefaultsFormatter)
    layers.add_argument("--arch", required=True, help="architecture name (see `gigaudit architectures`)")
    layers.add_argument("--num-classes", required=True, type=int, help="outputs of the classifier")
    layers.add_argument("--model", type=Path, help="weights (.safetensors): also check that they fit --arch")
    layers.add_argument("--analysable", action="store_true", help="only the analysable layers")
    add_build_flags(layers)
    add_output(layers)
    add_connection(layers)
    layers.set_defaults(run=_layers)

    arch = sub.add_parser("architectures", help="list the server's architectures: family, source, weights file",
                          formatter_class=DefaultsFormatter)
    arch.add_argument("--family", default="", help="only this family: torchvision, gigaudit, timm, huggingface, "
                                                   "onnx or plugin (default: all)")
    add_output(arch)
    add_connection(arch)
    arch.set_defaults(run=_architectures)


def _layers(args) -> int:
    if args.num_classes < 1:
        raise ValueError(f"--num-classes must be positive, got {args.num_classes}")
    if args.model is not None:
        from gigaudit.weights import check_fit

        problem = check_fit(args.model, args.arch, args.num_classes)
        if problem:
            print(f"gigaudit: warning: {problem}", file=sys.stderr)
    with client_for(args) as client:
        check_architecture(client, args.arch)
        response = client.list_layers(architecture=args.arch, num_classes=args.num_classes,
                                      architecture_options=architecture_options(args), tracer=tracer_options(args))
    print_layers(response, output_format(args), f"{args.arch} with {args.num_classes} classes",
                 analysable_only=args.analysable)
    return EXIT_OK


def print_layers(response, fmt: str, what: str, analysable_only: bool = False) -> None:
    layers = [layer for layer in response.layers if layer.is_cut or not analysable_only]
    if fmt != "table":
        render(layers, fmt)
        return
    render(layers, "table", columns=COLUMNS["gigaudit.v1.Layer"])
    cuts = sum(layer.is_cut for layer in response.layers)
    defaults = list(response.default_layers) or [layer.name for layer in response.layers if layer.is_default]
    print(f"\n{what}: {cuts} of {len(response.layers)} layers analysable; defaults (*): "
          f"{', '.join(defaults) or 'none'}. Choose others with `gigaudit audit --layers NAME ...`.",
          file=sys.stderr)


def _architectures(args) -> int:
    with client_for(args) as client:
        render(client.list_architectures(args.family), output_format(args))
    return EXIT_OK


def check_architecture(client, name: str) -> None:
    """ValueError with "did you mean" when the server has no architecture `name`."""
    names = [a.name for a in client.list_architectures()]
    if names and name not in names:
        raise ValueError(unknown("architecture", name, names, "gigaudit architectures"))
