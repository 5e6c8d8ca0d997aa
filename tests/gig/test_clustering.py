"""Clustering registry: methods by name, determinism for a seed, the n_concepts rule, NMF's sign check."""
import pytest
import torch

from gig.concepts.clustering import CLUSTERINGS, check_n_concepts, cluster, register, resolve_n_concepts


def _blobs(n=120, c=6, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(k, c, generator=g) * 5
    return centres, centres[torch.arange(n) % k] + 0.05 * torch.rand(n, c, generator=g)


@pytest.mark.parametrize("method", ["bisecting_kmeans", "kmeans", "nmf"])
def test_methods_are_deterministic_and_shaped(method):
    _, x = _blobs()
    a, b = cluster(x, 4, method, seed=3), cluster(x, 4, method, seed=3)
    assert a.shape == (4, 6) and a.dtype == x.dtype
    assert torch.equal(a, b)


@pytest.mark.parametrize("method", ["bisecting_kmeans", "kmeans"])
def test_centroids_find_the_blobs(method):
    centres, x = _blobs()
    found = cluster(x, 4, method, seed=0)
    distance = torch.cdist(centres, found).min(dim=1).values
    assert distance.max() < 0.2


def test_nmf_atoms_span_the_data_and_need_nonnegative_input():
    _, x = _blobs()
    atoms = cluster(x, 4, "nmf")
    assert (atoms >= 0).all()
    coef = torch.linalg.lstsq(atoms.T.double(), x.T.double()).solution
    assert ((coef.T @ atoms.double() - x).norm() / x.norm()) < 0.05
    with pytest.raises(ValueError, match="non-negative"):
        cluster(x - 10, 4, "nmf")


def test_registry_extends_by_decorator():
    @register("first_rows")
    def first_rows(data, k, seed):
        return data[:k]

    try:
        _, x = _blobs()
        assert torch.equal(cluster(x, 3, "first_rows"), x[:3])
    finally:
        del CLUSTERINGS["first_rows"]


def test_n_concepts_rule():
    x = torch.randn(200, 4)
    assert resolve_n_concepts(None, "a", 4, x) == (16, 16)  # the default
    assert resolve_n_concepts("paper", "a", 4, x) == (32, 32)  # 8 × C
    assert resolve_n_concepts("paper", "a", 16, x) == (128, 50)  # clipped: one concept per 4 distinct samples
    assert resolve_n_concepts(7, "a", 4, x) == (7, 7)
    assert resolve_n_concepts({"b": 3}, "a", 4, x) == (16, 16) and resolve_n_concepts({"a": 3}, "a", 4, x) == (3, 3)
    assert resolve_n_concepts(None, "a", 4, torch.ones(50, 4)) == (16, 1)


@pytest.mark.parametrize("call", [
    lambda: cluster(torch.randn(10, 3), 2, "dbscan"),
    lambda: cluster(torch.randn(10, 3), 11),
    lambda: cluster(torch.randn(10, 3), 0),
    lambda: cluster(torch.randn(10), 2),
    lambda: check_n_concepts(0, ["a"]),
    lambda: check_n_concepts(2.5, ["a"]),
    lambda: check_n_concepts({"zzz": 3}, ["a"]),
    lambda: check_n_concepts({"a": -1}, ["a"]),
    lambda: check_n_concepts("papers", ["a"]),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError) as info:
        call()
    if "dbscan" in str(info.value):
        assert "bisecting_kmeans" in str(info.value)  # lists the registry
