"""Every dataset format behind one interface (torch-free): detect the format from content, read the samples,
inspect a dataset into a :class:`~gigaudit_server.storage.datasets.archives.DatasetInfo`, digest data read in place.

Formats (``FORMATS``) and where they come from:

- ``tar`` / ``zip``: ImageFolder archives (:mod:`.archives`), uploaded;
- ``webdataset``: one shard (uploaded) or a folder of ``.tar`` shards (:mod:`.webdataset_shards`);
- ``parquet``: one file (uploaded) or a folder of ``.parquet`` files (:mod:`.parquet_files`);
- ``hf_dataset``: a ``save_to_disk`` folder, or a tar or zip of one (:mod:`.hf_saved`);
- ``csv_manifest`` / ``jsonl_manifest``: manifests of image URIs, by URI only (:mod:`.manifests`).

A *location* is a local path or an fsspec URI (``file://``, ``s3://``, ``gs://``, ``hf://``): the artifact of an
uploaded dataset, or the URI of one registered in place. Every reader applies the checks of :mod:`.archives`
(paths, links, bombs, byte, pixel and count limits); a refusal is a ``ValueError`` (``LimitExceeded`` for limits,
``NotAllowed`` for URIs off the allow-list).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from gigaudit_server.storage.datasets.archives import (
    IMAGE_EXTENSIONS,
    Archive,
    DatasetInfo,
    DatasetLimits,
    ImageSizeStats,
    LimitExceeded,
    check_image_size,
    decode_image,
    inspect_archive,
)
from gigaudit_server.storage.datasets.hf_saved import DICT, MARKERS, HFSavedReader
from gigaudit_server.storage.datasets.manifests import ManifestReader
from gigaudit_server.storage.datasets.parallel import ordered_map
from gigaudit_server.storage.datasets.parquet_files import MAGIC as PARQUET_MAGIC
from gigaudit_server.storage.datasets.parquet_files import ParquetReader
from gigaudit_server.storage.datasets.samples import Labels, Sample, check_not_link, filesystem
from gigaudit_server.storage.datasets.webdataset_shards import WebDatasetReader, is_webdataset_member

FORMATS = ("tar", "zip", "webdataset", "parquet", "hf_dataset", "csv_manifest", "jsonl_manifest")
MANIFESTS = ("csv_manifest", "jsonl_manifest")
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
CHUNK_BYTES = 1024**2


class ArchiveReader:
    """An ImageFolder tar or zip: ``class_name/image.png`` (labelled by folder) or ``image.png`` (unlabelled)."""

    def __init__(self, fs, path: str, limits: DatasetLimits):
        self.fs, self.path, self.limits = fs, path, limits
        self.format = "tar"
        self.given_class_names = None

    def samples(self):
        with self.fs.open(self.path, "rb") as handle, Archive(handle, self.limits) as archive:
            self.format = archive.format
            for member in archive.images():
                label = member.name.split("/")[0] if "/" in member.name else None
                yield Sample(member.name, label, lambda member=member: member.load().getvalue(), stream=True)


def detect_format(location: str, limits: DatasetLimits = DatasetLimits()) -> str:
    """The format of the dataset at ``location``, from its content (a folder: from the files it holds)."""
    fs, path = _existing(location)
    if fs.isdir(path):
        return _folder_format(fs, path)[0]
    with fs.open(path, "rb") as handle:
        head = handle.read(4096)
        if head.startswith(PARQUET_MAGIC):
            return "parquet"
        handle.seek(0)
        if head.startswith(_ARCHIVE_MAGIC) or _is_tar(handle):
            handle.seek(0)
            return _archive_format(handle, limits)
    text = head.decode("utf-8", "ignore") if _is_text(head) else None
    if not text or not text.strip():
        raise ValueError("not a dataset: accepted are tar or zip archives (ImageFolder, WebDataset shard, saved "
                         "Hugging Face dataset), parquet files, and CSV or JSONL manifests of image URIs")
    return "jsonl_manifest" if text.lstrip("\ufeff \t\r\n").startswith("{") else "csv_manifest"


def open_dataset(location: str, format: str, limits: DatasetLimits = DatasetLimits(), *, image_column: str = "",
                 label_column: str = "", allowlist: Sequence[str] = ()):
    """A reader of the dataset at ``location`` in ``format``: ``reader.samples()`` makes one checked pass (a
    :class:`~.samples.Sample` per image, in order); ``reader.given_class_names`` are the class names the data
    names (a ``ClassLabel``), once a pass is complete. ``allowlist``: where a manifest's images may be."""
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; valid formats are: {', '.join(FORMATS)}")
    fs, path = _existing(location)
    folder = fs.isdir(path)
    if format in ("tar", "zip"):
        return ArchiveReader(fs, path, limits)
    if format == "webdataset":
        return WebDatasetReader(fs, _folder_format(fs, path)[1] if folder else [path], limits)
    if format == "parquet":
        return ParquetReader(fs, _folder_format(fs, path)[1] if folder else [path], limits, image_column,
                             label_column)
    if format == "hf_dataset":
        return HFSavedReader(fs, path, limits, image_column, label_column, archive=not folder)
    return ManifestReader(location, format.removesuffix("_manifest"), limits, allowlist, image_column, label_column)


def inspect_dataset(location: str, limits: DatasetLimits = DatasetLimits(), *, format: str | None = None,
                    image_column: str = "", label_column: str = "", allowlist: Sequence[str] = (),
                    threads: int = 1, progress: Callable[[int, int | None], None] | None = None) -> DatasetInfo:
    """Check and describe the dataset at ``location`` (its format detected unless given): every image decoded
    (``threads`` at a time), its labels tallied into class names; ``progress(done, None)`` every 64 images."""
    format = format or detect_format(location, limits)
    if format in ("tar", "zip"):
        fs, path = filesystem(location)
        with fs.open(path, "rb") as handle:
            return inspect_archive(handle, limits)
    reader = open_dataset(location, format, limits, image_column=image_column, label_column=label_column,
                          allowlist=allowlist)
    if format in MANIFESTS:
        reader.check_reachable()
    sizes, labels, count, total = ImageSizeStats(), Labels(), 0, 0

    def decoded(item):
        sample, data = item
        data = sample.load() if data is None else data
        image = decode_image(sample.name, data, limits)
        return sample, len(data), image.height, image.width

    items = ((s, s.load() if s.stream else None) for s in reader.samples())
    for sample, size, height, width in ordered_map(decoded, items, threads):
        labels.add(sample.name, sample.label)
        sizes.add(height, width)
        count, total = count + 1, total + size
        if total > limits.max_total_bytes:
            raise LimitExceeded(f"the dataset's images exceed {limits.max_total_bytes} bytes at {sample.name!r}")
        if progress is not None and count % 64 == 0:
            progress(count, None)
    if not count:
        raise ValueError("the dataset holds no images")
    labels.names = reader.given_class_names
    return DatasetInfo(format, count, labels.class_names(), total, sizes.summary())


def content_digest(location: str) -> tuple[str, int]:
    """``(sha256, size)`` of a file; of a folder, the sha256 over its files' ``relative path, size, sha256`` lines
    (sorted) and their total size."""
    fs, path = filesystem(location)
    if not fs.isdir(path):
        return _file_digest(fs, path)
    lines, total = [], 0
    for entry in sorted(fs.ls(path, detail=False)):
        if fs.isdir(entry):
            continue
        sha, size = _file_digest(fs, entry)
        lines.append(f"{entry.rsplit('/', 1)[-1]}\t{size}\t{sha}\n")
        total += size
    return hashlib.sha256("".join(lines).encode()).hexdigest(), total


# ---------------------------------------------------------------------------------------------- internals
def _existing(location: str):
    """``(fs, path)`` of a location that exists and is no link; ``ValueError`` otherwise."""
    fs, path = filesystem(location)
    check_not_link(fs, path)
    if not fs.exists(path):
        raise ValueError(f"there is no dataset at {location!r}")
    return fs, path


def _file_digest(fs, path: str) -> tuple[str, int]:
    check_not_link(fs, path)
    digest, size = hashlib.sha256(), 0
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _folder_format(fs, path: str) -> tuple[str, list[str]]:
    """``(format, files read)`` of a folder read in place."""
    entries = sorted(fs.ls(path, detail=False))
    names = {entry.rsplit("/", 1)[-1]: entry for entry in entries}
    if DICT in names:
        raise ValueError(f"{path!r} is a Hugging Face DatasetDict ({DICT}); register the folder of one split")
    if any(marker in names for marker in MARKERS):
        return "hf_dataset", []
    for suffix, format in ((".tar", "webdataset"), (".parquet", "parquet")):
        files = [entry for name, entry in sorted(names.items()) if name.endswith(suffix)]
        if files:
            return format, files
    shown = ", ".join(sorted(names)[:8]) or "nothing"
    raise ValueError(f"folder {path!r} is no dataset this server reads: it holds {shown}; a folder holds WebDataset "
                     "shards (.tar), parquet files (.parquet), or a Hugging Face dataset saved with save_to_disk "
                     "(dataset_info.json, state.json, .arrow)")


def _archive_format(handle, limits: DatasetLimits) -> str:
    """``hf_dataset``, ``webdataset``, or the archive's own format (an ImageFolder tar or zip), from its member
    names (checked as they pass)."""
    with Archive(handle, limits) as archive:
        for member in archive.files():
            base = member.name.rsplit("/", 1)[-1]
            if base.lower().endswith(IMAGE_EXTENSIONS):  # before the pass skips over it: a declared bomb stops here
                check_image_size(member.name, member.size, limits)
            if base in (*MARKERS, DICT) or base.endswith(".arrow"):
                return "hf_dataset"
            if is_webdataset_member(member.name):
                return "webdataset" if archive.format == "tar" else archive.format
        return archive.format


def _is_text(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) reads as UTF-8 text without control characters."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the block
            return False
        text = head[:exc.start].decode("utf-8")
    return not any(ord(c) < 32 and c not in "\t\r\n" for c in text)


def _is_tar(handle) -> bool:
    block = handle.read(512)
    return len(block) == 512 and block[257:262] == b"ustar"
