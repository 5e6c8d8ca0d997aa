"""Planted concepts (issue 2): on images whose parts are known, concepts find the parts and the graph finds the classes.

A PartsNet is trained in seconds on images that each hold the two parts of their class. Then:
(a) the concept that decomposes each PFV most strongly agrees with the planted part under that PFV (purity, NMI)
    far better than random concept vectors of the same number and norms, decomposed the same way; and the
    concepts' exemplars lie on parts;
(b) in the concept graph, the two strongest edges into each class come from the concepts whose exemplars lie on
    the two parts that define that class.
The analysed layers are ``features.1`` (8×8 PFVs) and ``features.2`` (4×4); ``features.3`` sees nearly the whole
image, so its PFVs mix parts by design.
"""
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

import gig
from gig.concepts import ConceptSet
from gig.concepts.extract import extract_concepts
from gig.layers import traced
from gig.pfv import to_pfvs
from gig.synthetic import CLASS_PARTS, make_parts_dataset, part_coverage, part_labels

LAYERS = ["features.1", "features.2"]
K = 8  # concepts per layer: six parts and the background need at least seven
LASSO = {"lam": 0.1, "nonneg": True}


@pytest.fixture(scope="module")
def planted(parts_net):
    torch.set_num_threads(1)
    model, _ = parts_net
    images, labels, masks = make_parts_dataset(120, seed=7)
    batches = [(images[i:i + 40], labels[i:i + 40]) for i in range(0, 120, 40)]
    concepts = extract_concepts(model, batches, LAYERS, n_concepts=K, pfvs_per_image=8, seed=0, relative_lam=False,
                                **LASSO)
    return model, batches, masks, concepts


def purity(truth: np.ndarray, assigned: np.ndarray) -> float:
    """Fraction of items whose assigned cluster's majority label is their own label."""
    table = np.zeros((assigned.max() + 1, truth.max() + 1))
    np.add.at(table, (assigned, truth), 1)
    return table.max(1).sum() / len(truth)


def agreement(concepts, layer, pfvs, truth):
    """(purity, NMI) of each PFV's strongest concept (or 'none') against the planted part label of its cell."""
    coef = concepts.decompose(layer, pfvs).reshape(-1, concepts.vectors(layer).shape[0])
    best, strongest = coef.max(1)
    assigned = torch.where(best > 0, strongest, coef.shape[1]).numpy()
    known = truth >= 0  # ambiguous cells (a sliver of a part) are left out
    return purity(truth[known], assigned[known]), normalized_mutual_info_score(truth[known], assigned[known])


def random_concepts(concepts, layer, seed):
    """Non-negative random vectors (like the ReLU activations) with the norms of the real concept vectors."""
    real = concepts.vectors(layer)
    vectors = torch.randn(real.shape, generator=torch.Generator().manual_seed(seed)).abs()
    vectors = vectors / vectors.norm(dim=1, keepdim=True) * real.norm(dim=1, keepdim=True)
    return ConceptSet.from_vectors({layer: vectors}, **LASSO)


@pytest.mark.parametrize("layer", LAYERS)
def test_concepts_agree_with_planted_parts_far_above_random_vectors(planted, layer, record_property):
    model, _, _, concepts = planted
    images, _, masks = make_parts_dataset(120, seed=8)  # fresh images
    with torch.no_grad():
        activation = traced(model).prefix([layer])(images)[layer]
    pfvs = to_pfvs(activation)
    truth = part_labels(masks, activation.shape[-1]).flatten().numpy()
    real_purity, real_nmi = agreement(concepts, layer, pfvs, truth)
    baseline = [agreement(random_concepts(concepts, layer, seed), layer, pfvs, truth) for seed in range(3)]
    best_purity, best_nmi = (max(values) for values in zip(*baseline))
    record_property("figures", {"layer": layer, "purity": real_purity, "nmi": real_nmi,
                                "random_purity": best_purity, "random_nmi": best_nmi})
    assert real_nmi > 0.55 and real_nmi > best_nmi + 0.2
    assert real_purity > 0.85 and real_purity > best_purity + 0.08


def test_exemplars_lie_on_planted_parts(planted):
    model, batches, masks, concepts = planted
    images = torch.cat([x for x, _ in batches])
    for layer in LAYERS:
        with torch.no_grad():
            grid = traced(model).prefix([layer])(images[:1])[layer].shape[-1]
        on_part = part_coverage(masks, grid).sum(1) > 0  # (n, cells): the cell shows some part
        exemplars = [e for per_concept in concepts.layers[layer].exemplars for e in per_concept]
        rate = np.mean([bool(on_part[e.image, e.position]) for e in exemplars])
        assert rate > 0.75 and rate > on_part.float().mean().item() + 0.25


def test_each_class_is_built_from_the_concepts_of_its_own_parts(planted):
    model, _, _, concepts = planted
    images, labels, masks = make_parts_dataset(60, seed=9)
    graph = gig.build_graph(model, [(images[:30], labels[:30]), (images[30:], labels[30:])], concepts, steps=8,
                            top_t=3)
    assert graph.evidence["completeness"]["features.2->logits"]["dataset_delta"] < 0.02
    truth = part_labels(masks, 4)  # features.2 has 4×4 positions

    def planted_part(nid):
        """The part under most of a concept's exemplars (in the graph's own images), and its share of them."""
        found = Counter(int(truth[e["image"], e["position"]]) for e in graph.node(nid)["exemplars"])
        part, n = found.most_common(1)[0]
        return part, n / sum(found.values())

    for c, parts in enumerate(CLASS_PARTS):
        top_two = graph.class_graph(c).incoming(f"logits:{c}")[:2]
        assert all(e["share"] > 0.15 for e in top_two) and sum(e["share"] for e in top_two) > 0.5
        found = [planted_part(e["source"]) for e in top_two]
        assert {part for part, _ in found} == set(parts), (c, top_two, found)
        assert all(share >= 0.75 for _, share in found)
