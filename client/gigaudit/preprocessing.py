"""The input transform of an audit, as the CLI asks for it and as the server resolved it.

What the flags set (--input-size N or HxW, --resize, --crop-pct, --interpolation, --mean, --std) is sent as a
`gigaudit.v1.Preprocessing` request and wins over everything. The server fills the rest from the model's own
configuration (timm's pretrained_cfg, a Hugging Face preprocessor_config.json, an ONNX input shape), else from the
`input_size`/`mean`/`std` shorthand the CLI sends (the side from the weights' metadata, else the dataset's median
image size; ImageNet's normalisation), else its defaults: resize the shorter side, crop the centre, bilinear. The
worker then does the same transform for the analysis, the exemplars and the report (docs/preprocessing.md).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

FALLBACK_SIDE = 224  # when nothing else tells: the torchvision classifiers' training size
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RESIZE_MODES = {"shorter-side-crop": "RESIZE_MODE_SHORTER_SIDE_CROP", "exact": "RESIZE_MODE_EXACT"}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos")
# Architectures whose own configuration gives the preprocessing (resolved by the server, not known here).
_OWN_CONFIG = ("timm:", "huggingface", "onnx")


def parse_input_size(text: str) -> tuple[int, int]:
    """`--input-size`: `N` (square) or `HxW` (height x width), positive."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?", str(text))
    if not match:
        raise ValueError(f"input size must be N or HxW (height x width), e.g. 224 or 192x256; not {text!r}")
    height = int(match[1])
    width = int(match[2]) if match[2] else height
    if not (0 < height <= 4096 and 0 < width <= 4096):
        raise ValueError(f"input size must lie in 1..4096 px, not {text!r}")
    return height, width


def parse_crop_pct(text: str) -> float:
    """`--crop-pct`: the fraction of the resized image the centre crop keeps, in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"--crop-pct must lie in (0, 1], not {text}")
    return value


@dataclass
class Transform:
    """The transform as far as the client knows it (before the server resolves the model's own configuration)."""
    side: int  # the input's longer side (the square side for square inputs), for the upsampling warning
    source: str  # where the size came from, for the printed line
    mean: list[float]
    std: list[float]
    norm_source: str
    height: int = 0
    width: int = 0
    size_given: bool = False  # the size came from --input-size
    resize: str | None = None  # --resize (a key of RESIZE_MODES)
    crop_pct: float | None = None
    interpolation: str | None = None
    mean_given: bool = False
    std_given: bool = False

    def __post_init__(self):
        self.height, self.width = self.height or self.side, self.width or self.side

    @property
    def input_size(self) -> int:
        """The `input_size` shorthand sent with the model: the side of a square input, else 0."""
        return self.height if self.height == self.width else 0

    def request(self):
        """The `gigaudit.v1.Preprocessing` of what the flags set (the rest left for the server)."""
        from gigaudit.v1 import model_service_pb2 as model_pb

        message = model_pb.Preprocessing()
        if self.size_given:
            message.height, message.width = self.height, self.width
        if self.resize:
            message.resize_mode = model_pb.ResizeMode.Value(RESIZE_MODES[self.resize])
        if self.crop_pct:
            message.crop_pct = self.crop_pct
        if self.interpolation:
            message.interpolation = model_pb.Interpolation.Value(f"INTERPOLATION_{self.interpolation.upper()}")
        if self.mean_given:
            message.mean[:] = self.mean
        if self.std_given:
            message.std[:] = self.std
        return message

    def requested(self) -> dict:
        """What the flags set, as plain values (for the model id and for comparing with a registered model)."""
        out = {}
        if self.size_given:
            out.update(height=self.height, width=self.width)
        if self.resize:
            out["resize_mode"] = self.resize
        if self.crop_pct:
            out["crop_pct"] = self.crop_pct
        if self.interpolation:
            out["interpolation"] = self.interpolation
        if self.mean_given:
            out["mean"] = [float(v) for v in self.mean]
        if self.std_given:
            out["std"] = [float(v) for v in self.std]
        return out

    def predicted(self) -> dict:
        """The transform the server resolves when the model has no configuration of its own."""
        return {"height": self.height, "width": self.width, "resize_mode": self.resize or "shorter-side-crop",
                "crop_pct": self.crop_pct or 1.0, "interpolation": self.interpolation or "bilinear",
                "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> str:
        fields = self.predicted()
        return _describe(fields, f"size: {self.source}; normalisation: {self.norm_source}")


def model_config_side(weights: Path) -> int | None:
    """The input side the weights' own configuration gives, or None: the safetensors `__metadata__` key
    "input_size" (a string, as safetensors metadata are), e.g. written by
    `safetensors.torch.save_file(state, path, {"input_size": "96"})`. (timm, Hugging Face and ONNX models carry
    their own configuration, which the server reads.)"""
    import json
    import struct

    try:
        with Path(weights).open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100 << 20:
                return None
            metadata = json.loads(f.read(length)).get("__metadata__") or {}
        side = int(metadata.get("input_size", 0))
    except (OSError, ValueError, struct.error, AttributeError):
        return None
    return side if side > 0 else None


def dataset_side(dataset) -> int | None:
    """The smaller of the dataset's median image height and width (a `Dataset` message), or None when the server
    did not record sizes: the typical image is then never upsampled."""
    sizes = dataset.image_sizes if dataset is not None and dataset.HasField("image_sizes") else None
    if sizes is None or not (sizes.median_height and sizes.median_width):
        return None
    return min(sizes.median_height, sizes.median_width)


def choose(given_size: int | tuple[int, int] | None, weights: Path, dataset, mean: list[float] | None,
           std: list[float] | None, *, resize: str | None = None, crop_pct: float | None = None,
           interpolation: str | None = None) -> Transform:
    """The transform of an audit as far as the client knows it (see the module docstring)."""
    height = width = 0
    if given_size:
        height, width = (given_size, given_size) if isinstance(given_size, int) else tuple(given_size)
        side, source = max(height, width), "--input-size"
    elif (side := model_config_side(weights)) is not None:
        source = "from the model's configuration"
    elif (side := dataset_side(dataset)) is not None:
        source = "the dataset's median image size; --input-size to change"
    else:
        side, source = FALLBACK_SIDE, "the server reported no image sizes; --input-size to change"
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f"--resize must be one of {', '.join(RESIZE_MODES)}, not {resize!r}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, not {interpolation!r}")
    norm_source = "given" if mean is not None or std is not None else "ImageNet's; --mean/--std to change"
    return Transform(side, source, list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD), norm_source,
                     height=height, width=width, size_given=bool(given_size), resize=resize, crop_pct=crop_pct,
                     interpolation=interpolation, mean_given=mean is not None, std_given=std is not None)


def has_own_config(architecture: str) -> bool:
    """Whether the server takes the architecture's preprocessing from the model's own configuration."""
    return architecture.startswith(_OWN_CONFIG[0]) or architecture in _OWN_CONFIG[1:]


def resolved(model) -> dict | None:
    """A registered `Model`'s resolved preprocessing as plain values, or None when the server gave none."""
    from gigaudit.v1 import model_service_pb2 as model_pb

    p = model.preprocessing if model.HasField("preprocessing") else None
    if p is None or not (p.height and p.width):
        return None
    mode = model_pb.ResizeMode.Name(p.resize_mode)
    modes = {v: k for k, v in RESIZE_MODES.items()}
    interpolation = model_pb.Interpolation.Name(p.interpolation).removeprefix("INTERPOLATION_").lower()
    return {"height": p.height, "width": p.width, "resize_mode": modes.get(mode, "shorter-side-crop"),
            "crop_pct": p.crop_pct or 1.0,
            "interpolation": interpolation if interpolation in INTERPOLATIONS else "bilinear",
            "mean": list(p.mean), "std": list(p.std), "source": p.source}


def describe_model(model) -> str | None:
    """One line of a registered model's resolved preprocessing (with its source), or None."""
    fields = resolved(model)
    return None if fields is None else _describe(fields, fields["source"] or "server")


def same(a: dict, b: dict) -> bool:
    """Whether two transforms (plain values) are the same, floats compared at float32 precision."""
    return not differences(a, {k: v for k, v in b.items() if k != "source"})


def differences(have: dict, wanted: dict) -> list[str]:
    """'field: registered vs given' for each wanted field of a transform the registered one does not have."""
    found = []
    for field, value in wanted.items():
        got = have.get(field)
        if isinstance(value, (float, list)):
            values, gots = (value, got) if isinstance(value, list) else ([value], [got])
            ok = got is not None and len(values) == len(gots) and all(
                math.isclose(g, v, rel_tol=1e-6, abs_tol=1e-6) for g, v in zip(gots, values))
        else:
            ok = got == value
        if not ok:
            found.append(f"preprocessing {field}: {got} registered vs {value} given")
    return found


def upsampling_warning(transform: Transform, dataset) -> str | None:
    """A sentence when some images are smaller than the input side (they are upsampled), else None."""
    if not dataset.HasField("image_sizes"):
        return None
    sizes = dataset.image_sizes
    small = min(sizes.min_height or transform.side, sizes.min_width or transform.side)
    if small >= transform.side:
        return None
    typical = min(sizes.median_height, sizes.median_width)
    which = "most images" if typical and typical < transform.side else "some images"
    return (f"{which} are smaller than {transform.side} px (smallest {sizes.min_width}x{sizes.min_height}, median "
            f"{sizes.median_width}x{sizes.median_height}) and are upsampled: slower and no more detail; "
            f"--input-size {typical or small} keeps them at their size")


def _describe(fields: dict, source: str) -> str:
    """E.g. 'resize to 224x224 px: shorter side to 256, centre crop (bicubic), RGB, normalise mean [...] std [...]
    (timm pretrained_cfg)'."""
    height, width, crop_pct = fields["height"], fields["width"], fields["crop_pct"] or 1.0
    scale_h, scale_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
    if fields["resize_mode"] == "exact":
        how = "aspect ratio not kept" if (scale_h, scale_w) == (height, width) else \
            f"{scale_w}x{scale_h} (aspect ratio not kept), centre crop"
    elif scale_h == scale_w:
        how = f"shorter side to {scale_h}, centre crop"
    else:
        how = f"aspect ratio kept to cover {scale_w}x{scale_h}, centre crop"
    return (f"resize to {width}x{height} px: {how} ({fields['interpolation']}), RGB, normalise mean "
            f"{_floats(fields['mean'])} std {_floats(fields['std'])} ({source})")


def _floats(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
