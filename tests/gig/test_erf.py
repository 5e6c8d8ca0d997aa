"""iERF maps: normalisation, receptive-field support, agreement with a direct autograd computation; crops."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gig.erf import erf, exemplar_crops

sys.path.insert(0, str(Path(__file__).parent))
from models import has_hooks, small_vit, tiny_cnn  # noqa: E402


def _images(n=4, size=12, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) - 0.5


def test_maps_sum_to_one_and_have_image_shape():
    model, images = tiny_cnn("gelu"), _images()
    maps = erf(model, images, "block3", torch.tensor([0, 7, 20, 35]))
    assert maps.shape == (4, 12, 12) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum((1, 2)), torch.ones(4))
    assert not has_hooks(model)


@pytest.mark.parametrize("layer, radius, stride", [("block1", 1, 1), ("block2", 2, 2)])
def test_zero_outside_the_receptive_field(layer, radius, stride):
    model, images = tiny_cnn("gelu"), _images(n=3, size=16)
    side = 16 // stride
    cells = [(2, 3), (side // 2, side // 2), (side - 1, 0)]
    positions = torch.tensor([h * side + w for h, w in cells])
    maps = erf(model, images, layer, positions)
    for m, (h, w) in zip(maps, cells):
        inside = torch.zeros(16, 16, dtype=torch.bool)
        cy, cx = h * stride, w * stride
        inside[max(cy - radius, 0) : cy + radius + 1, max(cx - radius, 0) : cx + radius + 1] = True
        assert m[~inside].abs().max() == 0
        assert (m[inside] > 0).sum() >= 4  # and the map lives inside


def _direct(model, image, layer, position, direction):
    """The iERF of one image by running the modules by hand (no fx, no batching)."""
    x = image[None].clone().requires_grad_(True)
    act = x
    for name in ("block1", "block2", "block3"):
        act = getattr(model, name)(act)
        if name == layer:
            break
    pfv = act.flatten(2)[0, :, position]
    v = pfv.detach() / pfv.detach().norm() if direction is None else direction
    (grad,) = torch.autograd.grad((pfv * v).sum(), x)
    m = (x * grad).abs().sum(1)[0].detach()
    return m / m.sum()


@pytest.mark.parametrize("given", [False, True])
def test_agrees_with_direct_autograd(given):
    model, images = tiny_cnn("gelu", seed=2), _images(n=3, seed=1)
    positions = torch.tensor([5, 17, 30])
    directions = torch.randn(3, 16, generator=torch.Generator().manual_seed(0)) if given else None
    maps = erf(model, images, "block3", positions, directions)
    for i in range(3):
        expected = _direct(model, images[i], "block3", int(positions[i]), None if directions is None else directions[i])
        torch.testing.assert_close(maps[i], expected, rtol=1e-4, atol=1e-7)


def test_batch_rows_do_not_interact_in_train_mode_models():
    model = tiny_cnn("gelu").train()  # BatchNorm would mix rows in train mode: erf runs in eval mode
    images = _images(n=2)
    both = erf(model, images, "block2", torch.tensor([3, 3]))
    alone = erf(model, images[:1], "block2", torch.tensor([3]))
    torch.testing.assert_close(both[:1], alone)
    assert model.training


def test_vit_tokens():
    model, images = small_vit().eval(), _images(n=2, size=32)
    maps = erf(model, images, "encoder.layers.encoder_layer_0", torch.tensor([0, 5]))
    torch.testing.assert_close(maps.sum((1, 2)), torch.ones(2))


def test_exemplar_crops_find_the_mass():
    images = _images(n=2, size=10)
    maps = torch.zeros(2, 10, 10)
    maps[0, 7, 8] = 1.0
    maps[1, 1:3, 1:3] = 0.25
    crops = exemplar_crops(images, maps, size=4)
    top, left, bottom, right = crops[0].box
    assert top <= 7 < bottom and left <= 8 < right and bottom - top == 4 and right - left == 4
    assert crops[1].box[0] <= 1 and crops[1].box[2] >= 3 and crops[1].mass == pytest.approx(1.0)
    assert crops[0].pixels.shape == (4, 4, 3) and crops[0].pixels.dtype == np.uint8
    stretched = exemplar_crops(images, maps)[0]  # default size: half the shorter side
    assert stretched.pixels.shape == (5, 5, 3)
    mean, std = (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)
    undone = exemplar_crops(images, maps, size=4, mean=mean, std=std)[0]
    t, le, b, r = undone.box
    expected = ((images[0, :, t:b, le:r] + 0.5).clamp(0, 1) * 255).round().permute(1, 2, 0).to(torch.uint8).numpy()
    assert np.array_equal(undone.pixels, expected)


def test_crops_of_real_maps_hold_most_mass():
    model, images = tiny_cnn("gelu"), _images(n=2, size=16)
    maps = erf(model, images, "block1", torch.tensor([5 * 16 + 5, 10 * 16 + 12]))
    crops = exemplar_crops(images, maps, size=3)
    assert [c.box[:2] for c in crops] == [(4, 4), (9, 11)] and all(c.mass == pytest.approx(1.0) for c in crops)


@pytest.mark.parametrize("call", [
    lambda m, x: erf(m, x, "nope", torch.tensor([0, 0])),
    lambda m, x: erf(m, x, "block1", torch.tensor([0])),
    lambda m, x: erf(m, x, "block1", torch.tensor([0.0, 1.0])),
    lambda m, x: erf(m, x, "block1", torch.tensor([0, 10_000])),
    lambda m, x: erf(m, x, "block1", torch.tensor([0, -1])),
    lambda m, x: erf(m, x, "block1", torch.tensor([0, 1]), torch.randn(2, 3)),
    lambda m, x: erf(m, x, "block1", torch.tensor([0, 1]), torch.full((2, 8), float("nan"))),
    lambda m, x: erf(m, x[:, :2], "block1", torch.tensor([0, 1])),
    lambda m, x: exemplar_crops(x, torch.zeros(2, 5, 5)),
    lambda m, x: exemplar_crops(x, torch.zeros(2, 8, 8), size=9),
    lambda m, x: exemplar_crops(x, torch.zeros(2, 8, 8), mean=(0.5, 0.5, 0.5)),
    lambda m, x: exemplar_crops(x, torch.zeros(2, 8, 8), mean=(0.5,), std=(1.0,)),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call(tiny_cnn("gelu"), _images(n=2, size=8))
