"""Model-randomisation sanity check (Adebayo et al. 2018) for concept graphs.

An explanation that survives the destruction of what the model learnt explains nothing about the model. A deep
copy of the model gets freshly initialised parameters (every module's ``reset_parameters``, batch-norm statistics
reset), the graph is built again on the same images with the same concepts, and the two graphs are compared
(:func:`~gig.evaluation.stability.compare_graphs`): top-k edge overlap and rank correlation should be far below 1.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from gig.build import build_graph
from gig.evaluation.stability import compare_graphs


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-initialised (seeded) and normalisation statistics reset."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        touched = False
        for module in clone.modules():
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
                touched = True
    if not touched:
        raise ValueError(f"{type(model).__name__} has no module with reset_parameters(); cannot randomise it")
    return clone


def weight_randomization(model: nn.Module, data, concepts, graph=None, layers=None, steps: int | None = None,
                         top_t: int = 5, top_k: int = 20, seed: int = 0, **build) -> dict:
    """Compare the graph of ``model`` on ``data`` (``graph`` when already built on exactly that data) with the
    graph of its randomised copy. Returns :func:`compare_graphs`' figures (``top_k_overlap``, ``rank_correlation``,
    ``top_k``, ``n_edges``)."""
    if graph is None:
        graph = build_graph(model, data, concepts, layers=layers, steps=steps, top_t=top_t, **build)
    randomized = build_graph(randomized_copy(model, seed), data, concepts, layers=layers, steps=steps, top_t=top_t,
                             **build)
    return compare_graphs(graph, randomized, top_k=top_k)
