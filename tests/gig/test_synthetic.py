"""gig.synthetic: planted-part images, PartsNet, its training and the committed demo weights."""
import pytest
import torch

import gig
from gig.layers import LOGITS, traced
from gig.synthetic import (
    ASSETS, CLASS_NAMES, CLASS_PARTS, PART_NAMES, PARTS, PartsNet, accuracy, load_parts_net, make_parts_dataset,
    part_coverage, part_labels, save_parts_net, train_parts_net,
)

RGB = {"red": 0, "green": 1, "blue": 2}


def test_dataset_shapes_range_and_balance():
    images, labels, masks = make_parts_dataset(60, size=32, seed=3)
    assert images.shape == (60, 3, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (60,) and masks.shape == (60, 32, 32) and masks.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.bincount(minlength=len(CLASS_NAMES)).tolist() == [10] * 6
    assert len(CLASS_NAMES) == len(CLASS_PARTS) and len(PART_NAMES) == len(PARTS)


def test_dataset_is_deterministic_per_seed():
    a = make_parts_dataset(8, seed=5)
    b = make_parts_dataset(8, seed=5)
    c = make_parts_dataset(8, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_masks_hold_exactly_the_defining_parts_in_their_colour():
    images, labels, masks = make_parts_dataset(48, size=32, seed=1)
    for image, label, mask in zip(images, labels, masks):
        present = set(mask.unique().tolist()) - {0}
        assert present == set(CLASS_PARTS[label])
        for part in present:
            pixels = image[:, mask == part]
            assert pixels.shape[1] >= 20  # a part is a visible object, not a speck
            _, colour, _ = PARTS[part - 1]
            assert pixels.mean(1).argmax().item() == RGB[colour]


def test_background_is_cluttered_not_empty():
    images, _, masks = make_parts_dataset(16, seed=2)
    background = images.permute(1, 0, 2, 3)[:, masks == 0]
    assert background.std() > 0.05
    assert (background.max(0).values - background.min(0).values).abs().max() < 1e-6  # grey: no part colours


def test_size_scales_the_parts():
    _, _, small = make_parts_dataset(12, size=32, seed=0)
    _, _, large = make_parts_dataset(12, size=64, seed=0)
    ratio = (large > 0).float().mean() / (small > 0).float().mean()
    assert 0.8 < ratio < 1.25  # same share of the image covered by parts


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "positive"), ({"n": 4, "size": 8}, "at least 16")])
def test_bad_dataset_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_parts_dataset(**kwargs)


def test_part_labels_of_cells():
    _, _, masks = make_parts_dataset(6, seed=4)
    assert torch.equal(part_labels(masks, 32), masks.flatten(1))  # one-pixel cells: the mask itself
    coverage = part_coverage(masks, 4)
    assert coverage.shape == (6, len(PARTS), 16) and (coverage.sum(1) <= 1 + 1e-6).all()
    labels = part_labels(masks, 4, min_cover=0.25)
    best = coverage.max(1).values
    assert ((labels > 0) == (best >= 0.25)).all() and ((labels == 0) == (best == 0)).all()
    assert ((labels == -1) == ((best > 0) & (best < 0.25))).all()
    with pytest.raises(ValueError, match="multiple"):
        part_labels(masks, 5)


def test_partsnet_default_layers_are_its_blocks_and_segments_run():
    torch.manual_seed(0)
    model = PartsNet(6, width=8).eval()
    layers = gig.default_layers(model)
    assert layers == ["features.0", "features.1", "features.2", "features.3"]
    t = traced(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = t.prefix(layers)(x)
        assert [tuple(out[n].shape[1:]) for n in layers] == [(8, 16, 16), (16, 8, 8), (16, 4, 4), (32, 4, 4)]
        for a, b in zip(layers, layers[1:] + [LOGITS]):
            assert torch.allclose(t.segment(a, b)(out[a]), out[b], atol=1e-5)
    with pytest.raises(ValueError, match="num_classes"):
        PartsNet(1)


def test_trained_partsnet_is_accurate_on_fresh_images(parts_net):
    model, info = parts_net
    images, labels, _ = make_parts_dataset(300, seed=123)
    assert accuracy(model, images, labels) > 0.95
    assert info["test_accuracy"] > 0.95 and info["classes"] == CLASS_NAMES


def test_training_is_reproducible_for_a_seed():
    torch.set_num_threads(1)
    a, _ = train_parts_net(n_train=64, epochs=1, n_test=8, seed=4)
    b, _ = train_parts_net(n_train=64, epochs=1, n_test=8, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_and_load_round_trip(tmp_path, parts_net):
    model, info = parts_net
    save_parts_net(model, info, tmp_path / "net")
    loaded, loaded_info = load_parts_net(tmp_path / "net")
    assert loaded_info == info
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="train_demo"):
        load_parts_net(tmp_path / "missing")


def test_committed_demo_weights_are_small_and_accurate():
    assert (ASSETS / "partsnet.safetensors").stat().st_size < 1_000_000
    model, info = load_parts_net()
    assert info["test_accuracy"] > 0.95
    images, labels, _ = make_parts_dataset(300, seed=321)
    assert accuracy(model, images, labels) > 0.95
