"""Planted datasets of several kinds, and small CNNs trained on them: the ground truth for choosing defaults.

Each kind draws two *parts* per image on a background of its own; a class is defined by the pair of parts it shows,
and every part belongs to two classes. The kinds differ in what a part is (shape, colour, texture), in size
(32–96 px), background and network (plain or residual, 4 or 5 stages), so that settings chosen on some of them can
be tested on another that played no part in choosing them:

- ``"parts"``: the demo's :mod:`gig.synthetic` images (32 px, grey clutter) and :class:`~gig.synthetic.PartsNet`;
- ``"textures"``: 64 px; squares and discs that differ mostly by texture (checks, dots, horizontal and vertical
  stripes), on smooth colour gradients; a plain 4-stage CNN;
- ``"glyphs"``: 96 px; rings, crosses, diamonds and bars in four colours, on faint stripes; a residual 5-stage CNN;
- ``"marks"`` (held out: never used to choose a default): 64 px; five marks (ring, cross, diamond, bar, dotted
  disc) in colours the others do not use, among distractor blobs of other colours; a residual 4-stage CNN.

Part masks come with every image, so :func:`gig.synthetic.part_labels` gives the planted part under each PFV.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gig import synthetic
from gig.synthetic import accuracy, draw_part, train_classifier

_RGB = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.85, 0.1),
        "cyan": (0.1, 0.85, 0.9), "magenta": (0.85, 0.15, 0.8), "orange": (1.0, 0.55, 0.05), "white": (1, 1, 1),
        "purple": (0.5, 0.2, 0.7)}


@dataclass(frozen=True)
class Part:
    shape: str
    colour: str
    texture: str = "solid"

    @property
    def name(self) -> str:
        return f"{self.texture} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Kind:
    """One planted dataset and the network trained on it."""

    name: str
    size: int
    parts: tuple[Part, ...]
    background: str  # "clutter", "gradient", "stripes" or "blobs"
    stages: tuple[int, ...]  # channels per stage; every stage but the last halves the resolution
    residual: bool

    @property
    def class_parts(self) -> list[tuple[int, int]]:
        """The part ids (1-based) of each class: consecutive pairs around the cycle of parts."""
        n = len(self.parts)
        return [(i + 1, (i + 1) % n + 1) for i in range(n)]

    @property
    def class_names(self) -> list[str]:
        return [f"{self.parts[a - 1].name} & {self.parts[b - 1].name}" for a, b in self.class_parts]


KINDS: dict[str, Kind] = {
    "textures": Kind("textures", 64, (
        Part("square", "orange", "checker"), Part("square", "orange", "hstripes"), Part("disc", "purple", "dots"),
        Part("disc", "purple", "vstripes"), Part("square", "purple", "checker"), Part("disc", "orange", "dots"),
    ), "gradient", (16, 32, 48, 64), residual=False),
    "glyphs": Kind("glyphs", 96, (
        Part("ring", "red"), Part("cross", "green"), Part("diamond", "blue"), Part("bar", "yellow"),
        Part("ring", "blue"), Part("cross", "yellow"), Part("diamond", "red"), Part("bar", "green"),
    ), "stripes", (16, 24, 32, 48, 64), residual=True),
    "marks": Kind("marks", 64, (
        Part("ring", "cyan"), Part("cross", "magenta"), Part("diamond", "white"), Part("bar", "cyan", "checker"),
        Part("disc", "magenta", "dots"),
    ), "blobs", (24, 48, 48, 96), residual=True),
}
#: The kinds that defaults are chosen on, and the one they are then tested on.
CHOOSING = ("parts", "textures", "glyphs")
HELD_OUT = ("marks",)


def kind(name: str) -> Kind | None:
    """The :class:`Kind` called ``name`` (``None`` for ``"parts"``, the demo's own dataset)."""
    if name != "parts" and name not in KINDS:
        raise ValueError(f"unknown planted kind {name!r}; valid: parts, {', '.join(KINDS)}")
    return KINDS.get(name)


def _background(rng: np.random.Generator, size: int, style: str) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    noise = rng.normal(0.0, 0.04, (3, size, size))
    if style == "gradient":  # a smooth wash between two muted colours
        a, b = rng.uniform(0.25, 0.6, 3), rng.uniform(0.25, 0.6, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx + np.sin(angle) * yy - min(0, np.cos(angle)) - min(0, np.sin(angle))) / 2
        image = a[:, None, None] * (1 - t) + b[:, None, None] * t
    elif style == "stripes":  # faint stripes of random period and orientation
        period, angle = rng.uniform(0.05, 0.2), rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
        image = np.repeat((rng.uniform(0.35, 0.55) + 0.08 * wave)[None], 3, axis=0)
    elif style == "blobs":  # grey with distractor blobs of colours no part uses
        image = np.full((3, size, size), rng.uniform(0.3, 0.5))
        for _ in range(rng.integers(3, 7)):
            colour = np.array((rng.uniform(0.4, 0.7), rng.uniform(0.3, 0.5), rng.uniform(0.1, 0.3)))  # browns
            cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.02, 0.07)]
            image[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = colour[:, None]
    else:
        raise ValueError(f"unknown background {style!r}")
    return image + noise


def make_planted(name: str, n: int, seed: int = 0):
    """``n`` images of kind ``name``: ``(images (n, 3, S, S) in [0, 1], labels (n,), part_masks (n, S, S))``,
    masks 0 = background, ``1..P`` = the part at that pixel. Balanced classes, deterministic for a seed."""
    spec = kind(name)
    if spec is None:
        return synthetic.make_parts_dataset(n, seed=seed)
    if n < 1:
        raise ValueError(f"n must be a positive number of images, not {n}")
    rng = np.random.default_rng(seed)
    size, classes = spec.size, spec.class_parts
    labels = rng.permutation(np.arange(n) % len(classes))
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    quarter, jitter = size / 4, size / 16
    for i, label in enumerate(labels):
        image = _background(rng, size, spec.background)
        for part, slot in zip(classes[label], rng.choice(4, size=2, replace=False)):
            cy = quarter * (1 + 2 * (slot // 2)) + rng.uniform(-jitter, jitter)
            cx = quarter * (1 + 2 * (slot % 2)) + rng.uniform(-jitter, jitter)
            p = spec.parts[part - 1]
            draw_part(image, masks[i], part, p.shape, _RGB[p.colour], p.texture, cy, cx,
                      size * rng.uniform(0.14, 0.18), rng)
        images[i] = np.clip(image, 0.0, 1.0)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(masks)


class Stage(nn.Module):
    """conv 3×3 → BN → ReLU (twice, with a skip connection when ``residual``), then an optional 2×2 max pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.residual = residual
        if residual:
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        if self.residual:
            x = torch.relu(x + self.bn2(self.conv2(x)))
        return self.pool(x)


class PlantedNet(nn.Module):
    """``features`` = one :class:`Stage` per entry of ``stages`` (each a cut), global average pooling, linear
    ``head``."""

    def __init__(self, num_classes: int, stages: tuple[int, ...], residual: bool = False):
        super().__init__()
        widths = (3, *stages)
        self.features = nn.Sequential(*[Stage(widths[i], widths[i + 1], i < len(stages) - 1, residual)
                                        for i in range(len(stages))])
        self.head = nn.Linear(stages[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def train_planted(name: str, n_train: int = 1200, epochs: int = 4, seed: int = 0, n_test: int = 300):
    """A network trained on kind ``name`` (seed ``seed``) and tested on fresh images (seed ``seed + 1``):
    ``(model in eval mode, info)``; ``"parts"`` trains the demo's PartsNet."""
    spec = kind(name)
    if spec is None:
        return synthetic.train_parts_net(n_train=n_train, epochs=epochs, seed=seed, n_test=n_test)
    images, labels, _ = make_planted(name, n_train, seed)
    test_images, test_labels, _ = make_planted(name, n_test, seed + 1)
    torch.manual_seed(seed)
    model = PlantedNet(len(spec.class_parts), spec.stages, spec.residual)
    seconds = train_classifier(model, images, labels, epochs, seed)
    info = {"kind": name, "classes": spec.class_names, "parts": [p.name for p in spec.parts],
            "class_parts": [list(p) for p in spec.class_parts], "size": spec.size, "seed": seed,
            "train_accuracy": accuracy(model, images, labels),
            "test_accuracy": accuracy(model, test_images, test_labels), "train_seconds": round(seconds, 2)}
    return model, info


# ---------------------------------------------------------------------------------------------- agreement with the parts
def part_nmi(truth: np.ndarray, named: np.ndarray) -> float:
    """NMI between the concept that names each PFV and the planted part under it (``-1`` = ambiguous, left out)."""
    from sklearn.metrics import normalized_mutual_info_score

    known = truth >= 0
    return float(normalized_mutual_info_score(truth[known], named[known]))


def random_directions_nmi(pfvs: torch.Tensor, truth: np.ndarray, k: int, draws: int = 3) -> float:
    """The chance reference: mean :func:`part_nmi` of ``k`` random directions (non-negative where the PFVs are),
    each PFV named by the direction of its largest projection."""
    values = []
    for seed in range(draws):
        d = torch.randn(k, pfvs.shape[1], generator=torch.Generator().manual_seed(seed), dtype=pfvs.dtype)
        d = d.abs() if bool((pfvs >= 0).all()) else d
        values.append(part_nmi(truth, (pfvs @ d.T).argmax(1).numpy()))
    return float(np.mean(values))


def kmeans_nmi(samples: torch.Tensor, pfvs: torch.Tensor, truth: np.ndarray, k: int = 16, seeds: int = 3) -> float:
    """The plain reference: mean :func:`part_nmi` of scikit-learn k-means (``k`` clusters, default settings, 3 seeds)
    fitted on ``samples``, each PFV named by its nearest centroid."""
    from sklearn.cluster import KMeans

    values = []
    for seed in range(seeds):
        fit = KMeans(min(k, len(samples)), random_state=seed).fit(samples.double().numpy())
        values.append(part_nmi(truth, torch.cdist(pfvs.double(), torch.as_tensor(fit.cluster_centers_)).argmin(1).numpy()))
    return float(np.mean(values))


def concept_agreement(model: nn.Module, concepts, name: str, samples: dict[str, torch.Tensor], n_images: int = 120,
                      seed: int = 1000) -> list[dict]:
    """Per layer of ``concepts``: how well they find the planted parts of kind ``name`` on ``n_images`` fresh images.

    ``samples`` are the PFVs the concepts were clustered from (``gig.concepts.sample_pfvs``), for the k-means
    reference. Each row holds ``nmi`` (naming by :meth:`ConceptSet.assign`), ``nmi_coefficient`` (naming by the
    largest Lasso coefficient), the references ``random`` and ``kmeans16``, and the decomposition's
    ``relative_error``, ``l0`` and ``spliced_agreement`` (top-1 agreement of the network run on the reconstruction).
    """
    from gig.layers import LOGITS, traced
    from gig.pfv import from_pfvs, to_pfvs
    from gig.synthetic import part_labels

    images, _, masks = make_planted(name, n_images, seed=seed)
    layers = list(concepts.layers)
    with torch.no_grad():
        outputs = traced(model).prefix(layers)(images)
    rows = []
    for layer in layers:
        activation = outputs[layer]
        pfvs = to_pfvs(activation)
        x = pfvs.reshape(-1, pfvs.shape[-1])
        truth = part_labels(masks, activation.shape[-1]).flatten().numpy()
        k = concepts[layer].n_concepts
        coef = concepts.decompose(layer, x)
        best, strongest = coef.max(1)
        rebuilt = concepts.reconstruct(layer, coef)
        with torch.no_grad():
            spliced = traced(model).segment(layer, LOGITS)(from_pfvs(rebuilt.reshape(pfvs.shape), activation.shape))
        rows.append({
            "kind": name, "layer": layer, "channels": x.shape[1], "n_concepts": k,
            "nmi": part_nmi(truth, concepts.assign(layer, x).numpy()),
            "nmi_coefficient": part_nmi(truth, torch.where(best > 0, strongest, k).numpy()),
            "random": random_directions_nmi(x.double(), truth, k),
            "kmeans16": kmeans_nmi(samples[layer], x, truth),
            "relative_error": float((x - rebuilt).norm() / x.norm()),
            "l0": float((coef != 0).double().mean()),
            "spliced_agreement": float((spliced.argmax(1) == outputs[LOGITS].argmax(1)).double().mean()),
        })
    return rows


def class_part_ranking(model: nn.Module, concepts, name: str, class_target: str, n_images: int = 60,
                       seed: int = 2000) -> dict:
    """Do a class's own parts outrank the concepts present in every class? Builds the concept graph of
    ``n_images`` fresh images of kind ``name`` with ``class_target`` and ranks each class's incoming concepts of
    the last layer by their share.

    A concept's part is the planted part under most of the PFVs it names (:meth:`ConceptSet.assign`, background =
    0); it is *common* when it is present (a positive coefficient somewhere) in at least half of the images of
    every class. Returns the fractions of classes whose strongest concept is one of its parts (``top1``), whose two
    strongest are exactly its two parts (``top2``), and where a concept of one of its parts ranks above every common
    concept that is not (``parts_outrank_common``), with the per-class rankings (part of each concept, ``"*"``
    marking common ones).
    """
    import gig
    from gig.layers import traced
    from gig.pfv import to_pfvs
    from gig.synthetic import CLASS_PARTS, part_labels

    spec = kind(name)
    class_parts = CLASS_PARTS if spec is None else spec.class_parts
    images, labels, masks = make_planted(name, n_images, seed=seed)
    data = [(images[i:i + 30], labels[i:i + 30]) for i in range(0, n_images, 30)]
    graph = gig.build_graph(model, data, concepts, class_target=class_target)
    last = list(concepts.layers)[-1]
    with torch.no_grad():
        pfvs = to_pfvs(traced(model).prefix([last])(images)[last])
    grid = int(round(pfvs.shape[1] ** 0.5))
    named = concepts.assign(last, pfvs).flatten()
    truth = part_labels(masks, grid).flatten()
    present = (concepts.decompose(last, pfvs) > 0).any(1).double()  # (images, K)
    common = torch.stack([present[labels == c].mean(0) for c in range(len(class_parts))]).amin(0) >= 0.5
    part_of = {}
    for k in range(concepts[last].n_concepts):
        found = truth[(named == k) & (truth >= 0)]
        part_of[k] = int(found.mode().values) if found.numel() else -1
    rankings, top1, top2, outrank = [], 0, 0, 0
    for c, parts in enumerate(class_parts):
        incoming = sorted(graph.class_graph(c).incoming(f"logits:{c}"), key=lambda e: -e["share"])
        order = [int(e["source"].rsplit(":", 1)[1]) for e in incoming if e["source"].startswith(last + ":")]
        own = [i for i, k in enumerate(order) if part_of[k] in parts]
        others = [i for i, k in enumerate(order) if common[k] and part_of[k] not in parts]
        rankings.append([f"{part_of[k]}{'*' if common[k] else ''}" for k in order[:4]])
        top1 += bool(own) and own[0] == 0
        top2 += {part_of[k] for k in order[:2]} == set(parts)
        outrank += bool(own) and (not others or own[0] < others[0])
    n = len(class_parts)
    return {"kind": name, "class_target": class_target, "top1": top1 / n, "top2": top2 / n,
            "parts_outrank_common": outrank / n, "common_concepts": int(common.sum()), "rankings": rankings}
