"""What uploaded weights fit, from their safetensors header alone (torch-free): "these weights look like X".

A safetensors file starts with an 8-byte little-endian header length and a JSON header naming every tensor with
its dtype and shape. `gigaudit.fingerprints` (generated from the server's architectures) holds, per architecture,
a digest of its tensor names and shapes without the classifier; weights match an architecture when their tensors,
the classifier's aside, give the same digest. Only the header is read, never the tensors.
"""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 << 20  # the format's own limit


def read_header(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a safetensors file; ValueError when it is not one."""
    with Path(path).open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{Path(path).name} is not a safetensors file (shorter than its header)")
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise ValueError(f"{Path(path).name} is not a safetensors file (header length {length})")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{Path(path).name} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{Path(path).name} is not a safetensors file (its header is not a mapping)")
    return {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def digest(shapes: dict[str, tuple[int, ...]], classifier: list[str]) -> str:
    """16 hex digits over the sorted (name, shape) of every tensor outside `classifier`, and the classifier's
    names."""
    body = sorted((k, list(v)) for k, v in shapes.items() if k not in classifier)
    return hashlib.sha256(json.dumps([body, sorted(classifier)]).encode()).hexdigest()[:16]


@dataclass
class Match:
    architecture: str
    num_classes: int | None


def matching_architectures(shapes: dict[str, tuple[int, ...]], table: dict | None = None) -> list[Match]:
    """The architectures (and class counts) these tensors fit exactly, sorted by name."""
    if table is None:
        from gigaudit.fingerprints import FINGERPRINTS as table
    found = []
    for name, entry in sorted(table.items()):
        classifier = entry["classifier"]
        if not all(k in shapes for k in classifier):
            continue
        if digest(shapes, classifier) == entry["digest"]:
            outputs = shapes[classifier[0]][0] if classifier and shapes[classifier[0]] else None
            found.append(Match(name, outputs))
    return found


def check_fit(path: Path, architecture: str, num_classes: int) -> str | None:
    """None when the weights fit `architecture` with `num_classes` (or when the table cannot tell); else one
    sentence saying what they look like."""
    from gigaudit.fingerprints import FINGERPRINTS

    if architecture not in FINGERPRINTS:
        return None  # an architecture the table does not know (a newer server): let the server check
    shapes = read_header(path)
    matches = matching_architectures(shapes, FINGERPRINTS)
    if any(m.architecture == architecture and m.num_classes in (None, num_classes) for m in matches):
        return None
    mine = [m for m in matches if m.architecture == architecture]
    if mine:
        return (f"{Path(path).name} fits {architecture} with {mine[0].num_classes} classes, not "
                f"--num-classes {num_classes}")
    if matches:
        names = ", ".join(f"{m.architecture} ({m.num_classes} classes)" for m in matches[:4])
        more = f" and {len(matches) - 4} more" if len(matches) > 4 else ""
        return f"these weights look like {names}{more}, not {architecture}; pass --arch {matches[0].architecture}"
    return None  # fits nothing we know: the server's check names the keys
