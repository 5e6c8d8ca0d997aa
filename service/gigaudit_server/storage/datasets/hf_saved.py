"""Hugging Face datasets written by ``save_to_disk`` (torch-free): a folder with ``dataset_info.json``,
``state.json`` and Arrow IPC stream files (``data-00000-of-0000N.arrow``), read with pyarrow, never with
``datasets`` (no code of the dataset runs).

The folder is read where it is (by URI), or from a tar or zip of it (uploaded), through the archive checks of
:mod:`~gigaudit_server.storage.datasets.archives` (paths, links, sizes, counts). The Arrow files are read one record batch at
a time through a :class:`~gigaudit_server.storage.datasets.archives.BoundedReader`, so no batch may claim more than
``DatasetLimits.max_block_bytes``. Class names come from the ``ClassLabel`` feature in ``dataset_info.json``. A
``DatasetDict`` (``dataset_dict.json``, one folder per split) is refused: register one split's folder.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from gigaudit_server.storage.datasets.archives import Archive, BoundedReader, DatasetLimits, LimitExceeded
from gigaudit_server.storage.datasets.image_tables import choose_columns, class_label_names, table_samples
from gigaudit_server.storage.datasets.samples import MAX_SIDE_FILE_BYTES, Sample, check_not_link, read_side_file

INFO, STATE, DICT = "dataset_info.json", "state.json", "dataset_dict.json"
MARKERS = (INFO, STATE)


class HFSavedReader:
    """A saved Hugging Face dataset: the folder ``path`` on ``fs``, or (``archive=True``) a tar or zip file of it."""

    format = "hf_dataset"

    def __init__(self, fs, path: str, limits: DatasetLimits, image_column: str = "", label_column: str = "", *,
                 archive: bool = False):
        self.fs, self.path, self.limits, self.archive = fs, path.rstrip("/"), limits, archive
        self.image_column, self.label_column = image_column, label_column
        self.given_class_names: list[str] | None = None
        self._features: dict = {}
        self._label: str | None = None

    def samples(self) -> Iterator[Sample]:
        yield from (self._archive_samples() if self.archive else self._folder_samples())
        if self._label:
            self.given_class_names = class_label_names(self._features, self._label)

    # ------------------------------------------------------------------ a folder read in place
    def _folder_samples(self) -> Iterator[Sample]:
        check_not_link(self.fs, self.path)
        names = {entry.rsplit("/", 1)[-1] for entry in self.fs.ls(self.path, detail=False)}
        if DICT in names:
            raise ValueError(f"{self.path!r} is a DatasetDict ({DICT}); register the folder of one split")
        if INFO in names:
            self._features = _info_features(read_side_file(self.fs, f"{self.path}/{INFO}"), INFO)
        files = _data_files(read_side_file(self.fs, f"{self.path}/{STATE}")) if STATE in names else \
            sorted(n for n in names if n.endswith(".arrow"))
        if not files:
            raise ValueError(f"{self.path!r} holds no Arrow files (.arrow) of a saved dataset")
        total, rows = 0, [0]
        for file in files:
            if file not in names:
                raise ValueError(f"{STATE} lists {file!r}, which the folder does not hold")
            path = f"{self.path}/{file}"
            check_not_link(self.fs, path)
            size = self.fs.size(path)
            total += size
            if total > self.limits.max_total_bytes:
                raise ValueError(f"the dataset's Arrow files exceed {self.limits.max_total_bytes} bytes at {file!r}")
            with self.fs.open(path, "rb") as handle:
                yield from self._arrow(BoundedReader(handle, file, size, self.limits.max_block_bytes), file, rows)

    # ------------------------------------------------------------------ a tar or zip of the folder
    def _archive_samples(self) -> Iterator[Sample]:
        folder, rows = None, [0]
        with self.fs.open(self.path, "rb") as handle, Archive(handle, self.limits) as archive:
            for member in archive.files():
                parent, _, base = member.name.rpartition("/")
                if base == DICT:
                    raise ValueError(f"the archive holds a DatasetDict ({member.name!r}); pack the folder of one "
                                     "split")
                if base not in MARKERS and not base.endswith(".arrow"):
                    continue  # e.g. a README: checked as a member, not read
                if folder is None:
                    folder = parent
                elif parent != folder:
                    raise ValueError(f"member {member.name!r} is not in the dataset's folder {folder or '.'!r}: "
                                     "pack one saved dataset")
                if base == INFO:
                    self._features = _info_features(_small(member), member.name)
                elif base == STATE:
                    _data_files(_small(member))  # checked; the archive's order is the order read
                else:
                    with member.stream(self.limits.max_block_bytes) as reader:
                        yield from self._arrow(reader, member.name, rows)
        if folder is None:
            raise ValueError("the archive holds no saved Hugging Face dataset (no .arrow files)")

    # ------------------------------------------------------------------ one Arrow stream file
    def _arrow(self, reader, file: str, rows: list[int]) -> Iterator[Sample]:
        try:
            stream = pa.ipc.open_stream(reader)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"{file!r} is not an Arrow stream file ({exc})") from None
        image, self._label = choose_columns(stream.schema, self.image_column, self.label_column,
                                            f"Arrow file {file!r}")

        def batches():
            while True:
                try:
                    batch = stream.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowInvalid, OSError) as exc:
                    raise ValueError(f"Arrow file {file!r} is truncated or corrupt ({exc})") from None
                rows[0] += len(batch)
                if rows[0] > self.limits.max_images:
                    raise LimitExceeded(f"the dataset holds more than {self.limits.max_images} rows (images)")
                yield batch
        yield from table_samples(batches(), image, self._label, file.rsplit("/", 1)[-1].removesuffix(".arrow"),
                                 self.limits)


def _small(member) -> bytes:
    if member.size > MAX_SIDE_FILE_BYTES:
        raise ValueError(f"member {member.name!r} declares {member.size} bytes, more than {MAX_SIDE_FILE_BYTES}")
    return member.load().read()


def _info_features(raw: bytes, where: str) -> dict:
    try:
        features = json.loads(raw).get("features") or {}
    except (ValueError, AttributeError):
        raise ValueError(f"{where!r} is not a JSON object") from None
    return features if isinstance(features, dict) else {}


def _data_files(raw: bytes) -> list[str]:
    """The Arrow files ``state.json`` lists, each a plain file name."""
    try:
        files = [entry["filename"] for entry in json.loads(raw)["_data_files"]]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{STATE} does not list the dataset's Arrow files (_data_files)") from None
    for name in files:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") \
                or not name.endswith(".arrow"):
            raise ValueError(f"{STATE} lists {name!r}; data files are plain .arrow file names in the folder")
    return files
