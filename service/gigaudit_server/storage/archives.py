"""Image datasets as tar (optionally gz/bz2/xz) or zip archives.

Layout: ``class_name/image.png`` members (ImageFolder style, classes sorted by name) or ``image.png`` members
(flat, unlabelled). An image's id is its index among the image members in archive order, so every pass reads
the archive sequentially (cheap for compressed tars too).

:func:`inspect_archive` is torch-free (the API calls it on upload); it refuses anything unsafe and names the
offending member: ``..`` or absolute paths, links, devices, archives that expand beyond a size limit, images
that declare more pixels than allowed (decompression bombs) and images that do not decode.
``gigaudit_server.worker.images`` (worker side, torch) streams them as batches through the same checks.
"""
from __future__ import annotations

import io
import re
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class LimitExceeded(ValueError):
    """An archive is valid but larger than the configured limits (the API answers RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class DatasetLimits:
    max_images: int = 100_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed
    max_image_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class DatasetInfo:
    format: str  # "tar" | "zip"
    n_images: int
    class_names: list[str] = field(default_factory=list)  # [] for a flat, unlabelled dataset
    total_bytes: int = 0  # uncompressed size of the images


@dataclass(frozen=True)
class _Entry:
    name: str  # normalised member path
    size: int
    member: tarfile.TarInfo | zipfile.ZipInfo


def inspect_archive(fileobj: IO[bytes], limits: DatasetLimits = DatasetLimits()) -> DatasetInfo:
    """Check every member of a dataset archive and describe it; ``ValueError`` names the offending member."""
    with Archive(fileobj, limits) as archive:
        for entry in archive.entries:
            decode_image(entry.name, archive.read(entry), limits)
        return DatasetInfo(archive.format, len(archive.entries), archive.class_names,
                           sum(e.size for e in archive.entries))


class Archive:
    """An opened tar or zip whose members passed the path, type, size and layout checks."""

    def __init__(self, fileobj: IO[bytes], limits: DatasetLimits):
        self.limits = limits
        if zipfile.is_zipfile(fileobj):
            fileobj.seek(0)
            self.format, self._zip, self._tar = "zip", zipfile.ZipFile(fileobj), None
            members = [(m.filename, m) for m in self._zip.infolist()]
        else:
            fileobj.seek(0)
            try:
                self._tar = tarfile.open(fileobj=fileobj, mode="r:*")
            except tarfile.TarError as exc:
                raise ValueError("a dataset must be a tar (optionally gz, bz2 or xz) or a zip archive") from exc
            self.format, self._zip = "tar", None
            members = ((m.name, m) for m in self._tar)
        self.entries, self.class_names = self._check(members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        (self._zip or self._tar).close()

    def _check(self, members) -> tuple[list[_Entry], list[str]]:
        entries, total, depth = [], 0, None
        for raw_name, member in members:
            name = _safe_name(raw_name)
            kind = _member_kind(member)
            if kind == "dir" or _ignored(name):
                continue
            if kind != "file":
                raise ValueError(f"member {raw_name!r} is a {kind}; only regular files are accepted")
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise ValueError(f"member {raw_name!r} is not an image; accepted: {', '.join(IMAGE_EXTENSIONS)}")
            parts = name.count("/") + 1
            if parts > 2 or (depth is not None and parts != depth):
                raise ValueError(f"member {raw_name!r} breaks the layout: use class_name/image.png for every image "
                                 "(labelled) or image.png for every image (unlabelled)")
            depth = parts
            size = member.size if isinstance(member, tarfile.TarInfo) else member.file_size
            total += size
            if total > self.limits.max_total_bytes:
                raise ValueError(f"archive expands beyond {self.limits.max_total_bytes} bytes at member {raw_name!r}")
            entries.append(_Entry(name, size, member))
            if len(entries) > self.limits.max_images:
                raise LimitExceeded(f"archive holds more than {self.limits.max_images} images (at member {raw_name!r})")
        if not entries:
            raise ValueError(f"archive holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes = sorted({e.name.split("/")[0] for e in entries}) if depth == 2 else []
        return entries, classes

    def read(self, entry: _Entry) -> bytes:
        """The member's bytes; ``ValueError`` when it holds more than it declares."""
        handle = self._zip.open(entry.member) if self._zip else self._tar.extractfile(entry.member)
        with handle:
            data = handle.read(entry.size + 1)
        if len(data) > entry.size:
            raise ValueError(f"member {entry.name!r} expands beyond its declared size of {entry.size} bytes")
        return data


def _safe_name(raw: str) -> str:
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw):
        raise ValueError(f"member {raw!r} has an absolute path")
    if "\\" in raw:
        raise ValueError(f"member {raw!r} contains a backslash; use '/' as the path separator")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"member {raw!r} points outside the archive ('..')")
    return "/".join(parts)


def _ignored(name: str) -> bool:
    """Hidden files and macOS resource forks."""
    return any(p.startswith(".") or p == "__MACOSX" for p in name.split("/"))


def _member_kind(member: tarfile.TarInfo | zipfile.ZipInfo) -> str:
    if isinstance(member, zipfile.ZipInfo):
        mode = member.external_attr >> 16
        if stat.S_ISLNK(mode):
            return "symbolic link"
        if member.flag_bits & 0x1:
            return "encrypted file"
        return "dir" if member.is_dir() else "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.isdev():
        return "device or fifo"
    return "file" if member.isfile() else "special member"


def decode_image(name: str, data: bytes, limits: DatasetLimits) -> Image.Image:
    """The decoded image; ``ValueError`` for a decompression bomb or an image that does not decode."""
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {name!r} is a decompression bomb ({exc})") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ... for bad files
        raise ValueError(f"image {name!r} is corrupt or not an image ({type(exc).__name__}: {exc})") from exc
    if image.width * image.height > limits.max_image_pixels:
        raise ValueError(f"image {name!r} declares {image.width}x{image.height} pixels, more than the limit "
                         f"of {limits.max_image_pixels} (decompression bomb?)")
    try:
        image.load()
    except Exception as exc:
        raise ValueError(f"image {name!r} is corrupt ({type(exc).__name__}: {exc})") from exc
    return image
