"""Images with planted parts, and PartsNet: the small demo CNN trained on them.

Every image holds two *parts* on a cluttered, noisy background. A part is one combination of a shape (disc,
square, triangle), a colour (red, green, blue) and a texture (solid, striped); no single attribute identifies a
part. A *class* is defined by the pair of parts it shows, and every part belongs to two classes, so the model must
recognise both parts of an image to name its class. The ground truth of where each part lies comes with every
image, so tests can check that concepts land on the planted parts.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: The planted parts as (shape, colour, texture); part id = index + 1 (0 is the background).
PARTS: list[tuple[str, str, str]] = [
    ("disc", "red", "solid"),
    ("square", "red", "striped"),
    ("square", "green", "solid"),
    ("triangle", "green", "striped"),
    ("triangle", "blue", "solid"),
    ("disc", "blue", "striped"),
]
PART_NAMES: list[str] = [f"{texture} {colour} {shape}" for shape, colour, texture in PARTS]
#: The part ids (1-based) that define each class.
CLASS_PARTS: list[tuple[int, int]] = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1)]
CLASS_NAMES: list[str] = [f"{PART_NAMES[a - 1]} & {PART_NAMES[b - 1]}" for a, b in CLASS_PARTS]

_COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95)}
ASSETS = Path(__file__).with_name("assets")


def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    if shape == "disc":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        side = 0.85 * radius
        return (np.abs(dx) <= side) & (np.abs(dy) <= side)
    if shape == "triangle":  # apex up
        return (dy >= -radius) & (dy <= radius) & (np.abs(dx) <= (dy + radius) / 2)
    if shape == "ring":
        return (dx**2 + dy**2 <= radius**2) & (dx**2 + dy**2 >= (0.55 * radius) ** 2)
    if shape == "cross":  # a plus sign
        arm = 0.3 * radius
        return ((np.abs(dx) <= arm) | (np.abs(dy) <= arm)) & (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= radius
    if shape == "bar":  # a horizontal bar
        return (np.abs(dx) <= radius) & (np.abs(dy) <= 0.4 * radius)
    raise ValueError(f"unknown shape {shape!r}; valid shapes are: {', '.join(SHAPES)}")


SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar")
TEXTURES = ("solid", "striped", "checker", "dots", "hstripes", "vstripes")


def _texture(texture: str, yy: np.ndarray, xx: np.ndarray, phase: int) -> np.ndarray:
    """Where a texture shows its full colour (True) rather than a dark shade of it."""
    if texture == "striped":  # diagonal stripes, 2 px
        return ((xx + yy + phase) // 2) % 2 == 0
    if texture == "checker":  # 3-px checks
        return ((xx + phase) // 3 + (yy + phase) // 3) % 2 == 0
    if texture == "dots":  # a dot every 4 px
        return ((xx + phase) % 4 < 2) & ((yy + phase) % 4 < 2)
    if texture == "hstripes":
        return ((yy + phase) // 2) % 2 == 0
    if texture == "vstripes":
        return ((xx + phase) // 2) % 2 == 0
    raise ValueError(f"unknown texture {texture!r}; valid textures are: {', '.join(TEXTURES)}")


def draw_part(image: np.ndarray, mask: np.ndarray, part: int, shape: str, rgb, texture: str, cy: float, cx: float,
              radius: float, rng: np.random.Generator) -> None:
    """Draw one part in place: ``shape`` of colour ``rgb`` (jittered in brightness) and ``texture`` centred at
    ``(cy, cx)``; its pixels get id ``part`` in ``mask``."""
    size = image.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size]
    inside = _shape_mask(shape, yy - cy, xx - cx, radius)
    rgb = np.clip(np.asarray(rgb) * rng.uniform(0.8, 1.1), 0, 1)
    if texture == "solid":
        fill = np.broadcast_to(rgb[:, None, None], image.shape)
    else:
        light = _texture(texture, yy, xx, int(rng.integers(0, 4)))
        fill = np.where(light[None], rgb[:, None, None], 0.25 * rgb[:, None, None])
    image[:, inside] = fill[:, inside]
    mask[inside] = part


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey noise plus a few grey strokes and blobs, so that the background is never empty."""
    image = rng.uniform(0.3, 0.6) + rng.normal(0.0, 0.06, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(2, 5)):
        grey = rng.uniform(0.1, 0.9)
        if rng.random() < 0.5:  # a stroke: a thin band along a random line
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-size / 3, size / 3)
            dist = np.abs((xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle) - offset)
            image[dist < 0.8] = grey
        else:  # a blob
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1.0, size / 12)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = grey
    return np.repeat(image[None], 3, axis=0)


def _draw_part(image: np.ndarray, mask: np.ndarray, part: int, cy: float, cx: float, radius: float,
               rng: np.random.Generator) -> None:
    shape, colour, texture = PARTS[part - 1]
    draw_part(image, mask, part, shape, _COLOURS[colour], texture, cy, cx, radius, rng)


def make_parts_dataset(n: int, size: int = 32, seed: int = 0):
    """``n`` images with planted parts.

    Returns ``images`` (n, 3, size, size) float in [0, 1], ``labels`` (n,) class ids (balanced, shuffled) and
    ``part_masks`` (n, size, size) int64: 0 = background, ``1..len(PARTS)`` = the part drawn at that pixel.
    Classes are :data:`CLASS_NAMES`; class ``c`` shows the parts :data:`CLASS_PARTS` ``[c]``, each placed in a
    random one of the four quadrants with jitter in position and size. Deterministic for a seed.
    """
    if n < 1:
        raise ValueError(f"n must be a positive number of images, not {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_PARTS))
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    quarter, jitter = size / 4, size / 16
    for i, label in enumerate(labels):
        image = _background(rng, size)
        slots = rng.choice(4, size=2, replace=False)
        for part, slot in zip(CLASS_PARTS[label], slots):
            cy = quarter * (1 + 2 * (slot // 2)) + rng.uniform(-jitter, jitter)
            cx = quarter * (1 + 2 * (slot % 2)) + rng.uniform(-jitter, jitter)
            _draw_part(image, masks[i], part, cy, cx, size * rng.uniform(0.14, 0.18), rng)
        images[i] = np.clip(image, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(masks)


def parts_archive(n: int, size: int = 32, seed: int = 0, folder_names: list[str] | None = None) -> bytes:
    """An ImageFolder-style tar of the ``n`` images of :func:`make_parts_dataset` as PNGs, ``<folder>/<i>.png``
    in dataset order, the folder of each image named after its class (``folder_names[label]``, default
    :data:`CLASS_NAMES`)."""
    from PIL import Image

    names = CLASS_NAMES if folder_names is None else list(folder_names)
    if len(names) != len(CLASS_NAMES):
        raise ValueError(f"need {len(CLASS_NAMES)} folder names, one per class, not {len(names)}")
    images, labels, _ = make_parts_dataset(n, size=size, seed=seed)
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for i, (picture, label) in enumerate(zip(pixels, labels.tolist())):
            png = io.BytesIO()
            Image.fromarray(picture).save(png, format="PNG")
            member = tarfile.TarInfo(f"{names[label]}/{i:05d}.png")
            member.size = png.tell()
            png.seek(0)
            tar.addfile(member, png)
    return out.getvalue()


def part_coverage(part_masks: torch.Tensor, grid: int, n_parts: int | None = None) -> torch.Tensor:
    """Fraction of each cell of a ``grid × grid`` partition covered by each part: ``(n, n_parts, grid·grid)``,
    cells in row-major order like PFV positions (``gig.pfv``). ``size`` must be a multiple of ``grid``;
    ``n_parts`` defaults to ``len(PARTS)`` or the largest id in the masks, whichever is larger."""
    n, size, _ = part_masks.shape
    if size % grid:
        raise ValueError(f"the image size {size} is not a multiple of the grid {grid}")
    n_parts = n_parts or max(len(PARTS), int(part_masks.max()))
    onehot = nn.functional.one_hot(part_masks, n_parts + 1).permute(0, 3, 1, 2).float()
    return nn.functional.avg_pool2d(onehot, size // grid)[:, 1:].flatten(2)


def part_labels(part_masks: torch.Tensor, grid: int, min_cover: float = 0.25) -> torch.Tensor:
    """The ground-truth part of each cell of a ``grid × grid`` partition (e.g. a layer's PFV positions):
    ``(n, grid·grid)`` with the part id covering most of the cell when it covers at least ``min_cover`` of it,
    ``0`` when no part touches the cell, ``-1`` (ambiguous) otherwise."""
    best, part = part_coverage(part_masks, grid).max(1)
    return torch.where(best >= min_cover, part + 1, torch.where(best > 0, -1, 0))


class ConvBlock(nn.Module):
    """conv 3×3 → batch norm → ReLU, then an optional 2×2 max pool. Its output is a cut of :class:`PartsNet`."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class PartsNet(nn.Module):
    """A small CNN: ``features`` = four :class:`ConvBlock` (32 → 16 → 8 → 4 → 4 px for 32-px input), then global
    average pooling and a linear ``head`` (not ``classifier``: that name marks a VGG for ``default_layers``).
    ``gig.default_layers`` yields ``features.0`` … ``features.3``."""

    def __init__(self, num_classes: int = len(CLASS_NAMES), width: int = 16):
        super().__init__()
        if num_classes < 2 or width < 1:
            raise ValueError(f"need num_classes >= 2 and width >= 1, got {num_classes} and {width}")
        self.num_classes, self.width = num_classes, width
        self.features = nn.Sequential(
            ConvBlock(3, width, pool=True),
            ConvBlock(width, 2 * width, pool=True),
            ConvBlock(2 * width, 2 * width, pool=True),
            ConvBlock(2 * width, 4 * width, pool=False),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (run in eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            predictions = torch.cat([model(images[i:i + batch_size]).argmax(1)
                                     for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)
    return (predictions == labels).float().mean().item()


def train_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int = 6, seed: int = 0,
                     batch_size: int = 64, lr: float = 3e-3) -> float:
    """Train ``model`` in place on ``(images, labels)`` (Adam with a one-cycle schedule, horizontal flips as
    augmentation) and leave it in eval mode; returns the seconds it took. Reproducible for a seed on one machine."""
    torch.manual_seed(seed)
    n_train = len(images)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-n_train // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=generator)
        for i in range(0, n_train, batch_size):
            index = order[i:i + batch_size]
            batch = images[index]
            flip = torch.rand(len(index), generator=generator) < 0.5  # planted parts are (nearly) symmetric
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return time.perf_counter() - start


def train_parts_net(n_train: int = 3000, epochs: int = 6, width: int = 16, seed: int = 0, size: int = 32,
                    batch_size: int = 64, lr: float = 3e-3, n_test: int = 600):
    """Train a :class:`PartsNet` on :func:`make_parts_dataset` (seed ``seed``), test on a fresh set (seed
    ``seed + 1``). Returns ``(model in eval mode, info)`` with ``info`` = train/test accuracy, seconds, settings.
    Reproducible for a seed on one machine (:func:`train_classifier`)."""
    torch.manual_seed(seed)
    images, labels, _ = make_parts_dataset(n_train, size=size, seed=seed)
    test_images, test_labels, _ = make_parts_dataset(n_test, size=size, seed=seed + 1)
    model = PartsNet(len(CLASS_NAMES), width=width)
    seconds = train_classifier(model, images, labels, epochs, seed, batch_size, lr)
    info = {
        "classes": CLASS_NAMES, "parts": PART_NAMES, "class_parts": [list(p) for p in CLASS_PARTS],
        "width": width, "size": size, "seed": seed, "n_train": n_train, "n_test": n_test, "epochs": epochs,
        "train_accuracy": accuracy(model, images, labels), "test_accuracy": accuracy(model, test_images, test_labels),
        "train_seconds": round(seconds, 2), "torch_threads": torch.get_num_threads(),
    }
    return model, info


def save_parts_net(model: PartsNet, info: dict, path: str | Path) -> None:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (classes, parts, training figures)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")


def load_parts_net(path: str | Path = ASSETS / "partsnet"):
    """The trained demo model (eval mode) and its info dict, from ``<path>.safetensors`` + ``<path>.json``."""
    from safetensors.torch import load_file

    path = Path(path)
    weights, meta = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not weights.exists() or not meta.exists():
        raise ValueError(f"no PartsNet at {path} (need {weights.name} and {meta.name}); run scripts/train_demo.py")
    info = json.loads(meta.read_text())
    model = PartsNet(len(info["classes"]), width=info["width"])
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), info
