"""CSV and JSONL manifests of image URIs (torch-free), registered by URI only.

A CSV manifest has a header row; a JSONL manifest one JSON object per line. The image column (key) holds a URI
(``s3://``, ``gs://``, ``hf://``, ``file://``) or a path relative to the manifest's folder; the optional label
column holds a class index (an integer; in a CSV, digits) or a class name. Every image URI must lie on the
allow-list: a manifest naming any other location is refused before anything is fetched, listing the first few.
Images are fetched through fsspec, never beyond the per-image byte limit; one that cannot be fetched is refused
with the first few such URIs. Links (local files) are refused like links in archives.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from gigaudit_server.storage.datasets.archives import DatasetLimits, LimitExceeded, check_image_size
from gigaudit_server.storage.datasets.image_tables import IMAGE_COLUMNS, LABEL_COLUMNS
from gigaudit_server.storage.datasets.samples import NotAllowed, Sample, check_not_link, filesystem, uri_allowed

MAX_LINE_BYTES = 64 * 1024
SHOWN = 5  # offending URIs listed in an error
_DIGITS = re.compile(r"\d{1,9}")


class ManifestReader:
    """The manifest at ``uri`` (``kind``: ``"csv"`` or ``"jsonl"``); image URIs must lie under ``allowlist``."""

    def __init__(self, uri: str, kind: str, limits: DatasetLimits, allowlist: Sequence[str],
                 image_column: str = "", label_column: str = ""):
        if kind not in ("csv", "jsonl"):
            raise ValueError(f"unknown manifest kind {kind!r}; valid kinds are: csv, jsonl")
        if "://" not in uri:  # a local path: its file:// URI, against which relative image paths resolve
            uri = Path(uri).absolute().as_uri()
        self.uri, self.kind, self.limits, self.allowlist = uri, kind, limits, list(allowlist)
        self.format = f"{kind}_manifest"
        self.image_column, self.label_column = image_column, label_column
        self.given_class_names = None
        self.base = uri.rsplit("/", 1)[0] + "/"

    def rows(self) -> Iterator[tuple[int, str, int | str | None]]:
        """``(line, image URI, raw label)`` of every row, URIs resolved and on the allow-list (checked all before
        the first row is returned)."""
        rows = list(self._rows())
        refused = [(row, uri) for row, uri, _ in rows if not uri_allowed(uri, self.allowlist)]
        if refused:
            raise NotAllowed(f"the manifest names {len(refused)} image URIs off the allowed locations "
                             f"({', '.join(self.allowlist) or 'none configured'}), e.g. "
                             f"{', '.join(_where(row, uri) for row, uri in refused[:SHOWN])}")
        return iter(rows)

    def samples(self) -> Iterator[Sample]:
        for _, uri, label in self.rows():
            yield Sample(uri, label, lambda uri=uri: fetch(uri, self.limits))

    def check_reachable(self) -> None:
        """``ValueError`` listing the first few image URIs that are missing, unreadable or too large."""
        failed = []
        for row, uri, _ in self.rows():
            try:
                fs, path = filesystem(uri)
                check_not_link(fs, path)
                info = fs.info(path)
                if info.get("type") not in (None, "file"):
                    raise ValueError("not a file")
                check_image_size(uri, int(info.get("size") or 0), self.limits)
            except (OSError, ValueError, ImportError) as exc:
                failed.append(f"{_where(row, uri)} ({type(exc).__name__}: {str(exc)[:120]})")
                if len(failed) >= SHOWN:
                    break
        if failed:
            raise ValueError(f"images of the manifest cannot be read: {'; '.join(failed)}")

    # ------------------------------------------------------------------ parsing
    def _rows(self) -> Iterator[tuple[int, str, int | str | None]]:
        fs, path = filesystem(self.uri)
        check_not_link(fs, path)
        with fs.open(path, "rb") as raw:
            text = io.TextIOWrapper(_LineLimited(raw), encoding="utf-8", newline="")
            try:
                records = self._csv(text) if self.kind == "csv" else self._jsonl(text)
                count = 0
                for line, record in records:
                    count += 1
                    if count > self.limits.max_images:
                        raise LimitExceeded(f"the manifest lists more than {self.limits.max_images} images")
                    yield self._row(line, record)
            except UnicodeDecodeError:
                raise ValueError("the manifest is not UTF-8 text") from None
            except csv.Error as exc:
                raise ValueError(f"the CSV manifest is malformed ({exc})") from None
        if not count:
            raise ValueError("the manifest lists no images")

    def _csv(self, text) -> Iterator[tuple[int, dict]]:
        reader = csv.DictReader(text)
        columns = reader.fieldnames or []
        self._columns(columns)
        for record in reader:
            if None in record:
                raise ValueError(f"line {reader.line_num} of the manifest has more fields than its header")
            yield reader.line_num, record

    def _jsonl(self, text) -> Iterator[tuple[int, dict]]:
        chosen = False
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ValueError(f"line {number} of the manifest is not JSON") from None
            if not isinstance(record, dict):
                raise ValueError(f"line {number} of the manifest is not a JSON object")
            if not chosen:
                self._columns(list(record))
                chosen = True
            yield number, record

    def _columns(self, columns: list[str]) -> None:
        listed = ", ".join(map(str, columns[:20])) or "(none)"
        image = self.image_column or next((c for c in IMAGE_COLUMNS if c in columns), "")
        if image not in columns:
            raise ValueError(f"the manifest has no image column {self.image_column!r}" if self.image_column else
                             f"the manifest has no image column (none of {', '.join(IMAGE_COLUMNS)}; name it with "
                             f"image_column); its columns: {listed}")
        if self.label_column and self.label_column not in columns:
            raise ValueError(f"the manifest has no label column {self.label_column!r}; its columns: {listed}")
        self._image = image
        self._label = self.label_column or next((c for c in LABEL_COLUMNS if c in columns), None)

    def _row(self, line: int, record: dict) -> tuple[int, str, int | str | None]:
        value = record.get(self._image)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"line {line} of the manifest has no image URI in {self._image!r}")
        uri = self._resolve(value.strip(), line)
        label = record.get(self._label) if self._label else None
        if self._label and (label is None or label == ""):
            raise ValueError(f"line {line} of the manifest has no label in {self._label!r}")
        if isinstance(label, str) and self.kind == "csv" and _DIGITS.fullmatch(label):
            label = int(label)
        if isinstance(label, bool) or (label is not None and not isinstance(label, (int, str))):
            raise ValueError(f"line {line} of the manifest has the label {label!r}; a label is a class index or "
                             "a class name")
        return line, uri, label

    def _resolve(self, value: str, line: int) -> str:
        if "://" in value:
            uri = value
        elif value.startswith("/") or "\\" in value:
            raise ValueError(f"line {line} of the manifest names {value!r}: give a URI, or a path relative to the "
                             "manifest's folder")
        else:
            uri = self.base + value
        if ".." in uri.split("/"):
            raise NotAllowed(f"line {line} of the manifest names {value!r}, which points outside ('..')")
        return uri


def _where(row: int, uri: str) -> str:
    """``row 3 (cat.png): 'file:///data/cat.png'``: the row and file name stay readable where a worker's error
    message hides paths and URLs (``worker.failures.public_message``)."""
    return f"row {row} ({uri.rstrip('/').rsplit('/', 1)[-1][:80]}): {uri!r}"


def fetch(uri: str, limits: DatasetLimits) -> bytes:
    """The bytes of the image at ``uri``; ``ValueError`` when it cannot be read or is larger than an image may be."""
    try:
        fs, path = filesystem(uri)
        check_not_link(fs, path)
        with fs.open(path, "rb") as handle:
            data = handle.read(limits.max_image_bytes + 1)
    except (OSError, ImportError) as exc:
        raise ValueError(f"image {uri!r} cannot be read ({type(exc).__name__}: {exc})") from None
    check_image_size(uri, len(data), limits)
    return data


class _LineLimited(io.RawIOBase):
    """A binary stream that refuses lines longer than ``MAX_LINE_BYTES`` (a manifest is rows of URIs)."""

    def __init__(self, raw):
        super().__init__()
        self._raw, self._since_newline = raw, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._raw.read(min(len(buffer), 64 * 1024))
        last = data.rfind(b"\n")
        self._since_newline = len(data) - last - 1 if last >= 0 else self._since_newline + len(data)
        if self._since_newline > MAX_LINE_BYTES:
            raise ValueError(f"the manifest has a line longer than {MAX_LINE_BYTES} bytes")
        buffer[:len(data)] = data
        return len(data)
