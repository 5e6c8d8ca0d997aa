"""Exemplar bundles: per concept, its top exemplars as PNG thumbnails (the iERF crop) and iERF overlays.

One bundle per concept set, stored as one ``exemplars`` artifact: a zip holding ``manifest.json`` and the PNGs.
Torch-free (numpy + PIL), so the API reads bundles without torch; the worker renders them from ``gig.erf`` maps.
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image

FORMAT = "gigaudit.exemplars/1"
_THUMBNAIL = 96  # pixels on the longer side


def thumbnail_png(crop: np.ndarray, size: int = _THUMBNAIL) -> bytes:
    """A uint8 ``(H, W, 3)`` crop as PNG, upscaled (nearest) or downscaled so its longer side is ``size``."""
    return _png(_fit(Image.fromarray(_rgb(crop)), size))


def ierf_png(image: np.ndarray, heat: np.ndarray, size: int = _THUMBNAIL) -> bytes:
    """The image (uint8 ``(H, W, 3)``) darkened where the iERF map ``heat`` (``(H, W)``) is low, tinted red to
    yellow where it is high."""
    image = _rgb(image).astype(np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"iERF map shape {heat.shape} differs from the image's {image.shape[:2]}")
    level = heat / heat.max() if heat.max() > 0 else heat
    tint = np.stack([np.full_like(level, 255.0), 255.0 * level, np.zeros_like(level)], axis=-1)
    alpha = 0.6 * level[..., None]
    blended = (1 - alpha) * image * (0.4 + 0.6 * level[..., None]) + alpha * tint
    return _png(_fit(Image.fromarray(blended.clip(0, 255).astype(np.uint8)), size))


def write_bundle(layers: dict[str, list[list[dict]]]) -> bytes:
    """A bundle from ``{layer: [per concept: [exemplar, ...]]}``.

    An exemplar is ``{image, image_name, position, coefficient, thumbnail_png?, ierf_png?}``; concepts whose
    exemplars were not rendered keep their references without PNGs.
    """
    out = io.BytesIO()
    manifest = {"format": FORMAT, "layers": {}}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as bundle:  # PNGs are compressed already
        for layer, concepts in layers.items():
            rows = manifest["layers"][layer] = []
            for concept, exemplars in enumerate(concepts):
                row = []
                for rank, exemplar in enumerate(exemplars):
                    ref = {k: exemplar[k] for k in ("image", "image_name", "position", "coefficient")}
                    for key in ("thumbnail_png", "ierf_png"):
                        if exemplar.get(key):
                            ref[key] = f"{layer}/{concept}/{rank}.{key[:-4]}.png"
                            bundle.writestr(ref[key], exemplar[key])
                    row.append(ref)
                rows.append(row)
        bundle.writestr("manifest.json", json.dumps(manifest))
    return out.getvalue()


def read_exemplars(data: bytes, layer: str, concept: int, max_exemplars: int = 0) -> list[dict]:
    """The exemplars of one concept, PNGs as bytes (``b""`` when not rendered); ``0`` = all stored."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        layers = json.loads(bundle.read("manifest.json"))["layers"]
        if layer not in layers:
            raise ValueError(f"no exemplars for layer {layer!r}; layers: {', '.join(layers)}")
        concepts = layers[layer]
        if not 0 <= concept < len(concepts):
            raise ValueError(f"concept {concept} out of range: layer {layer!r} has concepts 0..{len(concepts) - 1}")
        refs = concepts[concept][:max_exemplars or None]
        return [{**ref, **{key: bundle.read(ref[key]) if key in ref else b"" for key in ("thumbnail_png", "ierf_png")}}
                for ref in refs]


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {array.dtype} {array.shape}")
    return array


def _fit(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
