"""Clustering sampled PFVs into concept vectors, by name (DESIGN §1.2 step 2).

A method is a function ``(pfvs (N, C), k, seed) -> centroids (k, C)`` registered with :func:`register`:
``"bisecting_kmeans"`` (default, the paper's), ``"kmeans"`` and ``"nmf"`` (non-negative PFVs only; the atoms are
NMF's components), all from scikit-learn and deterministic for a seed.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.cluster import BisectingKMeans, KMeans
from sklearn.decomposition import NMF

CLUSTERINGS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {}
DEFAULT = "bisecting_kmeans"


def register(name: str):
    """Decorator adding a clustering function to the registry under ``name``."""

    def add(fn):
        CLUSTERINGS[name] = fn
        return fn

    return add


def check_method(method: str) -> str:
    if method not in CLUSTERINGS:
        raise ValueError(f"unknown clustering method {method!r}; valid: {', '.join(CLUSTERINGS)}")
    return method


def cluster(pfvs: torch.Tensor, k: int, method: str = DEFAULT, seed: int = 0) -> torch.Tensor:
    """Concept vectors ``(k, C)`` of ``pfvs`` ``(N, C)`` by ``method``; needs ``1 ≤ k ≤ N``."""
    check_method(method)
    if not isinstance(pfvs, torch.Tensor) or pfvs.dim() != 2 or 0 in pfvs.shape:
        raise ValueError(f"pfvs must be a non-empty (N, C) tensor, not {getattr(pfvs, 'shape', type(pfvs))}")
    if not (isinstance(k, int) and 1 <= k <= pfvs.shape[0]):
        raise ValueError(f"the number of concepts must be between 1 and the number of samples ({pfvs.shape[0]})")
    data = pfvs.detach().cpu().double().numpy()
    centroids = CLUSTERINGS[method](data, k, seed)
    return torch.as_tensor(np.asarray(centroids), dtype=pfvs.dtype)


def n_distinct(pfvs: torch.Tensor) -> int:
    return torch.unique(pfvs, dim=0).shape[0]


def resolve_n_concepts(n_concepts, layer: str, channels: int, samples: torch.Tensor) -> int:
    """``K`` of ``layer``: ``n_concepts`` (an int, a per-layer dict, or ``None`` = ``8 × C``, the paper's preset),
    clipped to the number of distinct sampled PFVs (more centroids than distinct points cannot be told apart)."""
    wanted = n_concepts.get(layer, 8 * channels) if isinstance(n_concepts, dict) else n_concepts or 8 * channels
    return min(wanted, n_distinct(samples))


def check_n_concepts(n_concepts, layers: list[str]) -> None:
    values = n_concepts.values() if isinstance(n_concepts, dict) else [] if n_concepts is None else [n_concepts]
    if isinstance(n_concepts, dict):
        unknown = set(n_concepts) - set(layers)
        if unknown:
            raise ValueError(f"n_concepts names layers {sorted(unknown)} that are not analysed: {', '.join(layers)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"n_concepts must be None, a positive int or a {{layer: positive int}} dict, not {value!r}")


@register("bisecting_kmeans")
def bisecting_kmeans(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    return BisectingKMeans(n_clusters=k, random_state=seed).fit(data).cluster_centers_


@register("kmeans")
def kmeans(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit(data).cluster_centers_


@register("nmf")
def nmf(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    if (data < 0).any():
        raise ValueError("nmf clustering needs non-negative PFVs (e.g. after a ReLU); use kmeans or bisecting_kmeans")
    return NMF(n_components=k, max_iter=400, random_state=seed).fit(data).components_
