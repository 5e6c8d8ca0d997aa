"""Probe sets go through the model's own transform, and their masks through the same resize and crop: on a
non-square probe whose mask marks exactly its white pixels, mask and image still agree after a shorter-side crop."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import torch
from PIL import Image

from gig.preprocessing import Preprocessing
from gigaudit_server.worker.probe_sets import ImageShape, load_probe_sets


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_masks_are_resized_and_cropped_like_their_images(tmp_path):
    members = {}
    for i in range(3):
        mask = np.zeros((24, 40), np.uint8)
        mask[:, 6 + 4 * i:18 + 4 * i] = 255  # a white band near the left edge: the centre crop cuts into it
        members[f"band/{i}.png"] = _png(np.repeat(mask[:, :, None], 3, axis=2))
        members[f"band/masks/{i}.png"] = _png(mask)
    path = tmp_path / "probes.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    preprocessing = Preprocessing(16, 16, crop_pct=0.8, interpolation="bicubic", mean=(0, 0, 0), std=(1, 1, 1))
    record = {"input_size": 16, "preprocessing": preprocessing.to_dict()}
    (probe,) = load_probe_sets(str(path), record, ImageShape(24, 24, 40, 40, frozenset({"colour"})))
    assert probe.images.shape == (3, 3, 16, 16) and probe.masks.shape == (3, 16, 16)
    first = Image.open(io.BytesIO(members["band/0.png"]))
    torch.testing.assert_close(probe.images[0], preprocessing(first), rtol=0, atol=1e-6)
    # the mask follows the image's geometry (bilinear here, bicubic there: close, not equal)
    assert (probe.masks - probe.images[:, 0]).abs().max() < 0.15
    assert probe.masks[:, :, :2].amax() > 0.5 and probe.masks[:, :, -2:].amax() < 0.05  # the band is kept, cropped
    squashed = Image.open(io.BytesIO(members["band/masks/0.png"])).resize((16, 16), Image.BILINEAR)
    legacy = torch.from_numpy(np.asarray(squashed, dtype=np.float32) / 255)
    assert (legacy - probe.masks[0]).abs().max() > 0.3  # a plain resize (no crop) would not line up
