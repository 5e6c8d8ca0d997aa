"""The one transform from an image to a model's input: RGB, resize, centre crop, scale to [0, 1], normalise.

:class:`Preprocessing` reproduces timm's eval transform (``timm.data.create_transform`` of the model's data config)
and the Hugging Face PIL image processors (ViT, DeiT, BEiT, Swin, ConvNeXt) on PIL images, so a model sees in an
audit what it saw in training. :func:`resolve` chooses each setting from the request, the model's own configuration
(:func:`from_timm`, :func:`from_hf_processor`), the model's input_size/mean/std shorthand, then the defaults.
The same transform serves the analysis, the exemplars and the report (see docs/preprocessing.md).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Preprocessing", "resolve", "from_timm", "from_hf_processor",
           "RESIZE_MODES", "INTERPOLATIONS", "CROP_OFFSETS"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("shorter_side_crop", "exact")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
# Where the centre crop starts when the margin is odd: "round" is torchvision's CenterCrop (timm), int(round(m / 2));
# "floor" is Hugging Face's center_crop, m // 2.
CROP_OFFSETS = ("round", "floor")
_FIELDS = ("height", "width", "resize_mode", "crop_pct", "interpolation", "mean", "std", "crop_offset")
_LEGACY_SIZE = 224  # what the service used for a model record without input_size


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input ``(3, height, width)``.

    ``shorter_side_crop``: resize keeping the aspect ratio so the image covers ``floor(height / crop_pct)`` x
    ``floor(width / crop_pct)``, then crop the centre ``height`` x ``width`` (timm's "center" crop mode).
    ``exact``: resize to ``floor(height / crop_pct)`` x ``floor(width / crop_pct)`` ignoring the aspect ratio,
    then crop the centre (timm's "squash"; with ``crop_pct=1`` a plain squash-resize). Then RGB values scaled to
    [0, 1] and normalised per channel: ``(x - mean) / std``.
    """
    height: int
    width: int
    resize_mode: str = "shorter_side_crop"
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    source: str = "defaults"
    crop_offset: str = "round"

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
            object.__setattr__(self, name, int(value))
        _choice("resize_mode", self.resize_mode, RESIZE_MODES)
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        _choice("crop_offset", self.crop_offset, CROP_OFFSETS)
        if not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must lie in (0, 1], not {self.crop_pct!r}")
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", _rgb("mean", self.mean))
        object.__setattr__(self, "std", _rgb("std", self.std))
        if min(self.std) <= 0:
            raise ValueError(f"std values must all be positive, not {list(self.std)}")
        if not isinstance(self.source, str):
            raise ValueError(f"source must be a string, not {self.source!r}")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        return self.height, self.width

    @property
    def scale_size(self) -> tuple[int, int]:
        """``(height, width)`` the image is resized to cover before the centre crop (timm's rule)."""
        return math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        """The model input of a PIL image: ``(3, height, width)`` float32, RGB, normalised."""
        pixels = np.asarray(self.resize_crop(image.convert("RGB")), dtype=np.uint8)
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return x.sub(mean).div(std)

    def resize_crop(self, image: PILImage.Image, interpolation: str | None = None) -> PILImage.Image:
        """The resize and centre crop alone (any PIL mode, e.g. a greyscale mask), with this transform's filter
        or ``interpolation``."""
        resample = _pil_filter(interpolation or self.interpolation)
        width, height = image.size
        scale_h, scale_w = self.scale_size
        if self.resize_mode == "exact":
            new_h, new_w = scale_h, scale_w
        elif scale_h == scale_w:  # torchvision's Resize(int): the shorter side, the longer one truncated
            short, long = min(height, width), max(height, width)
            new_short, new_long = scale_h, int(scale_h * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        else:  # timm's ResizeKeepRatio: the side that limits, the other rounded
            ratio = min(height / scale_h, width / scale_w)
            new_h, new_w = round(height / ratio), round(width / ratio)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), resample)
        return self._centre_crop(image)

    def _centre_crop(self, image: PILImage.Image) -> PILImage.Image:
        width, height = image.size
        if (width, height) == (self.width, self.height):
            return image
        if width < self.width or height < self.height:  # cannot happen after resize_crop's resize
            raise ValueError(f"a {width}x{height} image cannot be cropped to {self.width}x{self.height}")
        if self.crop_offset == "round":
            top, left = int(round((height - self.height) / 2.0)), int(round((width - self.width) / 2.0))
        else:
            top, left = (height - self.height) // 2, (width - self.width) // 2
        return image.crop((left, top, left + self.width, top + self.height))

    def unnormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``(3, H, W)`` or ``(N, 3, H, W)`` back to pictures in [0, 1] (clamped)."""
        shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * std + mean).clamp(0, 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (``PreprocessingSpec``'s, plus crop_offset)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; unknown keys are refused, absent optional ones take the defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing fields {unknown}; valid fields: {', '.join(sorted(known))}")
        values = dict(d)
        for name in ("mean", "std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_record(cls, model_record: Mapping[str, Any]) -> Preprocessing:
        """The transform of a registered model: its resolved ``preprocessing``; for a record from before it
        existed, what the service did then: squash-resize to ``input_size`` (224 when unset), bilinear, the
        record's mean/std (0 and 1 when unset)."""
        spec = model_record.get("preprocessing") or {}
        if spec.get("height") and spec.get("width"):
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in spec.items() if k in known and v not in ("", 0, [], None)}
            return cls.from_dict(values)
        size = model_record.get("input_size") or _LEGACY_SIZE
        height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        return cls(height, width, resize_mode="exact", crop_pct=1.0, interpolation="bilinear",
                   mean=tuple(model_record.get("mean") or (0.0, 0.0, 0.0)),
                   std=tuple(model_record.get("std") or (1.0, 1.0, 1.0)), source="legacy record")

    def describe(self) -> str:
        """One line for the CLI and the report."""
        scale_h, scale_w = self.scale_size
        if self.resize_mode == "exact":
            resize = f"resize to {scale_w}x{scale_h} (aspect ratio not kept)"
        elif scale_h == scale_w:
            resize = f"resize shorter side to {scale_h}"
        else:
            resize = f"resize keeping aspect ratio to cover {scale_w}x{scale_h}"
        crop = "" if (scale_h, scale_w) == self.size and self.resize_mode == "exact" else \
            f", centre crop {self.width}x{self.height}"
        return (f"{self.width}x{self.height} px: {resize} ({self.interpolation}){crop}, RGB, normalise mean "
                f"{_floats(self.mean)} std {_floats(self.std)} ({self.source})")


def resolve(requested: Mapping[str, Any], model_config: Mapping[str, Any] | None = None, *, input_size: int = 0,
            mean: Sequence[float] = (), std: Sequence[float] = ()) -> Preprocessing:
    """The transform of a model, field by field: ``requested`` (a ``PreprocessingSpec`` dict: zero values are
    unset) > ``model_config`` (partial fields from the model's own configuration, its ``source`` naming it) >
    the ``input_size``/``mean``/``std`` shorthand > the defaults. ``source`` lists the ones that applied.
    Height and width come as a pair. ``ValueError`` when no source gives the input size."""
    model_config = dict(model_config or {})
    config_source = str(model_config.pop("source", "") or "model configuration")
    unknown = sorted(set(model_config) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown model configuration fields {unknown}; valid fields: {', '.join(_FIELDS)}")
    shorthand = {"mean": tuple(mean), "std": tuple(std)}
    if input_size:
        shorthand["height"] = shorthand["width"] = input_size
    layers = [("request", _set(requested, "request")), (config_source, _set(model_config, config_source)),
              ("input_size/mean/std", _set(shorthand, "input_size/mean/std"))]
    chosen: dict[str, Any] = {}
    used: list[str] = []
    for name in ("size",) + _FIELDS[2:]:
        for label, values in layers:
            if name in values:
                chosen.update(values[name])
                used.append(label)
                break
        else:
            if name == "size":
                raise ValueError("the input size is unknown: set preprocessing height and width (or input_size); "
                                 "the model's own configuration does not give it")
            if name != "crop_offset":  # a detail of the model's own configuration, not a choice
                used.append("defaults")
    source = "; ".join(label for label in [label for label, _ in layers] + ["defaults"] if label in used)
    return Preprocessing(**chosen, source=source)


def from_timm(model: nn.Module) -> dict[str, Any]:
    """Partial fields from a timm model's data config (``timm.data.resolve_data_config({}, model=model)``): what
    ``timm.data.create_transform`` would do. A fixed input size the model was built with (``img_size``) wins over
    its pretrained_cfg's."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    crop_mode = config.get("crop_mode") or "center"
    modes = {"center": "shorter_side_crop", "squash": "exact"}
    if crop_mode not in modes:
        raise ValueError(f"timm crop_mode {crop_mode!r} is not supported; supported: {', '.join(modes)}")
    height, width = config["input_size"][-2:]
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(built, (tuple, list)) and len(built) == 2 and all(isinstance(v, int) and v > 0 for v in built):
        height, width = built
    elif isinstance(built, int) and built > 0:
        height = width = built
    out = {"height": int(height), "width": int(width), "resize_mode": modes[crop_mode],
           "crop_pct": float(config.get("crop_pct") or 0.875),  # timm's DEFAULT_CROP_PCT when unset
           "interpolation": config.get("interpolation") or "bilinear",
           "mean": _rgb("timm mean", config["mean"]), "std": _rgb("timm std", config["std"]),
           "crop_offset": "round", "source": "timm pretrained_cfg"}
    _choice("timm interpolation", out["interpolation"], INTERPOLATIONS)
    return out


_PIL_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling; 4 box, 5 hamming
# Keys of a preprocessor_config.json that do not change the input tensor of an image classifier.
_HF_IGNORED = {"image_processor_type", "processor_class", "feature_extractor_type", "_processor_class",
               "do_convert_rgb", "do_reduce_labels", "reduce_labels", "default_to_square", "data_format",
               "input_data_format", "return_tensors", "device", "disable_grouping", "image_seq_length",
               "transformers_version", "backend"}
_HF_HANDLED = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "crop_pct", "do_rescale",
               "rescale_factor", "do_normalize", "image_mean", "image_std"}


def from_hf_processor(config: Mapping[str, Any]) -> dict[str, Any]:
    """Partial fields from a Hugging Face ``preprocessor_config.json`` (ViT, DeiT, BEiT, Swin, ConvNeXt style):
    what the processor does on a PIL image. ``ValueError`` naming the settings that cannot be reproduced."""
    unsupported = sorted(k for k, v in config.items()
                         if k not in _HF_HANDLED | _HF_IGNORED and v not in (None, False, 0, "", [], {}))
    if not config.get("do_resize", True):
        unsupported.append("do_resize=false")
    if not config.get("do_rescale", True):
        unsupported.append("do_rescale=false")
    elif not math.isclose(float(config.get("rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-6):
        unsupported.append(f"rescale_factor={config.get('rescale_factor')} (only 1/255)")
    resample = config.get("resample", 2)
    if resample not in _PIL_CODES:
        unsupported.append(f"resample={resample} (supported: {', '.join(f'{c} {n}' for c, n in _PIL_CODES.items())})")
    size = dict(config.get("size") or {})
    crop = dict(config.get("crop_size") or {}) if config.get("do_center_crop") else {}
    if crop and not (crop.get("height") and crop.get("width")):
        unsupported.append(f"crop_size={config.get('crop_size')} (needs height and width)")
    out: dict[str, Any] = {"crop_offset": "floor", "source": "preprocessor_config.json"}
    if size.keys() - {"shortest_edge", "height", "width"} or not size:
        unsupported.append(f"size={config.get('size')} (supported: {{height, width}} or {{shortest_edge}})")
    elif "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if config.get("crop_pct") is not None:  # ConvNeXt: crop_pct below 384 px, a square warp from 384 px up
            if edge < 384:
                out.update(height=edge, width=edge, resize_mode="shorter_side_crop",
                           crop_pct=float(config["crop_pct"]))
            else:
                out.update(height=edge, width=edge, resize_mode="exact", crop_pct=1.0)
            if crop and (crop["height"], crop["width"]) != (edge, edge):
                unsupported.append("do_center_crop with crop_pct")
        elif crop:
            if crop["height"] != crop["width"]:
                unsupported.append(f"crop_size={config.get('crop_size')} after shortest_edge (only square)")
            elif crop["height"] > edge:
                unsupported.append(f"crop_size={config.get('crop_size')} larger than shortest_edge {edge}")
            else:
                out.update(height=crop["height"], width=crop["width"], resize_mode="shorter_side_crop",
                           crop_pct=_crop_pct(crop["height"], edge))
        else:
            unsupported.append(f"size={config.get('size')} without a centre crop (the input size would vary)")
    else:
        height, width = int(size["height"]), int(size["width"])
        if crop and (crop["height"], crop["width"]) != (height, width):
            pct = _crop_pct(crop["height"], height)
            if crop["height"] > height or crop["width"] > width or math.floor(crop["width"] / pct) != width:
                unsupported.append(f"crop_size={config.get('crop_size')} with size={config.get('size')} "
                                   "(only a crop in proportion to the size)")
            out.update(height=crop["height"], width=crop["width"], resize_mode="exact", crop_pct=pct)
        else:
            out.update(height=height, width=width, resize_mode="exact", crop_pct=1.0)
    if unsupported:
        raise ValueError(f"preprocessor_config.json settings not supported: {', '.join(unsupported)}")
    out["interpolation"] = _PIL_CODES[resample]
    if config.get("do_normalize", True):
        out["mean"] = _rgb("image_mean", config.get("image_mean", (0.5, 0.5, 0.5)))
        out["std"] = _rgb("image_std", config.get("image_std", (0.5, 0.5, 0.5)))
    else:
        out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return out


def _crop_pct(crop: int, size: int) -> float:
    """The crop_pct for which ``floor(crop / crop_pct) == size`` (crop / size, nudged up against rounding)."""
    pct = crop / size
    for _ in range(8):
        if math.floor(crop / pct) == size:
            return pct
        pct = math.nextafter(pct, 1.0) if math.floor(crop / pct) > size else math.nextafter(pct, 0.0)
    return pct


def _set(values: Mapping[str, Any], label: str) -> dict[str, dict[str, Any]]:
    """The fields ``values`` sets (zero values unset), grouped; height and width as the pair ``size``."""
    out: dict[str, dict[str, Any]] = {}
    height, width = values.get("height") or 0, values.get("width") or 0
    if bool(height) != bool(width):
        raise ValueError(f"{label}: set both height and width, or neither (got height={height}, width={width})")
    if height:
        out["size"] = {"height": height, "width": width}
    for name in _FIELDS[2:]:
        value = values.get(name)
        if value not in (None, "", 0, 0.0) and not (isinstance(value, (list, tuple)) and not value):
            out[name] = {name: tuple(value) if name in ("mean", "std") else value}
    return out


def _choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; not {value!r}")


def _rgb(name: str, values: Any) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        values = (values,) * 3
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (RGB), not {list(values)}")
    return values


def _pil_filter(name: str):
    from PIL import Image

    _choice("interpolation", name, INTERPOLATIONS)
    return {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}[name]


def _floats(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
