"""Exemplar bundles: per concept, its top exemplars as thumbnails (the iERF crop) and iERF views.

One bundle per concept set, stored as one ``exemplars`` artifact: a zip holding ``manifest.json`` and the images.
The bundle keeps the references (image, position, coefficient) of every concept's exemplars; only the concepts
that are shown (the most relevant ones, and those rendered on demand) have images. Torch-free (numpy + PIL), so the
API reads and merges bundles without torch; the worker renders them from ``gig.erf`` maps. Bundles are
byte-for-byte deterministic, so equal contents are one stored artifact.

Format 2 (``gigaudit.exemplars/2``) stores lossy WebP (about a fifth of the PNG bytes at 96 px); format-1 bundles
(PNG) are still read, and a merge of the two keeps each image's bytes as they are. The keys and the API fields keep
their historical names ``thumbnail_png`` / ``ierf_png``: they hold an encoded image, WebP or PNG (PIL and browsers
read both; the first bytes tell which).
"""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from PIL import Image

FORMAT = "gigaudit.exemplars/2"
READABLE_FORMATS = ("gigaudit.exemplars/1", FORMAT)
PNG_KEYS = ("thumbnail_png", "ierf_png")  # historical names: encoded images (WebP in format 2, PNG in format 1)
_REF_KEYS = ("image", "image_name", "position", "coefficient")
_THUMBNAIL = 96  # pixels on the longer side
_WEBP_QUALITY = 85  # lossy WebP; 96 px crops stay sharp (about 3-5 KB each)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same content gives the same bytes (and sha256)


def thumbnail_png(crop: np.ndarray, size: int = _THUMBNAIL) -> bytes:
    """A uint8 ``(H, W, 3)`` crop as WebP, upscaled (nearest) or downscaled so its longer side is ``size``."""
    return _encode(_fit(Image.fromarray(_rgb(crop)), size))


def ierf_png(image: np.ndarray, heat: np.ndarray, size: int = _THUMBNAIL) -> bytes:
    """The iERF view as WebP: the image (uint8 ``(H, W, 3)``) at full brightness where the iERF map ``heat``
    (``(H, W)``) is high, darkened where it is low, and a yellow contour where it crosses half its maximum.

    Nothing is tinted, so the region the concept responds to keeps its colours and contrast even at 96 px; the
    contour is drawn at the output size (two pixels wide, dark-edged), so downscaling cannot blur it away."""
    image = _rgb(image)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"iERF map shape {heat.shape} differs from the image's {image.shape[:2]}")
    picture = _fit(Image.fromarray(image), size)
    level = np.asarray(Image.fromarray(heat).resize(picture.size, Image.BILINEAR), dtype=np.float32)
    level = level / level.max() if level.max() > 0 else np.zeros_like(level)
    shaded = np.asarray(picture, dtype=np.float32) * (0.3 + 0.7 * np.sqrt(level))[..., None]
    inside = level >= 0.5
    edge = inside & ~_eroded(_eroded(inside))  # two pixels: lossy WebP halves the colour resolution
    shaded[_dilated(edge) & ~edge] *= 0.35  # a dark rim makes the contour readable on light images
    shaded[edge] = (255.0, 214.0, 0.0)
    return _encode(Image.fromarray(shaded.clip(0, 255).astype(np.uint8)))


def write_bundle(layers: dict[str, list[list[dict]]]) -> bytes:
    """A bundle from ``{layer: [per concept: [exemplar, ...]]}``.

    An exemplar is ``{image, image_name, position, coefficient, thumbnail_png?, ierf_png?}``; concepts whose
    exemplars were not rendered keep their references without images.
    """
    out = io.BytesIO()
    manifest = {"format": FORMAT, "layers": {}}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as bundle:  # images are compressed already
        for layer, concepts in layers.items():
            rows = manifest["layers"][layer] = []
            for concept, exemplars in enumerate(concepts):
                row = []
                for rank, exemplar in enumerate(exemplars):
                    ref = {k: exemplar[k] for k in _REF_KEYS}
                    for key in PNG_KEYS:
                        if exemplar.get(key):
                            ref[key] = f"{layer}/{concept}/{rank}.{key[:-4]}.{_suffix(exemplar[key])}"
                            bundle.writestr(zipfile.ZipInfo(ref[key], _EPOCH), exemplar[key])
                    row.append(ref)
                rows.append(row)
        bundle.writestr(zipfile.ZipInfo("manifest.json", _EPOCH), json.dumps(manifest, sort_keys=True))
    return out.getvalue()


def read_bundle(data: bytes) -> dict[str, list[list[dict]]]:
    """The whole bundle as ``write_bundle`` takes it; encoded images as bytes, absent where not rendered."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        layers = _manifest(bundle)
        return {layer: [[{**{k: ref[k] for k in _REF_KEYS}, **{k: bundle.read(ref[k]) for k in PNG_KEYS if k in ref}}
                         for ref in refs] for refs in concepts] for layer, concepts in layers.items()}


def rendered_concepts(data: bytes) -> dict[str, list[int]]:
    """``{layer: [concept, ...]}``: the concepts whose exemplars all have images (concepts without exemplars are
    left out: there is nothing to render)."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        return {layer: [k for k, refs in enumerate(concepts) if refs and all(_has_pngs(ref) for ref in refs)]
                for layer, concepts in _manifest(bundle).items()}


def merge_bundles(base: bytes, update: bytes) -> bytes:
    """``base`` with the images of ``update`` added where ``base`` has none for the same exemplar (same layer, concept,
    image and position). Commutative in what gets rendered, and idempotent: merging twice changes nothing."""
    merged, extra = read_bundle(base), read_bundle(update)
    for layer, concepts in merged.items():
        for concept, refs in enumerate(concepts):
            others = extra.get(layer, [])
            found = {(e["image"], e["position"]): e for e in (others[concept] if concept < len(others) else [])}
            for exemplar in refs:
                source = found.get((exemplar["image"], exemplar["position"]), {})
                if not _has_pngs(exemplar) and _has_pngs(source):
                    exemplar.update({k: source[k] for k in PNG_KEYS})
    return write_bundle(merged)


def read_exemplars(data: bytes, layer: str, concept: int, max_exemplars: int = 0) -> list[dict]:
    """The exemplars of one concept, images as bytes (``b""`` when not rendered, and then ``rendered`` is false);
    ``0`` = all stored."""
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        layers = _manifest(bundle)
        if layer not in layers:
            raise ValueError(f"no exemplars for layer {layer!r}; layers: {', '.join(layers)}")
        concepts = layers[layer]
        if not 0 <= concept < len(concepts):
            raise ValueError(f"concept {concept} out of range: layer {layer!r} has concepts 0..{len(concepts) - 1}")
        refs = concepts[concept][:max_exemplars or None]
        return [{**ref, **{key: bundle.read(ref[key]) if key in ref else b"" for key in PNG_KEYS},
                 "rendered": _has_pngs(ref)} for ref in refs]


def _manifest(bundle: zipfile.ZipFile) -> dict:
    manifest = json.loads(bundle.read("manifest.json"))
    if manifest.get("format") not in READABLE_FORMATS:
        raise ValueError(f"not an exemplar bundle of a known format ({', '.join(READABLE_FORMATS)}): "
                         f"{manifest.get('format')!r}")
    return manifest["layers"]


def _has_pngs(exemplar: dict) -> bool:
    return all(exemplar.get(key) for key in PNG_KEYS)


def _rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {array.dtype} {array.shape}")
    return array


def _fit(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    resample = Image.NEAREST if scale >= 1 else Image.BILINEAR
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=_WEBP_QUALITY, method=4)
    return out.getvalue()


def _suffix(encoded: bytes) -> str:
    """File suffix of an encoded image in the zip: format-1 bundles merged into format 2 keep their PNGs."""
    return "png" if encoded.startswith(b"\x89PNG") else "webp"


def _eroded(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its four neighbours (pixels outside the image count as set)."""
    padded = np.pad(mask, 1, constant_values=True)
    return (mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])


def _dilated(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1, constant_values=False)
    return (mask | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])
