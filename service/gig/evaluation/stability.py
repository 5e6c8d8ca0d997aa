"""Stability of concepts and graphs.

- :func:`match_concepts`: two sets of concept vectors (e.g. extracted with two seeds) are matched one to one by the
  Hungarian algorithm on cosine similarity; the mean matched cosine is 1 for identical sets (in any order).
- :func:`compare_graphs`: two concept graphs (e.g. built on clean and on noisy images) agree on their ``top_k``
  edges by ``|mean|`` (overlap in ``[0, 1]``) and on the ranking of every edge weight (Spearman correlation over
  the union of their edges, a missing edge counting as weight 0);
- :func:`noise_stability`: the graphs of the same images, clean and with Gaussian noise, compared that way.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr

from gig.build import build_graph


def match_concepts(vectors_a: torch.Tensor, vectors_b: torch.Tensor) -> dict:
    """Hungarian matching of the rows of ``(K_a, C)`` and ``(K_b, C)`` on cosine similarity.

    Returns ``{"mean_cosine", "min_cosine", "matched"}`` (``matched`` = ``min(K_a, K_b)`` pairs).
    """
    for name, v in (("vectors_a", vectors_a), ("vectors_b", vectors_b)):
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or 0 in v.shape:
            raise ValueError(f"{name} must be a non-empty (K, C) tensor, not {getattr(v, 'shape', type(v))}")
    if vectors_a.shape[1] != vectors_b.shape[1]:
        raise ValueError(f"the two sets have {vectors_a.shape[1]} and {vectors_b.shape[1]} channels; they must match")
    a = torch.nn.functional.normalize(vectors_a.double().cpu(), dim=1)
    b = torch.nn.functional.normalize(vectors_b.double().cpu(), dim=1)
    cosine = (a @ b.T).numpy()
    rows, cols = linear_sum_assignment(cosine, maximize=True)
    matched = cosine[rows, cols]
    return {"mean_cosine": float(matched.mean()), "min_cosine": float(matched.min()), "matched": int(len(rows))}


def concept_stability(concepts_a, concepts_b) -> dict[str, dict]:
    """:func:`match_concepts` for every layer the two concept sets share."""
    shared = [layer for layer in concepts_a.layers if layer in concepts_b.layers]
    if not shared:
        raise ValueError(f"the concept sets share no layer: {list(concepts_a.layers)} vs {list(concepts_b.layers)}")
    return {layer: match_concepts(concepts_a.vectors(layer), concepts_b.vectors(layer)) for layer in shared}


def edge_weights(graph) -> dict[tuple[str, str], float]:
    """``{(source, target): mean}`` of a :class:`~gig.graph.ConceptGraph` or its ``to_dict()``."""
    data = graph.to_dict() if hasattr(graph, "to_dict") else graph
    if not isinstance(data, dict) or "edges" not in data:
        raise ValueError("graph must be a ConceptGraph or its to_dict() with an 'edges' list")
    return {(e["source"], e["target"]): float(e["mean"]) for e in data["edges"]}


def compare_graphs(graph_a, graph_b, top_k: int = 20) -> dict:
    """``{"top_k_overlap", "rank_correlation", "top_k", "n_edges"}`` of two graphs (see the module docstring)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    a, b = edge_weights(graph_a), edge_weights(graph_b)
    union = sorted(set(a) | set(b))
    if not union:
        raise ValueError("both graphs have no edges")
    k = min(top_k, len(union))
    top_a, top_b = _top(a, k), _top(b, k)
    weights_a = np.array([a.get(e, 0.0) for e in union])
    weights_b = np.array([b.get(e, 0.0) for e in union])
    flat_a, flat_b = np.ptp(weights_a) == 0, np.ptp(weights_b) == 0
    if len(union) < 2 or (flat_a and flat_b):
        correlation = None  # no ranking on either side: nothing to compare
    elif flat_a or flat_b:
        correlation = 0.0  # one graph ranks its edges, the other ranks none (e.g. all its codes are zero)
    else:
        correlation = float(spearmanr(weights_a, weights_b).statistic)
    return {"top_k_overlap": len(top_a & top_b) / k, "rank_correlation": correlation, "top_k": k,
            "n_edges": len(union)}


def _top(weights: dict, k: int) -> set:
    return set(sorted(weights, key=lambda e: (-abs(weights[e]), e))[:k])


def noise_stability(model, images: torch.Tensor, labels, concepts, graph=None, noise_std: float = 0.05,
                    top_k: int = 20, seed: int = 0, **build) -> dict:
    """Compare the graph of ``images`` (``graph`` when already built on exactly them) with the graph of the same
    images plus Gaussian noise of ``noise_std`` times their standard deviation (seeded). ``build`` goes to
    :func:`gig.build.build_graph`. Returns :func:`compare_graphs`' figures and ``noise_std``."""
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std > 0:
        raise ValueError(f"noise_std must be a positive number, got {noise_std!r}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    noisy = images + noise_std * images.std() * noise
    if graph is None:
        graph = build_graph(model, _data(images, labels), concepts, **build)
    other = build_graph(model, _data(noisy, labels), concepts, **build)
    return {**compare_graphs(graph, other, top_k=top_k), "noise_std": noise_std}


def _data(images, labels):
    return [images] if labels is None else [(images, labels)]
