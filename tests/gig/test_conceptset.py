"""ConceptSet: decomposition API, statistics, storage without pickle, model checks."""
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gig.concepts import ConceptSet, Exemplar, LayerConcepts


def _set(lam=0.1, nonneg=False, k=12, c=4):
    g = torch.Generator().manual_seed(0)
    return ConceptSet.from_vectors({"a": torch.randn(k, c, generator=g), "b": torch.randn(5, 3, generator=g)},
                                   lam=lam, nonneg=nonneg)


def test_decompose_shapes_and_reconstruct():
    cs = _set()
    pfvs = torch.randn(2, 7, 4)
    coef = cs.decompose("a", pfvs)
    assert coef.shape == (2, 7, 12)
    assert cs.reconstruct("a", coef).shape == (2, 7, 4)
    assert cs.vectors("a").shape == (12, 4)
    assert list(cs.layers) == ["a", "b"]


def test_lam_zero_reconstructs_exactly():
    cs = _set(lam=0.0)
    pfvs = torch.randn(3, 5, 4)
    torch.testing.assert_close(cs.reconstruct("a", cs.decompose("a", pfvs)), pfvs, atol=1e-5, rtol=1e-5)
    stats = cs.decomposition_stats("a", pfvs)
    assert stats["relative_error"] < 1e-5 and stats["l0"] == 1.0


def test_stats_reflect_lambda():
    pfvs = torch.randn(40, 4)
    small, large = _set(lam=0.01).decomposition_stats("a", pfvs), _set(lam=1.0).decomposition_stats("a", pfvs)
    assert large["l0"] < small["l0"]
    assert large["relative_error"] > small["relative_error"]


def test_nonneg_coefficients():
    coef = _set(nonneg=True).decompose("a", torch.randn(30, 4))
    assert (coef >= 0).all() and (coef > 0).any()


def test_edited_vectors_are_used():
    cs = _set(lam=0.0)
    pfvs = torch.randn(5, 4)
    before = cs.decompose("a", pfvs)
    cs.layers["a"].vectors.mul_(2)
    torch.testing.assert_close(cs.decompose("a", pfvs), before / 2)


def test_decompose_ignores_autograd():
    pfvs = torch.randn(3, 4, requires_grad=True)
    assert not _set().decompose("a", pfvs).requires_grad


def _full_set():
    cs = _set()
    lc = cs.layers["a"]
    lc.frequency = torch.rand(12)
    lc.mean_coefficient = torch.rand(12)
    lc.exemplars = [[Exemplar(i, 3, 0.5 + i)] for i in range(12)]
    cs.method, cs.params = "kmeans", {"seed": 3, "n_concepts": {"a": 12, "b": 5}}
    return cs


def _same(x, y):
    assert list(x.layers) == list(y.layers)
    for name in x.layers:
        a, b = x.layers[name], y.layers[name]
        assert torch.equal(a.vectors, b.vectors)
        for stat in ("frequency", "mean_coefficient"):
            assert (getattr(a, stat) is None and getattr(b, stat) is None) or torch.equal(getattr(a, stat),
                                                                                       getattr(b, stat))
        assert a.exemplars == b.exemplars
    assert (x.lam, x.nonneg, x.solver, x.method, x.params) == (y.lam, y.nonneg, y.solver, y.method, y.params)


def test_save_load_round_trip_without_pickle(tmp_path):
    cs = _full_set()
    cs.save(tmp_path / "set")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.json", "set.safetensors"]
    loaded = ConceptSet.load(tmp_path / "set")
    _same(cs, loaded)
    pfvs = torch.randn(6, 4)
    torch.testing.assert_close(loaded.decompose("a", pfvs), cs.decompose("a", pfvs))
    header = json.loads((tmp_path / "set.json").read_text())  # plain JSON
    assert header["exemplars"]["a"][2] == [[2, 3, 2.5]]
    tensors = load_file(tmp_path / "set.safetensors")  # plain safetensors, no pickle protocol header
    assert set(tensors) == {"a/vectors", "a/frequency", "a/mean_coefficient", "b/vectors"}
    assert (tmp_path / "set.safetensors").read_bytes()[:1] != b"\x80"


def test_bytes_round_trip():
    cs = _full_set()
    _same(cs, ConceptSet.from_bytes(cs.to_bytes()))


def test_bad_storage(tmp_path):
    with pytest.raises(ValueError, match="no concept set"):
        ConceptSet.load(tmp_path / "missing")
    with pytest.raises(ValueError):
        ConceptSet.from_bytes(b"garbage")
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    (tmp_path / "x.safetensors").write_bytes(_set().to_bytes())
    with pytest.raises(ValueError, match="format"):
        ConceptSet.load(tmp_path / "x")


@pytest.mark.parametrize("call", [
    lambda cs: cs.decompose("nope", torch.randn(2, 4)),
    lambda cs: cs.decompose("a", torch.randn(2, 5)),
    lambda cs: cs.decompose("a", torch.tensor([[1.0, 2.0, float("inf"), 0.0]])),
    lambda cs: cs.decompose("a", torch.ones(2, 4, dtype=torch.long)),
    lambda cs: cs.decompose("a", torch.randn(2, 4), init=torch.zeros(2, 3)),
    lambda cs: cs.reconstruct("a", torch.randn(2, 5)),
    lambda cs: cs.vectors("zzz"),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call(_set())


@pytest.mark.parametrize("make", [
    lambda: ConceptSet({}),
    lambda: ConceptSet.from_vectors({"a": torch.randn(3, 2)}, lam=-1),
    lambda: ConceptSet.from_vectors({"a": torch.randn(3, 2)}, lam=0, nonneg=True),
    lambda: ConceptSet.from_vectors({"a": torch.randn(3, 2)}, bogus=1),
    lambda: ConceptSet.from_vectors([torch.randn(3, 2)]),
    lambda: ConceptSet.from_vectors({"a": [[1.0, 2.0]]}),
    lambda: LayerConcepts(torch.randn(3)),
    lambda: LayerConcepts(torch.randn(3, 2), frequency=torch.zeros(4)),
])
def test_bad_construction(make):
    with pytest.raises(ValueError):
        make()


class _Net(nn.Module):
    def __init__(self, width=6):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Conv2d(width, 5, 3), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))

    def forward(self, x):
        return self.head(self.body(x))


def test_check_model():
    net = _Net()
    good = ConceptSet.from_vectors({"body.1": torch.randn(4, 6), "body.3": torch.randn(4, 5)})
    good.check_model(net)
    good.check_model(net, torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        ConceptSet.from_vectors({"body.1": torch.randn(4, 7)}).check_model(net)
    with pytest.raises(ValueError, match="unknown layer"):
        ConceptSet.from_vectors({"layer9": torch.randn(4, 6)}).check_model(net)
    with pytest.raises(ValueError, match="order"):
        ConceptSet.from_vectors({"body.3": torch.randn(4, 5), "body.1": torch.randn(4, 6)}).check_model(net)


# ---------------------------------------------------------------------------------------------- naming and relative λ
def test_assign_names_each_pfv_by_its_nearest_concept_vector():
    cs = _set()
    pfvs = torch.randn(3, 9, 4)
    named = cs.assign("a", pfvs)
    assert named.shape == (3, 9)
    brute = torch.cdist(pfvs.reshape(-1, 4), cs.vectors("a")).argmin(1).reshape(3, 9)
    assert torch.equal(named, brute)
    # a concept vector itself is named by its own concept; a layer output (B, C, H, W) is read as PFVs
    assert torch.equal(cs.assign("a", cs.vectors("a")), torch.arange(12))
    activation = torch.randn(2, 4, 3, 5)
    assert torch.equal(cs.assign("a", activation), cs.assign("a", activation.flatten(2).transpose(1, 2)))
    with pytest.raises(ValueError, match="must have shape"):
        cs.assign("a", torch.randn(5, 3))


def test_relative_lam_gives_the_same_codes_at_any_activation_scale():
    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(10, 6, generator=g).abs()
    pfvs = torch.randn(50, 6, generator=g).abs()
    codes = []
    for scale in (1e-3, 1.0, 1e3):
        cs = ConceptSet.from_vectors({"a": vectors * scale}, lam=0.1, nonneg=True, relative_lam=True, solver="lasso_cd")
        assert cs.layer_lam("a") == pytest.approx(0.1 * cs.lam_scales["a"])
        codes.append(cs.decompose("a", pfvs * scale))
    torch.testing.assert_close(codes[0], codes[1], atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(codes[2], codes[1], atol=1e-4, rtol=1e-3)
    assert 0 < (codes[1] != 0).float().mean() < 1  # sparse, not empty
    absolute = ConceptSet.from_vectors({"a": vectors}, lam=0.1, nonneg=True)
    assert absolute.lam_scales == {} and absolute.layer_lam("a") == 0.1


def test_lam_scale_is_the_mean_lambda_max():
    from gig.concepts.conceptset import lam_scale

    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    pfvs = torch.tensor([[3.0, 0.0], [0.0, -1.0]])
    assert lam_scale(pfvs, vectors) == pytest.approx((3.0 + 2.0) / 2)  # max_k |<v_k, x>| per row, then the mean
    assert lam_scale(pfvs, vectors, nonneg=True) == pytest.approx((3.0 + 0.0) / 2)
    # λ = λ_max zeroes that row's code
    cs = ConceptSet.from_vectors({"a": vectors}, lam=3.0 + 1e-6, solver="lasso_cd")
    assert (cs.decompose("a", pfvs[:1]) == 0).all()


def test_relative_lam_survives_storage(tmp_path):
    cs = ConceptSet.from_vectors({"a": torch.randn(6, 3)}, lam=0.2, relative_lam=True)
    again = ConceptSet.from_bytes(cs.to_bytes())
    assert again.lam_scales == cs.lam_scales and again.layer_lam("a") == cs.layer_lam("a")
    cs.save(tmp_path / "s")
    assert ConceptSet.load(tmp_path / "s").lam_scales == cs.lam_scales
    with pytest.raises(ValueError, match="lam_scales"):
        ConceptSet(cs.layers, lam=0.2, lam_scales={"zzz": 1.0})
    with pytest.raises(ValueError, match="lam_scales"):
        ConceptSet(cs.layers, lam=0.2, lam_scales={"a": 0.0})
