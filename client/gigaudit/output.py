"""`-o table|json|yaml` for every get and list: protos as plain values (numbers as numbers), and aligned tables.

`plain(message)` turns a proto into dicts, lists, strings and numbers: int64 stays a number (proto-JSON would make
it a string), enums are their names without the type prefix, timestamps RFC 3339, `Any` fields are unpacked when
their type is one of the service's. `render(items, fmt)` prints one item or a list in the chosen format.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import yaml
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

FORMATS = ("table", "json", "yaml")


def default_format() -> str:
    """table on a terminal, json when piped (what a script reads)."""
    return "table" if sys.stdout.isatty() else "json"


def plain(message: Message) -> Any:
    """A proto message as plain Python values (see the module docstring)."""
    if isinstance(message, timestamp_pb2.Timestamp):
        return message.ToJsonString() if (message.seconds or message.nanos) else None
    if isinstance(message, duration_pb2.Duration):
        return message.ToTimedelta().total_seconds()
    if isinstance(message, (struct_pb2.Struct, struct_pb2.Value, struct_pb2.ListValue)):
        return MessageToDict(message)
    if isinstance(message, any_pb2.Any):
        inner = _unpack_any(message)
        if inner is None:
            return {"@type": message.type_url}
        return {"@type": inner.DESCRIPTOR.full_name, **plain(inner)}
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif _repeated(field):
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6.30 (upb) drops `label`
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _value(field: FieldDescriptor, value):
    if field.message_type is not None:
        return plain(value)
    if field.enum_type is not None:
        name = field.enum_type.values_by_number[value].name if value in field.enum_type.values_by_number else value
        prefix = _enum_prefix(field.enum_type.name)
        return name.removeprefix(prefix) if isinstance(name, str) else name
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    return value


def _enum_prefix(enum_name: str) -> str:
    """`ResourceState` → "RESOURCE_STATE_" (the AIP-126 value prefix)."""
    snake = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum_name)).upper()
    return snake + "_"


def _unpack_any(packed: any_pb2.Any):
    from gigaudit.v1 import (admin_service_pb2, audit_service_pb2, dataset_service_pb2, model_service_pb2,
                             operation_metadata_pb2)

    for module in (operation_metadata_pb2, audit_service_pb2, model_service_pb2, dataset_service_pb2,
                   admin_service_pb2):
        for kind in module.DESCRIPTOR.message_types_by_name.values():
            if packed.Is(kind):
                message = getattr(module, kind.name)()
                packed.Unpack(message)
                return message
    return None


# --- tables ----------------------------------------------------------------------------------------
Column = tuple[str, Callable[[dict], Any]]


def _age(row: dict, key: str) -> str:
    stamp = row.get(key)
    if not stamp:
        return ""
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds()
    return human_duration(max(0.0, seconds))


def human_duration(seconds: float) -> str:
    """`42s`, `3m10s`, `2h05m`, `3d4h` (kubectl-like)."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _meta(row: dict) -> dict:
    return row.get("metadata") or {}


def _progress(row: dict) -> str:
    meta = _meta(row)
    if meta.get("state") == "QUEUED" and "queue_position" in meta:
        return f"queued, {meta['queue_position']} ahead"
    if meta.get("total"):
        return f"{meta.get('done', 0)}/{meta['total']}"
    return ""


def _sizes(row: dict) -> str:
    sizes = row.get("image_sizes") or {}
    if not sizes:
        return ""
    return f"{sizes.get('median_width', 0)}x{sizes.get('median_height', 0)}"


COLUMNS: dict[str, list[Column]] = {
    "gigaudit.v1.Model": [("NAME", lambda r: r.get("name", "")), ("ARCHITECTURE", lambda r: r.get("architecture", "")),
                          ("CLASSES", lambda r: r.get("num_classes", 0)), ("INPUT", lambda r: r.get("input_size", 0)),
                          ("STATE", lambda r: r.get("state", "")), ("AGE", lambda r: _age(r, "create_time"))],
    "gigaudit.v1.Dataset": [("NAME", lambda r: r.get("name", "")), ("IMAGES", lambda r: r.get("image_count", 0)),
                            ("CLASSES", lambda r: len(r.get("class_names", []))), ("MEDIAN SIZE", _sizes),
                            ("BYTES", lambda r: r.get("size_bytes", 0)), ("AGE", lambda r: _age(r, "create_time"))],
    "google.longrunning.Operation": [
        ("NAME", lambda r: r.get("name", "")), ("KIND", lambda r: _meta(r).get("kind", "")),
        ("STATE", lambda r: _meta(r).get("state", "")), ("STAGE", lambda r: _meta(r).get("stage", "")),
        ("PROGRESS", _progress), ("TARGET", lambda r: _meta(r).get("target", "")),
        ("AGE", lambda r: _age(_meta(r), "create_time"))],
    "gigaudit.v1.ConceptSet": [("NAME", lambda r: r.get("name", "")), ("DATASET", lambda r: r.get("dataset", "")),
                               ("STATE", lambda r: r.get("state", "")),
                               ("LAYERS", lambda r: ",".join(layer.get("layer", "") for layer in r.get("layers", []))),
                               ("AGE", lambda r: _age(r, "create_time"))],
    "gigaudit.v1.ConceptGraph": [("NAME", lambda r: r.get("name", "")), ("STATE", lambda r: r.get("state", "")),
                                 ("LAYERS", lambda r: ",".join(r.get("layers", []))),
                                 ("IMAGES", lambda r: r.get("image_count", 0)),
                                 ("NODES", lambda r: r.get("node_count", 0)),
                                 ("EDGES", lambda r: r.get("edge_count", 0)), ("AGE", lambda r: _age(r, "create_time"))],
    "gigaudit.v1.DeadLetter": [("OPERATION", lambda r: r.get("operation", "")), ("KIND", lambda r: r.get("kind", "")),
                               ("ATTEMPTS", lambda r: r.get("attempts", 0)), ("WORKER", lambda r: r.get("worker", "")),
                               ("ERROR", lambda r: (r.get("error") or {}).get("message", "")[:60]),
                               ("AGE", lambda r: _age(r, "dead_time"))],
    "gigaudit.v1.Architecture": [("NAME", lambda r: r.get("name", "")), ("FAMILY", lambda r: r.get("family", "")),
                                 ("SOURCE", lambda r: r.get("source", "")),
                                 ("WEIGHTS", lambda r: r.get("weights_format", "")),
                                 ("DESCRIPTION", lambda r: r.get("description", "")[:80])],
    "gigaudit.v1.Layer": [("LAYER", lambda r: r.get("name", "")), ("TYPE", lambda r: r.get("type", "")),
                          ("DEFAULT", lambda r: "*" if r.get("is_default") else ""),
                          ("ANALYSABLE", lambda r: "yes" if r.get("is_cut") else "no"),
                          ("WHY NOT", lambda r: r.get("reason", ""))],
}


def table(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """Left-aligned columns separated by two spaces, headers first (no trailing spaces)."""
    cells = [[header for header, _ in columns]]
    cells += [[_cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(items: Message | Sequence[Message], fmt: str, *, columns: Sequence[Column] | None = None,
           file=None) -> None:
    """Print one message (get) or a list (list) as a table, JSON or YAML."""
    file = file or sys.stdout
    many = not isinstance(items, Message)
    rows = [plain(m) for m in items] if many else plain(items)
    if fmt == "json":
        print(json.dumps(rows, indent=2), file=file)
    elif fmt == "yaml":
        print(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True).rstrip(), file=file)
    elif fmt == "table":
        messages = list(items) if many else [items]
        if columns is None:
            if not messages:
                print("No resources found.", file=sys.stderr)
                return
            columns = COLUMNS.get(messages[0].DESCRIPTOR.full_name)
        if columns is None:  # no table layout for this kind: YAML reads best
            print(yaml.safe_dump(rows, sort_keys=False, allow_unicode=True).rstrip(), file=file)
            return
        print(table([plain(m) for m in messages], columns), file=file)
    else:
        raise ValueError(f"output format is one of {', '.join(FORMATS)}, got {fmt!r}")
