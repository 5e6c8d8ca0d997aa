"""Probe datasets as ``gig.naming.ProbeSet`` objects (worker side): one folder per named concept, optional masks.

Layout (``storage.archives``): ``<name>/<image>`` for every probe image, and optionally ``<name>/masks/<image>``
(same file name) marking where the concept is; a folder either gives every image a mask or none. Probe images are
preprocessed exactly like the audit's images (``ArchiveImages`` with the model record's
``gig.preprocessing.Preprocessing``); masks are read as greyscale in ``[0, 1]`` and resized and cropped like their
images (bilinear).

Before anything is resized, every probe image must have the size and colour mode of the audit images the probes are
contrasted with (the ``negatives``): resizing a probe of another scale, or colouring a greyscale one, would name
concepts after the resampling. Every refusal is a ``ValueError`` that names the probe folder.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from gig.naming import ProbeSet
from gig.preprocessing import Preprocessing
from gigaudit_server.storage.datasets.archives import Archive, DatasetLimits, decode_image
from gigaudit_server.worker.images import ArchiveImages

#: Audit images the probes are contrasted with (evenly spaced over the dataset).
MAX_NEGATIVES = 64
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class ImageShape:
    """The sizes (min and max height and width) and colour kinds of a set of raw images."""
    min_height: int
    max_height: int
    min_width: int
    max_width: int
    colours: frozenset[str]  # "colour" and/or "greyscale"

    def describe(self) -> str:
        heights = _span(self.min_height, self.max_height)
        widths = _span(self.min_width, self.max_width)
        return f"{widths}x{heights} px (width x height), {' or '.join(sorted(self.colours))}"


def negative_indices(n_images: int, limit: int = MAX_NEGATIVES) -> list[int]:
    """Up to ``limit`` image indices spread evenly over ``n_images`` (so that every class folder takes part)."""
    count = min(n_images, limit)
    return sorted({i * n_images // count for i in range(count)}) if count else []


def raw_shape(path: str, indices: Sequence[int], limits: DatasetLimits = DatasetLimits()) -> ImageShape:
    """The raw sizes and colour kinds of the images at ``indices`` of the archive at ``path`` (one pass)."""
    wanted, heights, widths, colours = set(indices), [], [], set()
    with open(path, "rb") as f, Archive(f, limits) as archive:
        for position, member in enumerate(archive.images()):
            if position in wanted:
                image = decode_image(member.name, member.load(), limits)
                heights.append(image.height)
                widths.append(image.width)
                colours.add(_colour(image))
            if position >= max(wanted, default=-1):
                break
    if not heights:
        raise ValueError("the audit dataset has no images to contrast the probes with")
    return ImageShape(min(heights), max(heights), min(widths), max(widths), frozenset(colours))


def load_probe_sets(path: str, record: dict, reference: ImageShape,
                    limits: DatasetLimits = DatasetLimits()) -> list[ProbeSet]:
    """The probe sets of the probe archive at ``path``, preprocessed like the model ``record``'s input, after the
    raw checks against ``reference`` (the audit images' :class:`ImageShape`)."""
    preprocessing = Preprocessing.from_record(record)
    data = ArchiveImages(path, preprocessing, batch_size=64, limits=limits)
    if not data.class_names:
        raise ValueError("the probe dataset must hold one folder per named concept (name/image.png), not loose "
                         "images")
    masks = _checked_masks(path, reference, preprocessing, limits)
    images = torch.cat([batch[0] for batch in data])
    probes = []
    for index, name in enumerate(data.class_names):
        rows = (data.labels == index).nonzero().flatten()
        if not len(rows):
            raise ValueError(f"probe folder {name!r} holds no images")
        files = [data.names[i] for i in rows.tolist()]
        found = [masks.get(file) for file in files]
        if any(m is not None for m in found) and not all(m is not None for m in found):
            lacking = [file for file, m in zip(files, found) if m is None]
            raise ValueError(f"probe folder {name!r}: images {lacking[:3]} have no mask in {name}/masks/; give "
                             "every image of a folder a mask (same file name), or none")
        stacked = torch.stack(found) if found[0] is not None else None
        try:
            probes.append(ProbeSet(name, images[rows], stacked))
        except ValueError as exc:
            raise ValueError(f"probe folder {name!r}: {exc}") from None
    orphans = sorted(set(masks) - set(data.names))
    if orphans:
        raise ValueError(f"probe folder {orphans[0].split('/')[0]!r}: masks without an image of the same name: "
                         f"{', '.join(_mask_name(o) for o in orphans[:3])}")
    return probes


def _checked_masks(path: str, reference: ImageShape, preprocessing: Preprocessing,
                   limits: DatasetLimits) -> dict[str, torch.Tensor]:
    """One raw pass: check every probe image against ``reference``; return ``{image member: mask (H, W)}``."""
    sizes, masks = {}, {}
    with open(path, "rb") as f, Archive(f, limits) as archive:
        for member in archive.images(masks=True):
            image = decode_image(member.name, member.load(), limits)
            folder = member.name.split("/")[0]
            if member.mask:
                image_name = f"{folder}/{member.name.split('/')[-1]}"
                grey = np.asarray(preprocessing.resize_crop(image.convert("L"), "bilinear"), dtype=np.float32)
                masks[image_name] = (torch.from_numpy(grey) / 255, (image.width, image.height), member.name)
                continue
            sizes[member.name] = (image.width, image.height)
            if not (reference.min_width <= image.width <= reference.max_width
                    and reference.min_height <= image.height <= reference.max_height):
                raise ValueError(f"probe folder {folder!r}: image {member.name!r} is {image.width}x{image.height} "
                                 f"px, but the audit images are {reference.describe()}; give probes the audit "
                                 "images' size")
            if _colour(image) not in reference.colours:
                raise ValueError(f"probe folder {folder!r}: image {member.name!r} is {_colour(image)} (mode "
                                 f"{image.mode}), but the audit images are {reference.describe()}")
    out = {}
    for image_name, (mask, mask_size, mask_member) in masks.items():
        if image_name in sizes and sizes[image_name] != mask_size:
            raise ValueError(f"probe folder {image_name.split('/')[0]!r}: mask {mask_member!r} is "
                             f"{mask_size[0]}x{mask_size[1]} px, its image {sizes[image_name][0]}x"
                             f"{sizes[image_name][1]} px")
        out[image_name] = mask
    return out


def _mask_name(image_name: str) -> str:
    folder, file = image_name.split("/", 1)
    return f"{folder}/masks/{file}"


def _colour(image: Image.Image) -> str:
    return "greyscale" if image.mode in _GREY_MODES else "colour"


def _span(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"
