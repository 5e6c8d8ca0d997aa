"""Exemplar bundles: one zip per concept set, read back per concept without torch."""
import io

import numpy as np
import pytest
from PIL import Image

from gigaudit_server.exemplars import ierf_png, read_exemplars, thumbnail_png, write_bundle


def picture(h=8, w=6):
    return (np.arange(h * w * 3).reshape(h, w, 3) % 256).astype(np.uint8)


def test_round_trip_with_and_without_rendered_pngs():
    heat = np.zeros((8, 6))
    heat[2, 3] = 1.0
    rendered = {"image": 4, "image_name": "cat/4.png", "position": 7, "coefficient": 1.5,
                "thumbnail_png": thumbnail_png(picture()), "ierf_png": ierf_png(picture(), heat)}
    reference = {"image": 1, "image_name": "dog/1.png", "position": 0, "coefficient": 0.5}
    bundle = write_bundle({"layer1.0": [[rendered, reference], []], "layer2.0": [[reference]]})
    first = read_exemplars(bundle, "layer1.0", 0)
    assert [e["image"] for e in first] == [4, 1]
    assert first[0]["thumbnail_png"] == rendered["thumbnail_png"] and first[1]["ierf_png"] == b""
    assert read_exemplars(bundle, "layer1.0", 0, max_exemplars=1) == first[:1]
    assert read_exemplars(bundle, "layer1.0", 1) == []
    overlay = np.asarray(Image.open(io.BytesIO(first[0]["ierf_png"])))
    thumb = Image.open(io.BytesIO(first[0]["thumbnail_png"]))
    assert thumb.size == (72, 96)  # longer side 96, aspect kept
    hot, cold = overlay[2 * 12 + 6, 3 * 12 + 6], overlay[6 * 12 + 6, 6]  # pixels (2, 3) and (6, 0), scaled 12x
    assert hot[0] > 150 > hot[2]  # tinted red where the map is high
    assert cold[0] == round(0.4 * 108)  # darkened where it is zero (source red value 108)


def test_bad_requests_name_the_choices():
    bundle = write_bundle({"a": [[]], "b": [[], []]})
    with pytest.raises(ValueError, match="layers: a, b"):
        read_exemplars(bundle, "c", 0)
    with pytest.raises(ValueError, match=r"concepts 0\.\.1"):
        read_exemplars(bundle, "b", 2)
    with pytest.raises(ValueError, match="differs"):
        ierf_png(picture(), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="uint8"):
        thumbnail_png(np.zeros((4, 4, 3)))
