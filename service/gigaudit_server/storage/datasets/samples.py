"""What every dataset format reads into (torch-free): a :class:`Sample` per image, labels tallied into class names,
and the URI checks shared by the API and the workers.

A sample's label is raw: a class index (``int``: WebDataset ``.cls``, a Hugging Face ``ClassLabel``, an integer
column), a class name (``str``: an ImageFolder folder, a string column), or ``None`` (unlabelled). :class:`Labels`
turns one pass of raw labels into the dataset's ``class_names``: the given names (a ``ClassLabel``), else for class
indices ``"0" … str(max)`` (so that a position in ``class_names`` is the class index), else the sorted distinct
names (the ImageFolder convention). :func:`label_index` maps a raw label back to its position.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fsspec.core import url_to_fs

MAX_CLASSES = 100_000  # distinct classes of a dataset (class indices: the largest index + 1)
MAX_SIDE_FILE_BYTES = 1024**2  # dataset_info.json, state.json, a .cls file


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its name, raw label and a loader of its encoded bytes (already checked against the
    per-image byte limit). ``stream``: ``load()`` only before the next sample is drawn (archives read as a stream);
    otherwise it may be called later, from any thread (manifests, tables)."""
    name: str
    label: int | str | None
    load: Callable[[], bytes]
    stream: bool = False


class Labels:
    """The raw labels of one pass, checked for consistency; :meth:`class_names` once the pass is complete."""

    def __init__(self, names: Sequence[str] | None = None):
        self.names = list(names) if names else None  # given class names (e.g. a ClassLabel); may be set later
        self._kind: str | None = None  # "none", "index" or "name"
        self._first = ""
        self._max_index = -1
        self._distinct: set[str] = set()

    def add(self, sample_name: str, label: int | str | None) -> None:
        kind = "none" if label is None else "index" if isinstance(label, int) else "name"
        if self._kind is None:
            self._kind, self._first = kind, sample_name
        elif kind != self._kind:
            raise ValueError(f"image {sample_name!r} has {_KINDS[kind]}, but image {self._first!r} has "
                             f"{_KINDS[self._kind]}: give every image a label of the same kind, or none")
        if kind == "index":
            if isinstance(label, bool) or label < 0:
                raise ValueError(f"image {sample_name!r} has the class index {label!r}; class indices are >= 0")
            if label >= MAX_CLASSES:
                raise ValueError(f"image {sample_name!r} has the class index {label}, more than the limit of "
                                 f"{MAX_CLASSES - 1}")
            self._max_index = max(self._max_index, label)
        elif kind == "name":
            if not label or len(label) > 200:
                raise ValueError(f"image {sample_name!r} has a class name of {len(label)} characters (1-200)")
            self._distinct.add(label)
            if len(self._distinct) > MAX_CLASSES:
                raise ValueError(f"the dataset has more than {MAX_CLASSES} distinct class names")

    def class_names(self) -> list[str]:
        """The dataset's class names (``[]``: unlabelled); ``ValueError`` for an index beyond the given names."""
        if self._kind in (None, "none"):
            return []
        if self._kind == "index":
            if self.names is not None:
                if self._max_index >= len(self.names):
                    raise ValueError(f"class index {self._max_index} is beyond the {len(self.names)} class names "
                                     f"({', '.join(self.names[:5])}{', …' if len(self.names) > 5 else ''})")
                return list(self.names)
            return [str(i) for i in range(self._max_index + 1)]
        return sorted(self._distinct)


_KINDS = {"none": "no label", "index": "a class index", "name": "a class name"}


def label_index(label: int | str | None, class_names: Sequence[str], positions: dict[str, int]) -> int | None:
    """The position in ``class_names`` of a raw label (``positions``: ``{name: position}``); ``ValueError`` for a
    label the dataset's registration did not see."""
    if label is None:
        return None
    if isinstance(label, int):
        if not 0 <= label < len(class_names):
            raise ValueError(f"class index {label} is not one of the dataset's {len(class_names)} classes")
        return label
    if label not in positions:
        raise ValueError(f"class {label!r} is not one of the dataset's classes; was it changed since it was "
                         "registered?")
    return positions[label]


# ---------------------------------------------------------------------------------------------- URIs
URI_SCHEMES = ("s3://", "gs://", "hf://", "file://")


def uri_allowed(uri: str, allowlist: Sequence[str]) -> bool:
    """Whether ``uri`` lies under one of the ``allowlist`` prefixes (and has no ``..`` part)."""
    return bool(uri) and ".." not in uri.split("/") and any(uri.startswith(prefix) for prefix in allowlist if prefix)


class NotAllowed(ValueError):
    """A URI off the allow-list (the API answers PERMISSION_DENIED)."""


def check_uri(uri: str, allowlist: Sequence[str], what: str = "dataset.uri") -> None:
    """:class:`NotAllowed` naming the allowed prefixes when ``uri`` is not allowed; ``ValueError`` for a scheme
    that is not read."""
    if not uri.startswith(URI_SCHEMES):
        raise ValueError(f"{what} {uri!r} is not a URI this server reads; accepted schemes: {', '.join(URI_SCHEMES)}")
    if not uri_allowed(uri, allowlist):
        raise NotAllowed(f"{what} {uri!r} is not on an allowed location; allowed prefixes: "
                              f"{', '.join(allowlist) or '(none configured: --dataset-uri-allowlist)'}")


def worker_allowlist() -> list[str]:
    """The URI prefixes a worker reads datasets from: ``GIGAUDIT_DATASET_URI_ALLOWLIST`` (a JSON list, or prefixes
    separated by commas), as the API's ``--dataset-uri-allowlist``."""
    raw = os.environ.get("GIGAUDIT_DATASET_URI_ALLOWLIST", "").strip()
    if raw.startswith("["):
        import json

        return [str(p) for p in json.loads(raw)]
    return [p.strip() for p in raw.split(",") if p.strip()]


def filesystem(uri: str):
    """``(fs, path)`` of a URI or a local path (fsspec)."""
    return url_to_fs(uri)


def is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def check_not_link(fs, path: str) -> None:
    """``ValueError`` when a local ``path`` is a symbolic link (it could lead off the allowed location)."""
    if is_local(fs) and os.path.islink(path):
        raise ValueError(f"{path!r} is a symbolic link; only regular files and folders are read in place")


def read_side_file(fs, path: str, limit: int = MAX_SIDE_FILE_BYTES) -> bytes:
    """A small file (metadata) read whole; ``ValueError`` when it is larger than ``limit``."""
    check_not_link(fs, path)
    with fs.open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.rsplit('/', 1)[-1]!r} holds more than {limit} bytes")
    return data
