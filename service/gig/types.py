"""The types of gig's public signatures (what `gig.extract_concepts`, `gig.build_graph`, ... accept)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

Images = torch.Tensor
"""A float tensor ``(B, 3, H, W)``, preprocessed like the model's input."""

Batch = Images | tuple[Images, torch.Tensor]
"""Images, or ``(images, labels)`` with integer labels ``(B,)``."""

Data = Images | Iterable[Batch]
"""One image tensor, or an iterable of batches (a list, a ``DataLoader``, a generator): see :mod:`gig.data`."""

Device = torch.device | str | None
"""Where to run (``None``: where the model's parameters are)."""

Progress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``; ``total`` is ``None`` when unknown."""

ConceptCounts = int | str | Mapping[str, int] | None
"""Concepts per layer: ``None`` (the default), ``"paper"``, an int, or ``{layer: int}``."""

Steps = int | str | None
"""Quadrature steps: an int, ``None`` (the rule's default) or ``"auto"``."""
