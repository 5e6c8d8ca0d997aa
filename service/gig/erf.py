"""Instance-specific effective receptive fields (iERF) of PFVs, and the image crops they point at (DESIGN §1.1).

The iERF of the PFV at position ``p`` of layer ``a`` in image ``x``, along a direction ``v``, is the
gradient-times-input map ``|x ⊙ ∇_x ⟨X^a(x)[:, p], v⟩|`` summed over colour channels and normalised to sum 1.
One forward and one backward of the traced prefix give the maps of a whole batch (one PFV per image row); no hooks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gig.data import check_images, eval_mode
from gig.layers import traced
from gig.pfv import to_pfvs


def erf(model: torch.nn.Module, images: torch.Tensor, layer: str, positions: torch.Tensor,
        directions: torch.Tensor | None = None) -> torch.Tensor:
    """iERF maps ``(N, H, W)`` of the PFVs ``positions`` ``(N,)`` (flattened, row-major) of ``images`` ``(N, 3, H, W)``.

    ``directions`` ``(N, C)``: the direction ``v`` per row; ``None`` uses each PFV itself, normalised. Each map sums
    to 1, except where the PFV does not depend on the image at all (e.g. a dead ReLU): that map is all zeros.
    """
    images = check_images(images)
    layer = traced(model).check_layers([layer])[0]
    n = images.shape[0]
    if not isinstance(positions, torch.Tensor) or positions.shape != (n,) or positions.is_floating_point():
        raise ValueError(f"positions must be an integer tensor of shape ({n},): one position per image")
    with eval_mode(model), torch.enable_grad():
        x = images.detach().requires_grad_(True)
        pfvs = to_pfvs(traced(model).prefix([layer])(x)[layer])
        if positions.min() < 0 or positions.max() >= pfvs.shape[1]:
            raise ValueError(f"positions must lie in [0, {pfvs.shape[1]}) for layer {layer!r}")
        selected = pfvs[torch.arange(n, device=pfvs.device), positions.to(pfvs.device).long()]  # (N, C)
        if directions is None:
            directions = F.normalize(selected.detach(), dim=1)
        elif not isinstance(directions, torch.Tensor) or directions.shape != selected.shape:
            raise ValueError(f"directions must have shape {tuple(selected.shape)} (one per image), or be None")
        elif not directions.is_floating_point() or not torch.isfinite(directions).all():
            raise ValueError("directions must be finite floating-point values")
        (grad,) = torch.autograd.grad((selected * directions.to(selected)).sum(), x)
    maps = (x.detach() * grad).abs().sum(1)
    total = maps.sum((1, 2), keepdim=True)
    return torch.where(total > 0, maps / total.clamp_min(torch.finfo(maps.dtype).tiny), maps)


@dataclass(frozen=True)
class Crop:
    """An image region: ``pixels`` ``(h, w, 3)`` uint8, its ``box`` ``(top, left, bottom, right)`` (bottom/right
    exclusive) in the image, and the fraction of the iERF ``mass`` inside it."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    mass: float


def exemplar_crops(images: torch.Tensor, maps: torch.Tensor, size: int | None = None,
                   mean: tuple[float, float, float] | None = None,
                   std: tuple[float, float, float] | None = None) -> list[Crop]:
    """For each image, the ``size × size`` window (default: half the shorter side) holding the most iERF mass.

    Pixels are turned to uint8 by undoing ``(x − mean) / std`` when both are given (values then clipped to
    [0, 1]), else by stretching each image's own range to [0, 255].
    """
    images = check_images(images)
    n, _, height, width = images.shape
    if not isinstance(maps, torch.Tensor) or maps.shape != (n, height, width):
        raise ValueError(f"maps must have shape {(n, height, width)} (one map per image)")
    size = max(1, min(height, width) // 2) if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(height, width):
        raise ValueError(f"size must be an int between 1 and {min(height, width)}, not {size!r}")
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std (the normalisation to undo), or neither")
    if mean is not None and not (len(mean) == len(std) == 3):
        raise ValueError("mean and std must hold one value per colour channel (3 each)")
    window = _window_sums(maps, size)
    best = window.flatten(1).argmax(1)
    pixels = _to_uint8(images.detach(), mean, std)
    crops = []
    for i, index in enumerate(best.tolist()):
        top, left = divmod(index, window.shape[2])
        box = (top, left, top + size, left + size)
        total = float(maps[i].sum())
        mass = float(window[i].flatten()[index]) / total if total > 0 else 0.0
        crops.append(Crop(pixels[i, top : top + size, left : left + size].copy(), box, mass))
    return crops


def _window_sums(maps: torch.Tensor, size: int) -> torch.Tensor:
    """The sum of every ``size × size`` window of each map, ``(N, H − size + 1, W − size + 1)``: a summed-area
    table in float64, O(H·W) per map whatever the window (a pooling pass costs O(H·W·size²))."""
    table = F.pad(maps.detach().double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    return table[:, size:, size:] - table[:, :-size, size:] - table[:, size:, :-size] + table[:, :-size, :-size]


def _to_uint8(images: torch.Tensor, mean, std) -> np.ndarray:
    """``(N, 3, H, W)`` floats → ``(N, H, W, 3)`` uint8."""
    if mean is not None:
        mean, std = (torch.tensor(v, dtype=images.dtype, device=images.device).view(1, 3, 1, 1) for v in (mean, std))
        unit = (images * std + mean).clamp(0, 1)
    else:
        low = images.amin((1, 2, 3), keepdim=True)
        high = images.amax((1, 2, 3), keepdim=True)
        unit = (images - low) / (high - low).clamp_min(1e-12)
    return (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
