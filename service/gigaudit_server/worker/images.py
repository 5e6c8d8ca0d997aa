"""Datasets as batches of model inputs (worker side), decoded on demand, in parallel and in order.

Every format of :mod:`gigaudit_server.storage.datasets.sources` (ImageFolder tar/zip, WebDataset shards, parquet,
saved Hugging Face datasets, manifests of image URIs), uploaded or read in place, goes through its reader's checks
(paths, links, sizes, bombs, allow-list). An image's id is its position in the dataset's order, and every pass
reads the data sequentially; images are decoded and preprocessed (``gig.preprocessing.Preprocessing``, the one
transform of the model) on a pool of ``threads`` threads (PIL decodes and resizes without the GIL), at most a
batch ahead, so memory is bounded by the batch whatever the dataset's size.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import torch

from gig.preprocessing import Preprocessing
from gigaudit_server.storage.datasets.archives import DatasetLimits, decode_image
from gigaudit_server.storage.datasets.sources import detect_format, open_dataset
from gigaudit_server.storage.datasets.parallel import ordered_map
from gigaudit_server.storage.datasets.samples import Labels, label_index

PROGRESS_EVERY = 64  # images between progress reports of an indexing pass


def default_threads() -> int:
    """Decoding threads: ``GIGAUDIT_DECODE_THREADS``, else the CPUs up to 8."""
    configured = os.environ.get("GIGAUDIT_DECODE_THREADS", "").strip()
    if configured:
        threads = int(configured)
        if threads < 1:
            raise ValueError(f"GIGAUDIT_DECODE_THREADS must be at least 1, not {configured!r}")
        return threads
    return max(1, min(8, os.cpu_count() or 1))


class ArchiveImages:
    """Images ``[start, stop)`` of the dataset at ``location`` as re-iterable batches, decoded on demand.

    ``location``: a local path or an fsspec URI; ``format``: one of ``sources.FORMATS`` (``None``:
    detected from the content, one extra pass). Iterating yields ``images`` ``(B, 3, H, W)`` or
    ``(images, labels)`` batches of ``batch_size``, each image ``preprocessing(image)``. ``labels`` are positions
    in ``class_names`` (the registered dataset's; ``None``: found by this pass), or ``class_map[position]`` when a
    map (dataset class → model class) is given. ``names`` and ``labels`` describe the slice; :meth:`select` decodes
    chosen images of it. ``progress(done, total)`` follows the pass that indexes the dataset and every
    :meth:`select`; ``threads`` decode in parallel (``None``: :func:`default_threads`).
    """

    def __init__(self, location: str, preprocessing: Preprocessing, *, format: str | None = None,
                 image_column: str = "", label_column: str = "", class_names: Sequence[str] | None = None,
                 allowlist: Sequence[str] = (), start: int = 0, stop: int | None = None, batch_size: int = 32,
                 class_map: Sequence[int] | None = None, limits: DatasetLimits = DatasetLimits(),
                 threads: int | None = None, progress: Callable[[int, int | None], None] | None = None,
                 expected_images: int | None = None):
        if not isinstance(preprocessing, Preprocessing):
            raise ValueError(f"preprocessing must be a gig.preprocessing.Preprocessing, not "
                             f"{type(preprocessing).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.path = location  # kept for readers of the raw archive (probe sets)
        self.preprocessing, self.batch_size, self.limits = preprocessing, batch_size, limits
        self.size, self.mean, self.std = preprocessing.size, list(preprocessing.mean), list(preprocessing.std)
        self.threads = default_threads() if threads is None else threads
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")
        self.progress = progress
        self.format = format or detect_format(location, limits)
        self._open = lambda: open_dataset(location, self.format, limits, image_column=image_column,
                                          label_column=label_column, allowlist=allowlist)
        self.start = start
        names, raw_labels, tally = [], [], Labels()
        reader = self._open()
        for position, sample in enumerate(reader.samples()):
            names.append(sample.name)
            raw_labels.append(sample.label)
            tally.add(sample.name, sample.label)
            if progress is not None and (position + 1) % PROGRESS_EVERY == 0:
                progress(position + 1, expected_images)
        if progress is not None:
            progress(len(names), len(names))
        if class_names is None:
            tally.names = reader.given_class_names
            class_names = tally.class_names()
        self.class_names = list(class_names)
        self.names = names[start:stop]
        self.labels = None
        if self.class_names and any(label is not None for label in raw_labels):
            positions = {name: i for i, name in enumerate(self.class_names)}
            self.labels = torch.tensor([label_index(label, self.class_names, positions)
                                        for label in raw_labels[start:stop]], dtype=torch.long)
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
        wanted = sorted(set(indices))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < len(self.names):
            raise ValueError(f"image indices must lie in [0, {len(self.names)})")
        done, batches = 0, []
        for batch in self._decode(wanted, self.batch_size):
            batches.append(batch)
            done += batch.shape[0]
            if self.progress is not None:
                self.progress(done, len(wanted))
        decoded = torch.cat(batches) if batches else self._empty()
        row = {index: i for i, index in enumerate(wanted)}
        return decoded[torch.tensor([row[i] for i in indices], dtype=torch.long)]

    def _decode(self, indices, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches of the images at sorted ``indices``, reading the dataset once, in order."""
        wanted = set(indices)
        last = max(wanted, default=-1)
        if last < 0:
            return

        def chosen():
            for position, sample in enumerate(self._open().samples()):
                i = position - self.start
                if i > last:
                    return
                if i in wanted:  # a streamed sample is read now, in this thread; the others where decoded
                    yield sample, (sample.load() if sample.stream else None)

        def preprocessed(item) -> torch.Tensor:
            sample, data = item
            image = decode_image(sample.name, sample.load() if data is None else data, self.limits)
            return self.preprocessing(image)

        pending = []
        for tensor in ordered_map(preprocessed, chosen(), self.threads, window=max(2 * self.threads, batch_size)):
            pending.append(tensor)
            if len(pending) == batch_size:
                yield torch.stack(pending)
                pending = []
        if pending:
            yield torch.stack(pending)

    def _empty(self):
        return torch.zeros(0, 3, *self.size)


def load_images(location: str, preprocessing: Preprocessing, *, start: int = 0, stop: int | None = None,
                limits: DatasetLimits = DatasetLimits(), **options):
    """Images ``[start, stop)`` at once: ``(images (N, 3, H, W), labels (N,) or None, names)`` (``options``: those
    of :class:`ArchiveImages`)."""
    data = ArchiveImages(location, preprocessing, start=start, stop=stop, limits=limits, **options)
    images = torch.cat([b[0] if isinstance(b, tuple) else b for b in data]) if data.names else data._empty()
    return images, data.labels, data.names
