"""Clustering sampled PFVs into concept vectors, by name (DESIGN §1.2 step 2).

A method is a function ``(pfvs (N, C), k, seed) -> centroids (k, C)`` registered with :func:`register`:
``"kmeans"`` (default: the best of 4 k-means++ runs), ``"bisecting_kmeans"`` (the paper's) and ``"nmf"``
(non-negative PFVs only; the atoms are NMF's components), all from scikit-learn and deterministic for a seed.

The default was chosen by measurement on three planted datasets (``benchmarks/bench_concepts.py``; 26 layer ×
sample-seed cases, 3 clustering seeds each, NMI to the planted parts relative to plain k-means): k-means with 4
inits 1.01 on average (1 % of runs below 0.9), bisecting k-means 0.97 (6 % below 0.9).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.cluster import BisectingKMeans, KMeans
from sklearn.decomposition import NMF

CLUSTERINGS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {}
DEFAULT = "kmeans"
#: Concepts per layer when none is asked for (measured: ``benchmarks/bench_concepts.py``).
DEFAULT_N_CONCEPTS = 16
#: Distinct sampled PFVs per concept, at least: more concepts than this supports are clipped, with a warning.
MIN_SAMPLES_PER_CONCEPT = 4


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


def resolve_n_concepts(n_concepts, layer: str, channels: int, samples: torch.Tensor) -> tuple[int, int]:
    """``(wanted, K)`` of ``layer``: ``n_concepts`` (an int, a per-layer dict, ``"paper"`` = ``8 × C``, the
    paper's preset, or ``None`` = :data:`DEFAULT_N_CONCEPTS`), and ``K`` = that clipped to what the samples
    support: one concept per :data:`MIN_SAMPLES_PER_CONCEPT` distinct sampled PFVs (at least one)."""
    value = n_concepts.get(layer) if isinstance(n_concepts, dict) else n_concepts
    wanted = 8 * channels if value == "paper" else value or DEFAULT_N_CONCEPTS
    return wanted, min(wanted, max(1, n_distinct(samples) // MIN_SAMPLES_PER_CONCEPT))


def check_n_concepts(n_concepts, layers: list[str]) -> None:
    values = n_concepts.values() if isinstance(n_concepts, dict) else [] if n_concepts is None else [n_concepts]
    if isinstance(n_concepts, dict):
        unknown = set(n_concepts) - set(layers)
        if unknown:
            raise ValueError(f"n_concepts names layers {sorted(unknown)} that are not analysed: {', '.join(layers)}")
    for value in values:
        if value == "paper":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"n_concepts must be None, 'paper', a positive int or a {{layer: positive int}} dict, "
                             f"not {value!r}")


@register("bisecting_kmeans")
def bisecting_kmeans(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    return BisectingKMeans(n_clusters=k, random_state=seed).fit(data).cluster_centers_


@register("kmeans")
def kmeans(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(data).cluster_centers_


@register("nmf")
def nmf(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    if (data < 0).any():
        raise ValueError("nmf clustering needs non-negative PFVs (e.g. after a ReLU); use kmeans or bisecting_kmeans")
    return NMF(n_components=k, max_iter=400, random_state=seed).fit(data).components_
