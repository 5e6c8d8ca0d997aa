"""Parquet files of images (torch-free): an image column and an optional label column, read in row-group batches.

Before any row is read, the footer's length, the number of rows and, per row group, the bytes of the columns read
(their declared uncompressed size) are checked against the limits, so memory stays bounded by one row group
(``DatasetLimits.max_block_bytes``) whatever the file holds. Every image passes the checks of
:mod:`~gigaudit_server.storage.datasets.archives` (bytes, pixels, decoding).
"""
from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import pyarrow.parquet as pq

from gigaudit_server.storage.datasets.archives import MAX_ZIP_DIRECTORY_BYTES, DatasetLimits, LimitExceeded
from gigaudit_server.storage.datasets.image_tables import choose_columns, class_label_names, hf_features, table_samples
from gigaudit_server.storage.datasets.samples import Sample, check_not_link

MAGIC = b"PAR1"
BATCH_ROWS = 64


class ParquetReader:
    """The parquet files ``paths`` on ``fs`` (in that order) as one dataset."""

    format = "parquet"

    def __init__(self, fs, paths: Sequence[str], limits: DatasetLimits, image_column: str = "",
                 label_column: str = ""):
        if not paths:
            raise ValueError("no parquet files to read")
        self.fs, self.paths, self.limits = fs, list(paths), limits
        self.image_column, self.label_column = image_column, label_column
        self.given_class_names: list[str] | None = None

    def samples(self) -> Iterator[Sample]:
        rows = 0
        for path in self.paths:
            where = path.rsplit("/", 1)[-1] if len(self.paths) > 1 else "row"
            check_not_link(self.fs, path)
            with self.fs.open(path, "rb") as handle:
                _check_footer(handle, path)
                try:
                    table = pq.ParquetFile(handle)
                except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
                    raise ValueError(f"{_base(path)!r} is not a readable parquet file ({type(exc).__name__}: "
                                     f"{exc})") from None
                image, label = choose_columns(table.schema_arrow, self.image_column, self.label_column,
                                              f"parquet file {_base(path)!r}")
                names = class_label_names(hf_features(table.schema_arrow), label)
                if names is not None:
                    self.given_class_names = names
                meta = table.metadata
                rows += meta.num_rows
                if rows > self.limits.max_images:
                    raise LimitExceeded(f"the parquet files hold more than {self.limits.max_images} rows (images)")
                _check_row_groups(meta, (image, label), path, self.limits)
                try:
                    batches = table.iter_batches(batch_size=BATCH_ROWS, columns=[c for c in (image, label) if c])
                    yield from table_samples(batches, image, label, where, self.limits)
                except (OSError, ArithmeticError) as exc:  # ArrowInvalid is a ValueError: passes as it is
                    raise ValueError(f"parquet file {_base(path)!r} is truncated or corrupt ({exc})") from None


def _check_footer(handle, path: str) -> None:
    """``ValueError`` unless the file ends in a parquet footer of a sane length (read before pyarrow reads it)."""
    size = handle.seek(0, 2)
    if size < 12:
        raise ValueError(f"{_base(path)!r} is not a parquet file ({size} bytes)")
    handle.seek(size - 8)
    length, magic = struct.unpack("<I4s", handle.read(8))
    handle.seek(0)
    if magic != MAGIC:
        raise ValueError(f"{_base(path)!r} is not a parquet file (no PAR1 footer)")
    if length > min(MAX_ZIP_DIRECTORY_BYTES, size - 8):
        raise LimitExceeded(f"parquet footer of {_base(path)!r} declares {length} bytes, more than the limit of "
                            f"{MAX_ZIP_DIRECTORY_BYTES} bytes (or the file)")


def _check_row_groups(meta, columns, path: str, limits: DatasetLimits) -> None:
    read = [c for c in columns if c]
    for index in range(meta.num_row_groups):
        group = meta.row_group(index)
        size = sum(group.column(j).total_uncompressed_size for j in range(group.num_columns)
                   if group.column(j).path_in_schema.split(".")[0] in read)
        if size > limits.max_block_bytes:
            raise LimitExceeded(f"row group {index} of {_base(path)!r} holds {size} bytes of images and labels, "
                                f"more than the limit of {limits.max_block_bytes} bytes per row group; write the "
                                "file with smaller row groups (row_group_size)")


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]
