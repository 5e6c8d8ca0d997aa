"""Arrow tables of images (torch-free): the rows of parquet files and of Hugging Face datasets as samples.

An image column holds encoded image bytes (``binary``) or a struct with a ``bytes`` field (how Hugging Face writes
an ``Image`` feature); a label column holds integers (class indices) or strings (class names). The columns are
named by the caller, else found by name (``IMAGE_COLUMNS``, ``LABEL_COLUMNS``); a table without an image column is
refused with a ``ValueError`` that lists its columns. Class names of integer labels come from a Hugging Face
``ClassLabel`` feature when there is one.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

import pyarrow as pa

from gigaudit_server.storage.datasets.archives import DatasetLimits, check_image_size
from gigaudit_server.storage.datasets.samples import Sample

IMAGE_COLUMNS = ("image", "img", "image_uri", "uri", "path", "file")
LABEL_COLUMNS = ("label", "labels", "cls", "class")


def choose_columns(schema: pa.Schema, image_column: str = "", label_column: str = "",
                   where: str = "the table") -> tuple[str, str | None]:
    """``(image column, label column or None)`` of ``schema``; ``ValueError`` listing the columns otherwise."""
    names = list(schema.names)
    listed = ", ".join(f"{n} ({schema.field(n).type})" for n in names[:20]) + (", …" if len(names) > 20 else "")
    image = image_column or next((n for n in IMAGE_COLUMNS if n in names), "")
    if not image or image not in names:
        wanted = f"image column {image_column!r}" if image_column else \
            f"image column (none of {', '.join(IMAGE_COLUMNS)}; name it with image_column)"
        raise ValueError(f"{where} has no {wanted}; its columns: {listed or '(none)'}")
    kind = schema.field(image).type
    if not (_is_binary(kind) or (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0
                                 and _is_binary(kind.field("bytes").type))):
        raise ValueError(f"column {image!r} of {where} is {kind}, not encoded images (binary, or a struct with "
                         "binary 'bytes' as Hugging Face writes an Image feature); a table of image URIs is a "
                         "manifest: register it as CSV or JSONL")
    if label_column and label_column not in names:
        raise ValueError(f"{where} has no label column {label_column!r}; its columns: {listed}")
    label = label_column or next((n for n in LABEL_COLUMNS if n in names), None)
    if label is not None:
        kind = schema.field(label).type
        if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"label column {label!r} of {where} is {kind}; labels are integers (class indices) "
                             "or strings (class names)")
    return image, label


def class_label_names(features: dict, label: str | None) -> list[str] | None:
    """The names of a Hugging Face ``ClassLabel`` feature ``label`` in a features dict, if it is one."""
    feature = (features or {}).get(label) if label else None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and isinstance(feature.get("names"), list):
        return [str(n) for n in feature["names"]]
    return None


def hf_features(schema: pa.Schema) -> dict:
    """The Hugging Face features a table's schema metadata holds (``{}`` when none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def table_samples(batches: Iterable[pa.RecordBatch], image: str, label: str | None, where: str,
                  limits: DatasetLimits, first_row: int = 0) -> Iterator[Sample]:
    """The rows of ``batches`` as samples named ``{where}#{row}``; ``ValueError`` for a row without image bytes or
    with more bytes than an image may hold."""
    row = first_row
    for batch in batches:
        images = batch.column(batch.schema.get_field_index(image))
        if pa.types.is_struct(images.type):
            images = images.field("bytes")
        labels = batch.column(batch.schema.get_field_index(label)).to_pylist() if label else None
        for i in range(len(batch)):
            name = f"{where}#{row}"
            data = images[i].as_py()
            if data is None:
                raise ValueError(f"row {name!r} has no image bytes (only a path?); embed the images in the table "
                                 "(Hugging Face: embed_external_files)")
            check_image_size(name, len(data), limits)
            value = labels[i] if labels is not None else None
            if labels is not None and value is None:
                raise ValueError(f"row {name!r} has no label in column {label!r}")
            yield Sample(name, value, lambda data=data: data)
            row += 1


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)
