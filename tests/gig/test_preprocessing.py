"""gig.preprocessing: the same tensor as timm's eval transform and transformers' PIL image processors, resolve's
precedence, the two resize modes on non-square images, legacy records and clear errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gig.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, from_hf_processor, from_timm, resolve

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def _noise(height: int, width: int, seed: int = 0) -> Image.Image:
    """Noise: every resampling or offset difference shows in the pixels."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


# Landscape and portrait, odd sizes (odd crop margins: 61x95 -> 64x99 has a margin of 43 px to 56, where the two
# crop offsets differ), square, and one smaller than the input (upsampled).
IMAGES = [_noise(61, 97), _noise(61, 95, 4), _noise(97, 61, 1), _noise(75, 75, 2), _noise(40, 33, 3)]


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_equals_timms_eval_transform(name):
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(name, pretrained=False, num_classes=3)
    config = resolve_data_config({}, model=model)
    fields = from_timm(model)
    assert fields["interpolation"] == "bicubic" and fields["crop_pct"] == {"resnet18": 0.95}.get(name, 0.9)
    preprocessing = resolve({}, fields)
    assert preprocessing.source == "timm pretrained_cfg" and preprocessing.size == (224, 224)
    reference = create_transform(**config)
    for image in IMAGES:
        _close(preprocessing(image), reference(image))


@pytest.mark.parametrize("size", [(48, 64), (64, 48), (50, 50)])
@pytest.mark.parametrize("crop_mode, resize_mode", [("center", "shorter_side_crop"), ("squash", "exact")])
@pytest.mark.parametrize("crop_pct", [0.875, 0.9, 1.0])
def test_equals_timm_for_non_square_inputs_and_both_crop_modes(size, crop_mode, resize_mode, crop_pct):
    from timm.data import create_transform

    reference = create_transform(input_size=(3, *size), interpolation="bicubic", crop_pct=crop_pct,
                                 crop_mode=crop_mode, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    ours = Preprocessing(*size, resize_mode=resize_mode, crop_pct=crop_pct, interpolation="bicubic")
    for image in IMAGES:
        _close(ours(image), reference(image))


def test_from_timm_takes_the_size_the_model_was_built_for():
    """timm's data config still says 224 for a ViT built with img_size=(48, 64); the model only takes 48x64."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(48, 64), num_classes=2)
    fields = from_timm(model)
    assert (fields["height"], fields["width"]) == (48, 64) and fields["mean"] == (0.5, 0.5, 0.5)
    x = resolve({}, fields)(IMAGES[0])
    assert x.shape == (3, 48, 64)
    with torch.no_grad():
        assert model(x[None]).shape == (1, 2)


def _hf(processor, tmp_path) -> tuple[dict, object]:
    """The processor's preprocessor_config.json and the PIL processor transformers loads from it."""
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    return config, transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")


@pytest.mark.parametrize("kwargs", [
    {"size": {"height": 48, "width": 64}},  # ViT: an exact (squash) resize, bilinear
    {"size": {"height": 64, "width": 64}, "resample": 3, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.3, 0.2, 0.1]},
    {"size": {"height": 64, "width": 64}, "do_center_crop": True, "crop_size": {"height": 56, "width": 56}},  # DeiT
    {"size": {"height": 64, "width": 64}, "do_normalize": False},
])
def test_equals_transformers_vit_processor(kwargs, tmp_path):
    config, processor = _hf(transformers.ViTImageProcessor(**kwargs), tmp_path)
    assert type(processor).__name__.endswith("Pil")
    preprocessing = resolve({}, from_hf_processor(config))
    assert preprocessing.source == "preprocessor_config.json"
    for image in IMAGES:
        _close(preprocessing(image), processor(image, return_tensors="pt")["pixel_values"][0])


@pytest.mark.parametrize("edge, crop_pct", [(56, 0.875), (40, 0.9), (384, 0.875)])
def test_equals_transformers_convnext_processor(edge, crop_pct, tmp_path):
    """shortest_edge + crop_pct: a crop below 384 px, a square warp from 384 px up (ConvNeXt's rule)."""
    config, processor = _hf(transformers.ConvNextImageProcessor(size={"shortest_edge": edge}, crop_pct=crop_pct),
                            tmp_path)
    preprocessing = resolve({}, from_hf_processor(config))
    assert preprocessing.resize_mode == ("exact" if edge >= 384 else "shorter_side_crop")
    for image in IMAGES:
        _close(preprocessing(image), processor(image, return_tensors="pt")["pixel_values"][0])


def test_crop_offsets_differ_on_odd_margins():
    """Hugging Face crops at floor(margin / 2), torchvision at round(margin / 2): both are reproduced."""
    image = IMAGES[1]  # shorter side 61 -> 64, longer int(64 * 95 / 61) = 99: a margin of 43 px
    round_, floor = (Preprocessing(56, 56, crop_pct=0.875, crop_offset=o) for o in ("round", "floor"))
    a, b = round_(image), floor(image)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a[:, :, :-1], b[:, :, 1:], rtol=0, atol=0)  # one pixel apart


def test_resize_modes_on_a_non_square_image():
    image = _noise(50, 100)  # width 100, height 50
    stripes = np.zeros((50, 100, 3), np.uint8)
    stripes[:, :20] = 255  # the left fifth white
    exact = Preprocessing(32, 32, resize_mode="exact", mean=(0, 0, 0), std=(1, 1, 1))
    crop = Preprocessing(32, 32, mean=(0, 0, 0), std=(1, 1, 1))
    assert exact(image).shape == crop(image).shape == (3, 32, 32)
    assert Preprocessing(24, 40)(image).shape == (3, 24, 40)
    # exact keeps the whole width (the white fifth), the crop cuts the sides off (none of it left)
    assert exact(Image.fromarray(stripes))[:, :, :5].min() > 0.99
    assert crop(Image.fromarray(stripes))[:, :, :5].max() < 0.01
    assert crop.resize_crop(Image.fromarray(stripes[:, :, 0]), "nearest").size == (32, 32)  # masks, any mode


def test_rgb_conversion_and_normalisation():
    grey = Image.fromarray(np.full((20, 30), 51, np.uint8))  # 0.2 in [0, 1]
    x = Preprocessing(8, 8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))(grey)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([0.2, 0.0, -0.4]), atol=1e-6, rtol=0)
    picture = Preprocessing(8, 8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25)).unnormalise(x[None])
    torch.testing.assert_close(picture, torch.full((1, 3, 8, 8), 0.2), atol=1e-6, rtol=0)


def test_resolve_precedence_field_by_field():
    model = {"height": 64, "width": 48, "crop_pct": 0.9, "interpolation": "bicubic", "mean": (0.5,) * 3,
             "source": "timm pretrained_cfg"}
    requested = {"height": 0, "width": 0, "resize_mode": "", "crop_pct": 0.0, "interpolation": "nearest",
                 "mean": [], "std": [], "source": ""}  # a PreprocessingSpec dict: zeros are unset
    p = resolve(requested, model, input_size=32, mean=(0.1, 0.1, 0.1), std=(0.2, 0.2, 0.2))
    assert (p.size, p.interpolation, p.crop_pct, p.mean, p.std, p.resize_mode) == (
        (64, 48), "nearest", 0.9, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), "shorter_side_crop")
    assert p.source == "request; timm pretrained_cfg; input_size/mean/std; defaults"
    shorthand = resolve({}, None, input_size=32)
    assert shorthand.size == (32, 32) and shorthand.mean == IMAGENET_MEAN and shorthand.crop_pct == 1.0
    assert shorthand.source == "input_size/mean/std; defaults"
    requested = resolve({"height": 40, "width": 60, "resize_mode": "exact"}, model, input_size=32)
    assert requested.size == (40, 60) and requested.resize_mode == "exact" and requested.crop_pct == 0.9
    assert resolve({}, {"height": 10, "width": 10, "source": "preprocessor_config.json"}).source == \
        "preprocessor_config.json; defaults"


def test_dict_and_record_round_trips():
    p = Preprocessing(48, 64, crop_pct=0.9, interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3, source="x")
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert Preprocessing.from_record({"input_size": 96, "preprocessing": p.to_dict()}) == p
    legacy = Preprocessing.from_record({"input_size": 96, "mean": [0.4] * 3, "std": [0.2] * 3})
    assert (legacy.size, legacy.resize_mode, legacy.crop_pct, legacy.interpolation, legacy.mean) == (
        (96, 96), "exact", 1.0, "bilinear", (0.4, 0.4, 0.4))
    # what the service did before: a squash-resize, bilinear, then normalise
    image = _noise(61, 97)
    expected = torch.from_numpy(np.asarray(image.resize((96, 96), Image.BILINEAR)).copy()).permute(2, 0, 1)
    _close(legacy(image), (expected.float() / 255 - 0.4) / 0.2)
    unset = Preprocessing.from_record({"preprocessing": {"height": 0, "width": 0}})  # record without a size
    assert unset.size == (224, 224) and unset.mean == (0, 0, 0) and unset.std == (1, 1, 1)
    assert "48" in p.describe() and "bicubic" in p.describe() and "(x)" in p.describe()


@pytest.mark.parametrize("kwargs, message", [
    ({"height": 0, "width": 4}, "height must be a positive int"),
    ({"height": 4, "width": 4, "resize_mode": "squash"}, "resize_mode must be one of shorter_side_crop, exact"),
    ({"height": 4, "width": 4, "interpolation": "area"}, "interpolation must be one of bilinear, bicubic"),
    ({"height": 4, "width": 4, "crop_pct": 1.5}, r"crop_pct must lie in \(0, 1\]"),
    ({"height": 4, "width": 4, "mean": (0.5, 0.5)}, "mean needs 3 values"),
    ({"height": 4, "width": 4, "std": (1, 0, 1)}, "std values must all be positive"),
])
def test_invalid_settings_are_refused_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessing(**kwargs)


def test_resolve_errors():
    with pytest.raises(ValueError, match="input size is unknown"):
        resolve({}, {"crop_pct": 0.9})
    with pytest.raises(ValueError, match="set both height and width"):
        resolve({"height": 32}, None, input_size=64)
    with pytest.raises(ValueError, match=r"unknown model configuration fields \['input_size'\]"):
        resolve({}, {"input_size": 3})
    with pytest.raises(ValueError, match="unknown preprocessing fields"):
        Preprocessing.from_dict({"height": 3, "width": 3, "side": 3})


@pytest.mark.parametrize("change, named", [
    ({"do_pad": True}, "do_pad"),
    ({"resample": 4}, "resample=4"),
    ({"do_rescale": False}, "do_rescale=false"),
    ({"rescale_factor": 1 / 127.5}, "rescale_factor"),
    ({"size": {"longest_edge": 64}}, "size="),
    ({"size": {"shortest_edge": 64}}, "without a centre crop"),
    ({"do_center_crop": True, "crop_size": {"height": 50, "width": 60}}, "only a crop in proportion"),
])
def test_unsupported_hf_settings_are_named(change, named):
    config = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 64, "width": 64},
              "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": [0.5] * 3, "image_std": [0.5] * 3, **change}
    with pytest.raises(ValueError, match="preprocessor_config.json settings not supported: .*" + named.replace(
            "(", r"\(")):
        from_hf_processor(config)


def test_hf_shortest_edge_with_square_crop(tmp_path):
    """CLIP-style: shortest_edge, then a square centre crop."""
    config = {"do_resize": True, "size": {"shortest_edge": 64}, "do_center_crop": True,
              "crop_size": {"height": 56, "width": 56}, "resample": 3}
    p = resolve({}, from_hf_processor(config))
    assert p.scale_size == (64, 64) and p.size == (56, 56) and math.isclose(p.crop_pct, 56 / 64)


def test_timm_border_crop_mode_is_refused():
    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    model.pretrained_cfg = {**model.pretrained_cfg, "crop_mode": "border"}
    with pytest.raises(ValueError, match="crop_mode 'border' is not supported; supported: center, squash"):
        from_timm(model)
