"""The input transform of an audit, chosen to fit the data: side from the flag, else the model's own configuration,
else the dataset's image sizes; printed before the job starts, with a warning when images are upsampled.

The worker resizes every image to `side`×`side` (bilinear, aspect ratio not kept), takes RGB and normalises it
with the mean and std (gigaudit_server.worker.images).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FALLBACK_SIDE = 224  # when nothing else tells: the torchvision classifiers' training size
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class Transform:
    side: int
    source: str  # where `side` came from, for the printed line
    mean: list[float]
    std: list[float]
    norm_source: str

    def describe(self) -> str:
        return (f"resize to {self.side}x{self.side} px (bilinear, {self.source}), RGB, normalise mean "
                f"{_floats(self.mean)} std {_floats(self.std)} ({self.norm_source})")


def model_config_side(weights: Path) -> int | None:
    """The input side the weights' own configuration gives, or None.

    Hook for bringing your own model (issue 10): today, the safetensors `__metadata__` key "input_size" (a string,
    as safetensors metadata are), e.g. written by `safetensors.torch.save_file(state, path, {"input_size": "96"})`.
    """
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
    sizes = dataset.image_sizes if dataset.HasField("image_sizes") else None
    if sizes is None or not (sizes.median_height and sizes.median_width):
        return None
    return min(sizes.median_height, sizes.median_width)


def choose(given_side: int | None, weights: Path, dataset, mean: list[float] | None,
           std: list[float] | None) -> Transform:
    """The transform of an audit (see the module docstring)."""
    if given_side:
        side, source = given_side, "--input-size"
    elif (side := model_config_side(weights)) is not None:
        source = "from the model's configuration"
    elif (side := dataset_side(dataset)) is not None:
        source = "the dataset's median image size; --input-size to change"
    else:
        side, source = FALLBACK_SIDE, "the server reported no image sizes; --input-size to change"
    norm_source = "given" if mean is not None or std is not None else "ImageNet's; --mean/--std to change"
    return Transform(side, source, list(mean or IMAGENET_MEAN), list(std or IMAGENET_STD), norm_source)


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


def _floats(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
