"""Data for the core: image batches from any iterable, checked on the way in.

``data`` may be one image tensor ``(B, 3, H, W)``, or an iterable (a list, a ``DataLoader``, a generator) of
image tensors or of ``(images, labels)`` pairs. Whole-dataset passes stream it batch by batch; functions that need
two passes (concept extraction) ask for a re-iterable object via :func:`check_reiterable`.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn


class Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, H, W) float, finite
    labels: torch.Tensor | None  # (B,) long, or None when the data has no labels


def check_images(images) -> torch.Tensor:
    """``images`` itself when it is a finite float tensor ``(B, 3, H, W)`` with ``B ≥ 1``; else ``ValueError``."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a float tensor of shape (B, 3, H, W), not {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3 or 0 in images.shape:
        raise ValueError(f"images must have shape (B, 3, H, W) with B ≥ 1, not {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point, not {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def _check_labels(labels, batch: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (batch,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers of shape ({batch},), not {labels.dtype} {tuple(labels.shape)}")
    return labels.long()


def _batch(item) -> Batch:
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise ValueError(f"a batch must be images or (images, labels), not a sequence of {len(item)} items")
        images = check_images(item[0])
        return Batch(images, _check_labels(item[1], images.shape[0]))
    return Batch(check_images(item), None)


def iter_batches(data, device: torch.device | str | None = None) -> Iterator[Batch]:
    """Checked :class:`Batch` es of ``data`` (moved to ``device`` when given); ``ValueError`` when it is empty."""
    if isinstance(data, torch.Tensor):
        data = [data]
    elif not isinstance(data, Iterable):
        raise ValueError(f"data must be an image tensor or an iterable of batches, not {type(data).__name__}")
    empty = True
    for item in data:
        batch = _batch(item)
        empty = False
        if device is not None:
            batch = Batch(batch.images.to(device), None if batch.labels is None else batch.labels.to(device))
        yield batch
    if empty:
        raise ValueError("data yielded no images")


def n_batches(data) -> int | None:
    """The number of batches when ``data`` knows it (a tensor, a list, a ``DataLoader``), else ``None``."""
    if isinstance(data, torch.Tensor):
        return 1
    try:
        return len(data)
    except TypeError:
        return None


def check_reiterable(data) -> None:
    """``ValueError`` for one-shot iterators (generators): a second pass over them would see nothing."""
    if isinstance(data, Iterator):
        raise ValueError(
            "data is a one-shot iterator but two passes are needed; pass a list, a DataLoader or an object whose "
            "__iter__ starts over (e.g. a class whose __iter__ is a generator function)"
        )


@contextmanager
def eval_mode(model: nn.Module):
    """Run ``model`` in eval mode and restore every module's previous mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
