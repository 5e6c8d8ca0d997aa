"""Dataset archives as batches of normalised image tensors (worker side), decoded on demand.

Every read goes through the checks of :mod:`gigaudit_server.storage.archives` (paths, links, sizes, bombs), and
memory does not grow with the dataset: an image's id is its index among the archive's image members, and every
pass reads the archive sequentially.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from gigaudit_server.storage.archives import Archive, DatasetLimits, decode_image


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
        with open(path, "rb") as f, Archive(f, limits) as archive:
            names = [member.name for member in archive.images()]
            self.class_names = archive.class_names
        self.names = names[start:stop]
        self.labels = None
        if self.class_names:
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
        wanted = sorted(set(indices))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < len(self.names):
            raise ValueError(f"image indices must lie in [0, {len(self.names)})")
        decoded = torch.cat(list(self._decode(wanted, len(wanted)))) if wanted else self._empty()
        row = {index: i for i, index in enumerate(wanted)}
        return decoded[torch.tensor([row[i] for i in indices], dtype=torch.long)]

    def _decode(self, indices, batch_size: int):
        """Batches of the images at sorted ``indices``, reading the archive once, in order."""
        mean, std = torch.tensor(self.mean).view(1, 3, 1, 1), torch.tensor(self.std).view(1, 3, 1, 1)
        height, width = self.size
        wanted, pixels = set(indices), []
        last = max(wanted, default=-1)
        with open(self.path, "rb") as f, Archive(f, self.limits) as archive:
            for position, member in enumerate(archive.images()):
                i = position - self.start
                if i > last:
                    break
                if i not in wanted:
                    continue
                image = decode_image(member.name, member.load(), self.limits).convert("RGB")
                pixels.append(np.asarray(image.resize((width, height), Image.BILINEAR)))
                if len(pixels) == batch_size or i == last:
                    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div(255)
                    pixels = []
                    yield (batch - mean) / std

    def _empty(self):
        return torch.zeros(0, 3, *self.size)


def load_images(path: str, size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], *,
                start: int = 0, stop: int | None = None, limits: DatasetLimits = DatasetLimits()):
    """Images ``[start, stop)`` at once: ``(images (N, 3, H, W), labels (N,) or None, names)`` (see
    :class:`ArchiveImages`)."""
    data = ArchiveImages(path, size, mean, std, start=start, stop=stop, limits=limits)
    images = torch.cat([b[0] if isinstance(b, tuple) else b for b in data]) if data.names else data._empty()
    return images, data.labels, data.names
