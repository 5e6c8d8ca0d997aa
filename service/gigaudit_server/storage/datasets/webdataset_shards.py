"""WebDataset shards (torch-free): tar files whose consecutive members share a key, ``key.jpg`` (or png, webp,
bmp, jpeg) and ``key.cls`` (the class index as text); other members of a sample (``.json``, ``.txt``, …) are
checked and passed over.

A key is the member's path up to the first dot of its file name (the WebDataset convention). Every shard is read
as an archive by :mod:`~gigaudit_server.storage.datasets.archives` (paths, links, sizes, counts, damage); the members of a
sample must be consecutive, and a sample holds one image. Labels are class indices: the dataset's class names are
``"0" … str(largest index)`` (a name's position is its index).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from gigaudit_server.storage.datasets.archives import IMAGE_EXTENSIONS, Archive, DatasetLimits, LimitExceeded, check_image_size
from gigaudit_server.storage.datasets.samples import Sample, check_not_link

IMAGE_KEYS = tuple(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
MAX_CLS_BYTES = 64
_INDEX = re.compile(r"\s*(\d{1,9})\s*")


class WebDatasetReader:
    """The shards ``paths`` on ``fs``, in that order, as one dataset."""

    format = "webdataset"

    def __init__(self, fs, paths: Sequence[str], limits: DatasetLimits):
        if not paths:
            raise ValueError("no WebDataset shards (.tar) to read")
        self.fs, self.paths, self.limits = fs, list(paths), limits
        self.given_class_names = None

    def samples(self) -> Iterator[Sample]:
        count = 0
        for path in self.paths:
            shard = path.rsplit("/", 1)[-1] if len(self.paths) > 1 else ""
            check_not_link(self.fs, path)
            with self.fs.open(path, "rb") as handle:
                for sample in _shard_samples(handle, shard, self.limits):
                    count += 1
                    if count > self.limits.max_images:
                        raise LimitExceeded(f"the shards hold more than {self.limits.max_images} images")
                    yield sample
        if not count:
            raise ValueError("the WebDataset shards hold no images")


def is_webdataset_member(name: str) -> bool:
    """Whether an archive member marks a WebDataset shard (a ``.cls`` label)."""
    return split_key(name)[1] == "cls"


def split_key(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name: the extension is everything after the file name's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower() if dot else ""


def _shard_samples(handle, shard: str, limits: DatasetLimits) -> Iterator[Sample]:
    finished: set[str] = set()
    key, image, label = None, None, None

    def sample():
        where = f"{shard}/{key}" if shard else key
        if image is None:
            raise ValueError(f"sample {where!r} has no image ({', '.join(IMAGE_KEYS)})")
        data = image
        return Sample(where, label, lambda: data)

    with Archive(handle, limits) as archive:
        if archive.format != "tar":
            raise ValueError("a WebDataset shard is a tar file, not a zip")
        for member in archive.files():
            member_key, extension = split_key(member.name)
            if member_key != key:
                if key is not None:
                    yield sample()
                    finished.add(key)
                if member_key in finished:
                    raise ValueError(f"member {member.name!r}: the members of sample {member_key!r} are not "
                                     "consecutive in the shard")
                key, image, label = member_key, None, None
            if extension in IMAGE_KEYS:
                if image is not None:
                    raise ValueError(f"sample {key!r} holds more than one image (at member {member.name!r})")
                check_image_size(member.name, member.size, limits)
                image = member.load().getvalue()
            elif extension == "cls":
                if member.size > MAX_CLS_BYTES:
                    raise ValueError(f"label {member.name!r} declares {member.size} bytes; a .cls holds a class "
                                     "index")
                text = member.load().getvalue().decode("utf-8", "replace")
                match = _INDEX.fullmatch(text)
                if not match:
                    raise ValueError(f"label {member.name!r} holds {text[:20]!r}, not a class index (e.g. '3')")
                label = int(match.group(1))
        if key is not None:
            yield sample()
