"""Pointwise feature vectors: a layer's activation seen as ``(batch, positions, channels)``.

CNN activations ``(B, C, H, W)`` have ``H·W`` positions; ViT tokens ``(B, T, D)`` have ``T``; a flat ``(B, C)``
output has one. :func:`to_pfvs` and :func:`from_pfvs` convert both ways without copying more than needed.
"""
from __future__ import annotations

import torch


def to_pfvs(activation: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H·W, C)``; ``(B, T, D)`` unchanged; ``(B, C) -> (B, 1, C)``."""
    if activation.dim() == 4:
        b, c, h, w = activation.shape
        return activation.reshape(b, c, h * w).transpose(1, 2)
    if activation.dim() == 3:
        return activation
    if activation.dim() == 2:
        return activation.unsqueeze(1)
    raise ValueError(f"cannot read pointwise feature vectors from an activation of shape {tuple(activation.shape)}")


def from_pfvs(pfvs: torch.Tensor, like: torch.Size | tuple) -> torch.Tensor:
    """Inverse of :func:`to_pfvs` for an activation of shape ``like`` (channels may differ: ``pfvs.shape[-1]``)."""
    like = tuple(like)
    channels = pfvs.shape[-1]
    if len(like) == 4:
        b, _, h, w = like
        return pfvs.transpose(1, 2).reshape(b, channels, h, w)
    if len(like) == 3:
        return pfvs
    if len(like) == 2:
        return pfvs.squeeze(1)
    raise ValueError(f"cannot rebuild an activation of shape {like}")


def spatial_shape(like: torch.Size | tuple) -> tuple[int, ...]:
    """Positions as a grid: ``(H, W)`` for CNN activations, ``(T,)`` for tokens, ``(1,)`` for vectors."""
    like = tuple(like)
    return like[2:] if len(like) == 4 else (like[1],) if len(like) == 3 else (1,)
