"""gig.planted: the planted datasets that the defaults are chosen and tested on."""
import pytest
import torch

from gig.planted import CHOOSING, HELD_OUT, KINDS, PlantedNet, kind, make_planted
from gig.synthetic import part_labels


@pytest.mark.parametrize("name", list(KINDS))
def test_each_image_shows_exactly_its_class_parts(name):
    spec = KINDS[name]
    images, labels, masks = make_planted(name, 24, seed=4)
    assert images.shape == (24, 3, spec.size, spec.size) and 0 <= images.min() and images.max() <= 1
    assert labels.bincount(minlength=len(spec.class_parts)).max() - labels.bincount().min() <= 1  # balanced
    for label, mask in zip(labels.tolist(), masks):
        assert set(mask.unique().tolist()) - {0} == set(spec.class_parts[label])
        for part in spec.class_parts[label]:
            assert (mask == part).sum() >= 0.01 * spec.size**2  # a visible object, not a speck
    assert len(spec.class_names) == len(spec.class_parts) == len(spec.parts)


def test_kinds_are_deterministic_and_differ():
    a, b = make_planted("glyphs", 4, seed=1), make_planted("glyphs", 4, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], make_planted("glyphs", 4, seed=2)[0])
    assert set(CHOOSING) | set(HELD_OUT) == {"parts", *KINDS} and not set(CHOOSING) & set(HELD_OUT)
    assert len({KINDS[k].size for k in KINDS} | {32}) >= 3  # sizes 32, 64 and 96


def test_part_labels_cover_more_than_six_parts():
    _, _, masks = make_planted("glyphs", 16, seed=0)
    labels = part_labels(masks, 12)
    assert labels.max() > 6 and labels.min() >= -1


def test_planted_net_stages_are_cuts_and_halve_the_resolution():
    import gig

    spec = KINDS["glyphs"]
    model = PlantedNet(len(spec.class_parts), spec.stages, spec.residual).eval()
    layers = gig.default_layers(model)
    assert layers == [f"features.{i}" for i in range(len(spec.stages))]
    assert model(torch.zeros(2, 3, 96, 96)).shape == (2, len(spec.class_parts))


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown planted kind"):
        kind("nope")
    with pytest.raises(ValueError, match="positive number"):
        make_planted("marks", 0)
