"""Exemplar bundle format 2: WebP images, format-1 (PNG) bundles still read and merged, iERF views that keep the
region they point at readable."""
import io
import json
import zipfile

import numpy as np
from PIL import Image

from gigaudit_server.storage import exemplars


def picture(size=64):
    yy, xx = np.mgrid[:size, :size]
    board = np.where((yy // 4 + xx // 4) % 2, 230, 25).astype(np.uint8)
    return np.stack([board] * 3, axis=-1)


def format1_bundle(png: bytes) -> bytes:
    ref = {"image": 0, "image_name": "a/0.png", "position": 1, "coefficient": 1.0,
           "thumbnail_png": "l/0/0.thumbnail.png", "ierf_png": "l/0/0.ierf.png"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("l/0/0.thumbnail.png", png)
        z.writestr("l/0/0.ierf.png", png)
        z.writestr("manifest.json", json.dumps({"format": "gigaudit.exemplars/1", "layers": {"l": [[ref], []]}}))
    return out.getvalue()


def photo(size=96):
    """Smooth shading with sensor-like noise, as photographs have."""
    yy, xx = np.mgrid[:size, :size]
    noise = np.random.default_rng(0).normal(0, 12, (size, size, 3))
    return (np.stack([xx * 2.0, yy * 2.0, (xx + yy) * 1.0], axis=-1) + 20 + noise).clip(0, 255).astype(np.uint8)


def test_images_are_webp_and_small():
    thumb = exemplars.thumbnail_png(photo())
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"
    png = io.BytesIO()
    Image.fromarray(photo()).save(png, format="PNG")
    assert len(thumb) < len(png.getvalue())
    assert Image.open(io.BytesIO(thumb)).size == (96, 96)


def test_format1_bundles_are_read_and_merged():
    png = io.BytesIO()
    Image.fromarray(picture(8)).save(png, format="PNG")
    old = format1_bundle(png.getvalue())
    assert exemplars.rendered_concepts(old) == {"l": [0]}
    assert exemplars.read_exemplars(old, "l", 0)[0]["thumbnail_png"] == png.getvalue()
    fresh = {"image": 2, "image_name": "a/2.png", "position": 0, "coefficient": 0.5,
             "thumbnail_png": exemplars.thumbnail_png(picture()),
             "ierf_png": exemplars.ierf_png(picture(), np.ones((64, 64)))}
    stripped = {k: v for k, v in exemplars.read_bundle(old)["l"][0][0].items() if k not in exemplars.PNG_KEYS}
    update = exemplars.write_bundle({"l": [[stripped], [fresh]]})
    assert exemplars.merge_bundles(update, old) == exemplars.write_bundle(  # old PNGs fill the new bundle's gap
        {"l": [exemplars.read_bundle(old)["l"][0], [fresh]]})
    merged = exemplars.write_bundle({"l": [exemplars.read_bundle(old)["l"][0], [fresh]]})
    assert json.loads(zipfile.ZipFile(io.BytesIO(merged)).read("manifest.json"))["format"] == exemplars.FORMAT
    assert exemplars.read_exemplars(merged, "l", 0)[0]["thumbnail_png"] == png.getvalue()  # kept as PNG
    names = zipfile.ZipFile(io.BytesIO(merged)).namelist()
    assert "l/0/0.thumbnail.png" in names and "l/1/0.thumbnail.webp" in names


def test_ierf_view_keeps_the_region_readable_and_darkens_the_rest():
    heat = np.zeros((64, 64))
    heat[16:48, 16:48] = 1.0
    view = np.asarray(Image.open(io.BytesIO(exemplars.ierf_png(picture(), heat))).convert("L"), dtype=float)
    original = np.asarray(Image.fromarray(picture()).resize((96, 96), Image.NEAREST).convert("L"), dtype=float)
    centre = (slice(36, 60), slice(36, 60))
    assert view[centre].std() > 0.8 * original[centre].std()  # not washed out where the iERF is high
    assert view[:10, :10].mean() < 0.5 * original[:10, :10].mean()  # darkened where it is zero
    rgb = np.asarray(Image.open(io.BytesIO(exemplars.ierf_png(picture(), heat))))
    assert ((rgb[..., 0] > 200) & (rgb[..., 1] > 170) & (rgb[..., 2] < 90)).sum() > 60  # the yellow contour
