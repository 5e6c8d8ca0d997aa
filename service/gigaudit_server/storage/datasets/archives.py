"""Image datasets as tar (optionally gz/bz2/xz) or zip archives, read in one sequential pass with bounded memory.

Layout: ``class_name/image.png`` members (ImageFolder style, classes sorted by name) or ``image.png`` members
(flat, unlabelled). A labelled archive may hold masks in ``class_name/masks/image.png`` (probe sets: where the
named concept is, same file name as its image); masks are no images: they are checked like images, but not
counted, and :meth:`Archive.images` yields them only when asked (``masks=True``). An image's id is its index among the image members in archive order, so every pass reads
the archive sequentially (cheap for compressed tars too).

:func:`inspect_archive` is torch-free (the API calls it on upload); it refuses anything unsafe with a
``ValueError`` that names the offending member (``LimitExceeded`` for counts over the limits): ``..`` or absolute
paths, names that are not UTF-8 or hold control characters, links, devices, sparse files, archives that expand
beyond a size limit, images that declare more bytes or pixels than allowed (decompression bombs), images that do
not decode, and truncated or corrupt archives.

Memory stays bounded whatever an archive claims: compressed tars are decompressed by ``gzip``/``bz2``/``lzma`` file
objects, which cap the output of every decompression step, and read as a stream (``tarfile`` mode ``r|``, members
forgotten once passed); each member's declared size is checked against the running limits before it is read; a
member is read in 1 MiB chunks, never beyond its declared size; tar extension headers (pax, GNU long names) and a
zip's central directory are checked before they are read; an image is decoded only after its header passed the
pixel limit. ``gigaudit_server.worker.images`` (worker side, torch) streams batches through the same checks.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # what PIL may identify a member as; never EPS, PSD, TIFF, ...
CHUNK_BYTES = 1024**2
MAX_EXTENSION_HEADER_BYTES = 1024**2  # a tar pax header or GNU long name
MAX_ZIP_DIRECTORY_BYTES = 64 * 1024**2
_TAR_EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                   tarfile.SOLARIS_XHDTYPE)
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# What the decompressors and archive readers raise on damaged input.
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError, struct.error,
            NotImplementedError, RecursionError)


class LimitExceeded(ValueError):
    """An archive is valid but larger than the configured limits (the API answers RESOURCE_EXHAUSTED)."""


class SourceReadError(Exception):
    """Reading the archive's own file failed (the store, not the archive, is at fault)."""


@dataclass(frozen=True)
class DatasetLimits:
    max_images: int = 100_000
    max_total_bytes: int = 2 * 1024**3  # uncompressed, every member
    max_image_pixels: int = 4096 * 4096
    max_image_bytes: int = 64 * 1024**2  # one image file
    max_members: int | None = None  # every member, directories and skipped files too; None: 2 * max_images + 10_000
    max_block_bytes: int = 256 * 1024**2  # one Arrow record batch or parquet row group (columns read), one manifest

    @property
    def member_limit(self) -> int:
        return self.max_members if self.max_members is not None else 2 * self.max_images + 10_000


@dataclass(frozen=True)
class DatasetInfo:
    format: str  # "tar" | "zip" | "webdataset" | "parquet" | "hf_dataset" | "csv_manifest" | "jsonl_manifest"
    n_images: int
    class_names: list[str] = field(default_factory=list)  # [] for a flat, unlabelled dataset
    total_bytes: int = 0  # uncompressed size of the images
    image_sizes: dict[str, int] = field(default_factory=dict)  # see ImageSizeStats.summary; {} when not measured
    n_masks: int = 0  # class_name/masks/ members (probe sets)


class ImageSizeStats:
    """Min, max and median height and width of images, counted per distinct size (bounded by the distinct
    sizes, not the images)."""

    def __init__(self):
        self._counts: dict[tuple[int, int], int] = {}

    def add(self, height: int, width: int) -> None:
        self._counts[(height, width)] = self._counts.get((height, width), 0) + 1

    def summary(self) -> dict[str, int]:
        """``{min,max,median}_{height,width}`` (the lower median for an even count); ``{}`` when empty."""
        if not self._counts:
            return {}
        out = {}
        for axis, name in ((0, "height"), (1, "width")):
            counts: dict[int, int] = {}
            for size, n in self._counts.items():
                counts[size[axis]] = counts.get(size[axis], 0) + n
            values = sorted(counts)
            middle, seen = (sum(counts.values()) - 1) // 2, 0
            median = values[-1]
            for value in values:
                seen += counts[value]
                if seen > middle:
                    median = value
                    break
            out.update({f"min_{name}": values[0], f"max_{name}": values[-1], f"median_{name}": median})
        return out


def inspect_archive(fileobj: IO[bytes], limits: DatasetLimits = DatasetLimits()) -> DatasetInfo:
    """Check every member of a dataset archive and describe it (with its images' sizes, read as they are
    decoded); ``ValueError`` names the offending member."""
    sizes = ImageSizeStats()
    with Archive(fileobj, limits) as archive:
        for member in archive.images(masks=True):
            image = decode_image(member.name, member.load(), limits)
            if not member.mask:
                sizes.add(image.height, image.width)
        info = archive.info()
    return DatasetInfo(info.format, info.n_images, info.class_names, info.total_bytes, sizes.summary(),
                       info.n_masks)


@dataclass(frozen=True)
class Member:
    """An image member that passed the path, type, size and layout checks; :meth:`load` reads it."""

    name: str  # normalised member path
    size: int  # declared, uncompressed
    _open: Callable[[], IO[bytes]]
    _format: str
    mask: bool = False  # a class_name/masks/ member (yielded only by images(masks=True))

    def load(self) -> io.BytesIO:
        """The member's bytes, read in bounded chunks (only while the pass is at this member)."""
        data, read = io.BytesIO(), 0
        with _damage_named(self._format, self.name), self._open() as handle:
            while chunk := handle.read1(CHUNK_BYTES):
                read += len(chunk)
                if read > self.size:
                    raise ValueError(f"member {self.name!r} expands beyond its declared size of {self.size} bytes")
                data.write(chunk)
        if read < self.size:
            raise ValueError(f"{self._format} archive is truncated or corrupt: member {self.name!r} holds {read} of "
                             f"its declared {self.size} bytes")
        data.seek(0)
        return data

    @contextmanager
    def stream(self, max_read: int) -> Iterator[BoundedReader]:
        """The member as a file object for a streaming reader (Arrow IPC): never beyond its declared size, and no
        single read asks for more than ``max_read`` bytes (only while the pass is at this member)."""
        with _damage_named(self._format, self.name), self._open() as handle:
            yield BoundedReader(handle, self.name, self.size, max_read)


class BoundedReader(io.RawIOBase):
    """A read-only file object over ``handle`` that refuses to go beyond ``size`` bytes in all, or to hand out more
    than ``max_read`` bytes in one read (what bounds the memory of a reader that trusts lengths in its input)."""

    def __init__(self, handle: IO[bytes], name: str, size: int, max_read: int):
        super().__init__()
        self._handle, self.name, self._size, self._max_read, self._read = handle, name, size, max_read, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wanted = len(buffer)
        if wanted > self._max_read:
            raise ValueError(f"{self.name!r} asks for a block of {wanted} bytes, more than the limit of "
                             f"{self._max_read} bytes per block; write it in smaller batches")
        data = self._handle.read(min(wanted, self._size - self._read + 1))
        self._read += len(data)
        if self._read > self._size:
            raise ValueError(f"{self.name!r} expands beyond its declared size of {self._size} bytes")
        buffer[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._read


class Archive:
    """An opened tar or zip; :meth:`images` makes one checked, sequential pass over its image members."""

    def __init__(self, fileobj: IO[bytes], limits: DatasetLimits):
        self.limits = limits
        self._source = _Source(fileobj)
        self._closing: list = []
        magic = self._source.read(6)
        self._source.seek(0)
        if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06") or zipfile.is_zipfile(self._source):
            self._source.seek(0)
            self.format = "zip"
            self._zip = _open_zip(self._source, limits)
            self._closing.append(self._zip)
        else:
            self._source.seek(0)
            self.format, self._zip = "tar", None
        self.class_names: list[str] = []
        self.n_images = self.total_bytes = self.n_masks = 0
        self._complete = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for closable in reversed(self._closing):
            closable.close()

    def info(self) -> DatasetInfo:
        """What a complete pass of :meth:`images` found."""
        if not self._complete:
            raise RuntimeError("Archive.info() needs a complete pass of images() first")
        return DatasetInfo(self.format, self.n_images, self.class_names, self.total_bytes, n_masks=self.n_masks)

    def files(self) -> Iterator[Member]:
        """Every regular file member in archive order (hidden files and ``__MACOSX`` passed over), after the checks
        every format shares: member count, path, type, declared size and total expanded size. What a file may be
        (image, label, table) is the caller's check; a member is readable only while the pass is at it."""
        members, expanded = 0, 0
        raw_members = self._zip_members() if self._zip else self._tar_members()
        for raw_name, kind, size, opener in raw_members:
            members += 1
            if members > self.limits.member_limit:
                raise LimitExceeded(f"archive holds more than {self.limits.member_limit} members "
                                    f"(at member {raw_name!r})")
            name = _safe_name(raw_name)
            if size < 0:
                raise ValueError(f"{self.format} archive is corrupt: member {raw_name!r} declares {size} bytes")
            expanded += size
            if expanded > self.limits.max_total_bytes:
                raise ValueError(f"archive expands beyond {self.limits.max_total_bytes} bytes at member {raw_name!r}")
            if kind == "dir" or _ignored(name):
                continue
            if kind != "file":
                raise ValueError(f"member {raw_name!r} is a {kind}; only regular files are accepted")
            yield Member(name, size, opener, self.format)

    def images(self, masks: bool = False) -> Iterator[Member]:
        """The image members in archive order, each checked before it is yielded; ``ValueError`` names a bad one.

        ``masks``: also yield the ``class_name/masks/`` members (``Member.mask``), checked alike; else they are
        passed over (a probe set then reads as an ordinary labelled dataset)."""
        images, depth, classes, n_masks = 0, None, set(), 0
        self.total_bytes, self._complete = 0, False
        for member in self.files():
            name, size = member.name, member.size
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                raise ValueError(f"member {name!r} is not an image; accepted: {', '.join(IMAGE_EXTENSIONS)}")
            parts = name.count("/") + 1
            if parts == 3 and name.split("/")[1] == "masks" and depth != 1:  # a probe set's mask
                check_image_size(name, size, self.limits, "mask")
                n_masks += 1
                if n_masks > self.limits.max_images:
                    raise LimitExceeded(f"archive holds more than {self.limits.max_images} masks (at member "
                                        f"{name!r})")
                self.total_bytes += size
                if masks:
                    yield Member(name, size, member._open, self.format, mask=True)
                continue
            if parts > 2 or (depth is not None and parts != depth):
                raise ValueError(f"member {name!r} breaks the layout: use class_name/image.png for every image "
                                 "(labelled; masks of a probe set in class_name/masks/image.png) or image.png for "
                                 "every image (unlabelled)")
            depth = parts
            check_image_size(name, size, self.limits)
            images += 1
            if images > self.limits.max_images:
                raise LimitExceeded(f"archive holds more than {self.limits.max_images} images (at member {name!r})")
            if parts == 2:
                classes.add(name.split("/")[0])
            self.total_bytes += size
            yield member
        if not images:
            raise ValueError(f"archive holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        if n_masks and depth == 1:
            raise ValueError("masks (class_name/masks/image.png) need a labelled archive (class_name/image.png)")
        self.n_images, self.class_names, self.n_masks, self._complete = images, sorted(classes), n_masks, True

    # ------------------------------------------------------------------ formats
    def _tar_members(self):
        stream = _decompressed(self._source)
        if stream is not self._source:  # the caller's file stays open
            self._closing.append(stream)
        try:
            with _damage_named("tar"):
                tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedTarInfo, encoding="utf-8",
                                   errors="surrogateescape")
        except ValueError as exc:
            if isinstance(exc.__cause__, tarfile.ReadError):  # no tar header at the start
                raise ValueError("a dataset must be a tar (optionally gz, bz2 or xz) or a zip archive") from None
            raise
        self._closing.append(tar)
        while True:
            with _damage_named("tar"):
                member = tar.next()
            tar.members.clear()  # a stream is read once: forget the members passed (bounded memory)
            if member is None:
                return
            yield member.name, _member_kind(member), member.size, lambda member=member: tar.extractfile(member)

    def _zip_members(self):
        def opener(info: zipfile.ZipInfo, name: str):
            if info.compress_type not in _ZIP_METHODS:  # bzip2 and lzma would decompress unbounded steps
                raise ValueError(f"member {name!r} uses zip compression method {info.compress_type}; accepted: "
                                 f"{', '.join(_ZIP_METHODS.values())}")
            return self._zip.open(info)

        for info in self._zip.infolist():
            name = _zip_name(info)
            yield name, _member_kind(info), info.file_size, lambda info=info, name=name: opener(info, name)


class _Source:
    """The archive's file; its read errors become :class:`SourceReadError`, apart from damaged-archive errors."""

    def __init__(self, fileobj: IO[bytes]):
        self._file = fileobj

    def read(self, size: int = -1) -> bytes:
        try:
            return self._file.read(size)
        except OSError as exc:
            raise SourceReadError(f"cannot read the archive ({type(exc).__name__})") from exc

    def __getattr__(self, name):
        return getattr(self._file, name)


def _decompressed(source: _Source):
    """The tar stream inside ``source``: gzip, bzip2 and xz are decompressed in bounded steps."""
    magic = source.read(6)
    source.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(source)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(source)
    return source


@contextmanager
def _damage_named(archive_format: str, member: str | None = None):
    """Errors of damaged input → ``ValueError("… truncated or corrupt …")``, naming the member if known."""
    try:
        yield
    except SourceReadError:
        raise
    except ValueError:
        raise
    except _DAMAGED as exc:
        where = f" at member {member!r}" if member else ""
        raise ValueError(f"{archive_format} archive is truncated or corrupt{where} ({type(exc).__name__}: "
                         f"{exc})") from exc


class _CheckedTarInfo(tarfile.TarInfo):
    """Tar headers that refuse, before reading them, oversized extension headers, sparse files and damage."""

    @classmethod
    def fromtarfile(cls, tarfile_):
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as exc:
            if tarfile_.offset == 0:
                raise  # not a tar at all
            raise ValueError(f"tar archive is truncated or corrupt at byte {tarfile_.offset} ({exc})") from None

    def _proc_member(self, tarfile_):
        if self.type in _TAR_EXTENSIONS and not 0 <= self.size <= MAX_EXTENSION_HEADER_BYTES:
            raise ValueError(f"tar extension header at byte {self.offset} declares {self.size} bytes, more than "
                             f"the limit of {MAX_EXTENSION_HEADER_BYTES}")
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ValueError(f"member {self.name!r} is a sparse file; only regular files are accepted")
        return super()._proc_member(tarfile_)


def _open_zip(source: _Source, limits: DatasetLimits) -> zipfile.ZipFile:
    """The zip, once its central directory was found to hold at most ``limits.member_limit`` entries."""
    with _damage_named("zip"):
        end = zipfile._EndRecData(source)  # noqa: SLF001 - the stdlib's own end-of-directory reader
        if end is None:
            raise ValueError("zip archive is truncated or corrupt: it has no end of central directory record")
        size, offset = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]  # noqa: SLF001
        start = end[zipfile._ECD_LOCATION] - size  # noqa: SLF001
        if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:  # noqa: SLF001
            start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
        if size > MAX_ZIP_DIRECTORY_BYTES:
            raise LimitExceeded(f"zip central directory of {size} bytes exceeds the limit of "
                                f"{MAX_ZIP_DIRECTORY_BYTES} bytes")
        if start < 0 or offset < 0:
            raise ValueError("zip archive is truncated or corrupt: bad central directory offset")
        source.seek(start)
        directory = memoryview(source.read(size))
        position, entries = 0, 0
        while position + zipfile.sizeCentralDir <= len(directory):
            entries += 1
            if entries > limits.member_limit:
                raise LimitExceeded(f"archive holds more than {limits.member_limit} members")
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", directory, position + 28)
            position += zipfile.sizeCentralDir + name_len + extra_len + comment_len
        del directory
        source.seek(0)
        try:
            return zipfile.ZipFile(source)
        except UnicodeDecodeError as exc:
            raise ValueError(f"zip archive has a member name flagged UTF-8 that is not valid UTF-8 ({exc})") from None


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name as written: UTF-8 (flagged or not); other bytes stay as surrogates (refused later)."""
    if info.flag_bits & 0x800:
        return info.orig_filename
    raw = info.orig_filename.encode("cp437")  # zipfile decodes unflagged names as cp437; get the bytes back
    return raw.decode("utf-8", "surrogateescape")


def _safe_name(raw: str) -> str:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"member {raw!r} has a name that is not valid UTF-8") from None
    if any(unicodedata.category(c) == "Cc" for c in raw):
        raise ValueError(f"member {raw!r} has a control character in its name")
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


def check_image_size(name: str, size: int, limits: DatasetLimits, what: str = "image") -> None:
    """``ValueError`` when an image file declares more bytes than ``limits.max_image_bytes``."""
    if size > limits.max_image_bytes:
        raise ValueError(f"{what} {name!r} declares {size} bytes, more than the limit of {limits.max_image_bytes} "
                         "bytes per image (decompression bomb?)")


def decode_image(name: str, data: bytes | IO[bytes], limits: DatasetLimits) -> Image.Image:
    """The decoded image; ``ValueError`` for a decompression bomb or an image that does not decode."""
    try:
        image = Image.open(data if hasattr(data, "read") else io.BytesIO(data), formats=IMAGE_FORMATS)  # header only
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
