"""extract_concepts on small real CNNs: planted directions, frequency/exemplars, streaming, sampling, errors."""
import sys
import weakref
from pathlib import Path

import pytest
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from gig.concepts import ConceptSet
from gig.concepts.extract import extract_concepts, sample_pfvs

sys.path.insert(0, str(Path(__file__).parent))
from models import small_vit, tiny_cnn  # noqa: E402

PALETTE = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.6]])


class Planted(nn.Module):
    """``body`` (C = 8) gives each palette colour its own pair of channels (disjoint supports, random gains); the
    head pools and classifies with positive weights, so every position contributes positively to every logit."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        detectors = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1]])
        with torch.no_grad():
            gains = torch.rand(8, generator=g) + 0.5
            self.body[0].weight.copy_((detectors.repeat_interleave(2, 0) * gains[:, None])[:, :, None, None])
            self.body[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1.2]).repeat_interleave(2) * gains)
            self.head[2].weight.copy_(torch.rand(2, 8, generator=g) + 0.1)

    def forward(self, x):
        return self.head(self.body(x))

    def planted(self):
        """The activation of each palette colour, ``(4, 8)``."""
        return self.body(PALETTE[:, :, None, None])[:, :, 0, 0].detach()


def _palette_images(n=32, size=6, seed=0):
    """Images of random palette colours; colour 3 only appears in images 0–4."""
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, 3, (n, size, size), generator=g)
    index[:5, :2, :2] = 3
    images = PALETTE[index].permute(0, 3, 1, 2).contiguous()
    return images + 0.01 * torch.rand(images.shape, generator=g)


def _match(found, planted):
    cos = nn.functional.normalize(planted, dim=1) @ nn.functional.normalize(found, dim=1).T
    rows, cols = linear_sum_assignment(-cos.numpy())
    return cos[rows, cols], cols


@pytest.mark.parametrize("method", ["bisecting_kmeans", "kmeans", "nmf"])
def test_recovers_planted_directions(method):
    model, images = Planted(), _palette_images()
    stages = []
    cs = extract_concepts(model, [images[:16], images[16:]], ["body"], n_concepts=4, method=method,
                          pfvs_per_image=6, sampling="uniform", lam=0.01, nonneg=True,
                          progress=lambda *a: stages.append(a))
    cosine, cols = _match(cs.vectors("body"), model.planted())
    assert cosine.min() > 0.9, cosine
    assert stages[0] == ("sample", 0, 2) and ("cluster", 1, 1) in stages and stages[-1] == ("decompose", 2, 2)
    if method != "nmf":  # centroids are the colours themselves: frequencies and exemplars are exact
        lc = cs.layers["body"]
        rare = cols[3]
        assert lc.frequency[rare].item() == pytest.approx(5 / 32)
        assert lc.frequency[cols[:3]].min() > 0.9
        assert {e.image for e in lc.exemplars[rare]} == set(range(5))
        coefficients = [e.coefficient for e in lc.exemplars[cols[0]]]
        assert len(coefficients) == 8 and coefficients == sorted(coefficients, reverse=True)
        assert lc.mean_coefficient[rare].item() == pytest.approx(1.0, abs=0.1)


def test_deterministic_and_records_params(tmp_path):
    model, images = tiny_cnn("relu"), torch.randn(12, 3, 8, 8)
    kwargs = {"n_concepts": {"block2": 6}, "lam": 0.05, "seed": 1, "pfvs_per_image": 1}
    with pytest.warns(UserWarning, match="n_concepts clipped: block1: 16 concepts asked for"):
        a = extract_concepts(model, [images], ["block2", "block1"], **kwargs)
    with pytest.warns(UserWarning):
        b = extract_concepts(model, [images], ["block1", "block2"], **kwargs)
    assert list(a.layers) == ["block1", "block2"]  # forward order
    # the default 16 is clipped to what 12 samples support (one concept per 4), with the clip recorded
    assert a.params["n_concepts"] == {"block1": 3, "block2": 3}
    assert a.params["n_concepts_requested"] == {"block1": 16, "block2": 6}
    assert len(a.params["warnings"]) == 2
    assert a.params["n_samples"] == {"block1": 12, "block2": 12}
    for layer in a.layers:
        assert torch.equal(a.vectors(layer), b.vectors(layer))
    a.save(tmp_path / "c")
    loaded = ConceptSet.load(tmp_path / "c")
    loaded.check_model(model, images[:1])
    assert loaded.layers["block1"].exemplars == a.layers["block1"].exemplars
    # The second pass measures the decomposition of every PFV: the same figures as decomposition_stats.
    from gig.layers import traced
    from gig.pfv import to_pfvs
    with torch.no_grad():
        outputs = traced(model).prefix(list(a.layers))(images)
    for layer in a.layers:
        direct = a.decomposition_stats(layer, to_pfvs(outputs[layer]))
        recorded = loaded.params["decomposition"][layer]
        assert recorded["relative_error"] == pytest.approx(direct["relative_error"], rel=1e-5)
        assert recorded["l0"] == pytest.approx(direct["l0"], rel=1e-6)


def test_vit_tokens_are_pfvs():
    model, images = small_vit().eval(), torch.rand(6, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_1"
    cs = extract_concepts(model, [images[:3], images[3:]], [layer], n_concepts=8, pfvs_per_image=6, n_exemplars=3)
    assert cs.vectors(layer).shape == (8, 16) and cs.params["n_samples"] == {layer: 36}
    assert all(e.position < 17 for ex in cs.layers[layer].exemplars for e in ex)  # 16 patches + class token


class _OnePosition(nn.Module):
    """Only position (2, 3) of ``body`` reaches the logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.body[0].bias.fill_(1.0)  # positive activations everywhere
            self.head.weight.uniform_(0.1, 1.0)

    def forward(self, x):
        return self.head(self.body(x)[:, :, 2, 3])


def test_contribution_sampling_picks_the_contributing_position():
    model, images = _OnePosition().eval(), torch.rand(10, 3, 5, 5)
    samples, n = sample_pfvs(model, [images], ["body"], "contribution", 1, seed=0)
    expected = model.body(images)[:, :, 2, 3]
    assert n == 10
    torch.testing.assert_close(samples["body"], expected.detach())
    uniform, _ = sample_pfvs(model, [images], ["body"], "uniform", 1, seed=0)
    assert not torch.allclose(uniform["body"], expected.detach())


class _Batches:
    """200 batches, made on the fly; remembers how many earlier batches were still alive at each yield."""

    def __init__(self):
        self.alive_max = 0

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        refs = []
        for _ in range(200):
            self.alive_max = max(self.alive_max, sum(r() is not None for r in refs))
            images = torch.rand(2, 3, 4, 4, generator=g)
            refs.append(weakref.ref(images))
            yield images
            del images


def test_streams_many_batches_and_keeps_only_samples():
    data = _Batches()
    cs = extract_concepts(tiny_cnn("relu", width=4), data, ["block3"], n_concepts=5, pfvs_per_image=3,
                          n_exemplars=2)
    assert cs.params["n_images"] == 400 and cs.params["n_samples"] == {"block3": 1200}
    assert data.alive_max <= 2  # batches are released as the passes go on
    assert all(e.image < 400 for ex in cs.layers["block3"].exemplars for e in ex)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.inner = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.inner(x))


@pytest.mark.parametrize("kwargs, match", [
    ({"layers": ["nope"]}, "valid cut layers"),
    ({"layers": ["inner"]}, "not a cut"),
    ({"layers": []}, "no layers"),
    ({"method": "dbscan"}, "bisecting_kmeans"),
    ({"sampling": "random"}, "contribution"),
    ({"pfvs_per_image": 0}, "pfvs_per_image"),
    ({"pfvs_per_image": 17}, "pfvs_per_image"),
    ({"n_concepts": 0}, "n_concepts"),
    ({"n_concepts": {"zzz": 2}}, "n_concepts"),
    ({"lam": -0.1}, "lam"),
    ({"lam": 0.0, "nonneg": True}, "nonneg"),
    ({"n_exemplars": -1}, "n_exemplars"),
    ({"device": "meta"}, "device"),
    ({"device": "gpu-please"}, "device"),
    ({"data": (torch.rand(2, 3, 4, 4) for _ in range(2))}, "one-shot"),
    ({"data": []}, "no images"),
    ({"data": [torch.rand(2, 1, 4, 4)]}, r"\(B, 3, H, W\)"),
    ({"method": "nmf", "sampling": "uniform", "pfvs_per_image": 4, "n_concepts": 2}, "non-negative"),
])
def test_bad_inputs(kwargs, match):
    args = {"model": _Residual(), "data": [torch.rand(2, 3, 4, 4)], "layers": ["stem"], **kwargs}
    with pytest.raises(ValueError, match=match):
        extract_concepts(**args)


def test_takes_lasso_settings_and_records_them():
    from gig.concepts import LassoSettings

    model, images = tiny_cnn("relu"), torch.randn(16, 3, 8, 8)
    settings = LassoSettings(solver="lasso_cd", max_iter=200)
    cs = extract_concepts(model, [images], ["block2"], n_concepts=4, solver=settings, n_exemplars=0)
    assert cs.solver == settings and ConceptSet.from_bytes(cs.to_bytes()).solver == settings
    default = extract_concepts(model, [images], ["block2"], n_concepts=4, n_exemplars=0)
    assert default.solver == LassoSettings() and default.solver.solver == "active_set"
    with pytest.raises(ValueError, match="LassoSettings"):
        extract_concepts(model, [images], ["block2"], n_concepts=4, solver="lasso_cd")
