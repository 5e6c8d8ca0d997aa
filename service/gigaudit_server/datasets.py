"""Image datasets as tar (optionally gz/bz2/xz) or zip archives.

Layout: ``class_name/image.png`` members (ImageFolder style, classes sorted by name) or ``image.png`` members
(flat, unlabelled). An image's id is its index among the image members in archive order, so every pass reads
the archive sequentially (cheap for compressed tars too).

:func:`inspect_archive` is torch-free (the API calls it on upload); it refuses anything unsafe and names the
offending member: ``..`` or absolute paths, links, devices, archives that expand beyond a size limit, images
that declare more pixels than allowed (decompression bombs) and images that do not decode.
:class:`ArchiveImages` (worker side) streams them as re-iterable batches of normalised tensors, decoded on
demand through the same checks, so memory does not grow with the dataset; :func:`load_images` loads a slice at once.
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
    with _Archive(fileobj, limits) as archive:
        for entry in archive.entries:
            _decode(entry.name, archive.read(entry), limits)
        return DatasetInfo(archive.format, len(archive.entries), archive.class_names,
                           sum(e.size for e in archive.entries))


class ArchiveImages:
    """Images ``[start, stop)`` of the archive at ``path`` as re-iterable batches, decoded on demand.

    Iterating yields ``images`` ``(B, 3, H, W)`` or ``(images, labels)`` batches of ``batch_size``: RGB, resized to
    ``size`` (``int`` or ``(H, W)``), normalised with ``mean``/``std``. ``labels`` are indices into the sorted
    class folders, or ``class_map[index]`` when a map (dataset class → model class) is given. ``names`` and
    ``labels`` describe the slice; :meth:`select` decodes chosen images of it.
    """

    def __init__(self, path: str, size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                 start: int = 0, stop: int | None = None, batch_size: int = 32, class_map: Sequence[int] | None = None,
                 limits: DatasetLimits = DatasetLimits()):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be a positive int or (height, width), not {size!r}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need 3 values each, std positive; got mean={mean}, std={std}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.path, self.mean, self.std, self.batch_size, self.limits = path, list(mean), list(std), batch_size, limits
        self.start = start
        with open(path, "rb") as f, _Archive(f, limits) as archive:
            self.class_names = archive.class_names
            self.names = [e.name for e in archive.entries[start:stop]]
        self.labels = None
        if self.class_names:
            import torch

            index = {c: i for i, c in enumerate(self.class_names)}
            self.labels = torch.tensor([index[n.split("/")[0]] for n in self.names], dtype=torch.long)
            if class_map is not None:
                self.labels = torch.as_tensor(list(class_map), dtype=torch.long)[self.labels]

    def __len__(self) -> int:
        return -(-len(self.names) // self.batch_size)

    def __iter__(self):
        first = 0
        for images in self._decode(range(len(self.names)), self.batch_size):
            labels = None if self.labels is None else self.labels[first:first + images.shape[0]]
            first += images.shape[0]
            yield images if labels is None else (images, labels)

    def select(self, indices: Sequence[int]):
        """The images at ``indices`` (positions in this slice), in that order, ``(len(indices), 3, H, W)``."""
        import torch

        wanted = sorted(set(indices))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < len(self.names):
            raise ValueError(f"image indices must lie in [0, {len(self.names)})")
        decoded = torch.cat(list(self._decode(wanted, len(wanted)))) if wanted else self._empty()
        row = {index: i for i, index in enumerate(wanted)}
        return decoded[torch.tensor([row[i] for i in indices], dtype=torch.long)]

    def _decode(self, indices, batch_size: int):
        """Batches of the images at sorted ``indices``, reading the archive once, in order."""
        import numpy as np
        import torch

        mean, std = torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)
        height, width = self.size
        wanted, pixels = set(indices), []
        last = max(wanted, default=-1)
        with open(self.path, "rb") as f, _Archive(f, self.limits) as archive:
            entries = archive.entries[self.start:self.start + last + 1]
            for i, entry in enumerate(entries):
                if i not in wanted:
                    continue
                image = _decode(entry.name, archive.read(entry), self.limits).convert("RGB")
                pixels.append(np.asarray(image.resize((width, height), Image.BILINEAR)))
                if len(pixels) == batch_size or i == last:
                    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div(255)
                    pixels = []
                    yield (batch - mean) / std

    def _empty(self):
        import torch

        return torch.zeros(0, 3, *self.size)


def load_images(path: str, size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                start: int = 0, stop: int | None = None, limits: DatasetLimits = DatasetLimits()):
    """Images ``[start, stop)`` at once: ``(images (N, 3, H, W), labels (N,) or None, names)`` (see
    :class:`ArchiveImages`)."""
    import torch

    data = ArchiveImages(path, size, mean, std, start=start, stop=stop, limits=limits)
    images = torch.cat([b[0] if isinstance(b, tuple) else b for b in data]) if data.names else data._empty()
    return images, data.labels, data.names


class _Archive:
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


def _decode(name: str, data: bytes, limits: DatasetLimits) -> Image.Image:
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
