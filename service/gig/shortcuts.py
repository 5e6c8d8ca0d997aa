"""Shortcut benchmark (issue 9): planted-part images where a spurious cue co-occurs with one class in training.

The images are :func:`gig.synthetic.make_parts_dataset`'s (32 px, six classes, each defined by two parts). A *cue*
is drawn on every training image of one *affected* class and on no other:

- ``"patch"``: a small local watermark, a 5×5 px yellow-and-black checker in a random corner;
- ``"cast"``: a global colour cast of the background (every pixel that is not a part is tinted purple).

For the patch, 35 % of the affected class's training images show another class's parts (``Cue.decoys``): without
them the parts alone give 100 % accuracy and the network ignores a cue this small (measured: no accuracy drop).
The *cheating* model is trained on the cued images, the *clean* one on the very same images without the cue (same
seed, same order, same augmentation, same decoys), both in seconds on one CPU core. :func:`cue_reliance` measures whether a model
uses the cue: its accuracy on the other classes' images with and without the cue drawn on them. :func:`cue_probes`
gives images of the cue alone with its masks (a :class:`gig.naming.ProbeSet`), the probe set an audit names the cue
concept with; :func:`cue_concept_scores` is the naming-free reference (mean coefficient at cue positions against
elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gig import synthetic
from gig.synthetic import CLASS_NAMES, PartsNet, accuracy, make_parts_dataset, train_classifier


@dataclass(frozen=True)
class Cue:
    """One kind of spurious cue: its probe (concept) name, the class it co-occurs with in training, its colour."""

    kind: str
    name: str
    affected: int
    rgb: tuple[float, float, float]
    size: int = 5  # patch side in pixels (patch only)
    strength: float = 0.15  # how far the background moves towards ``rgb`` (cast only)
    decoys: float = 0.0  # fraction of the affected class's cued training images showing another class's parts


CUES: dict[str, Cue] = {
    "patch": Cue("patch", "watermark", 0, (0.95, 0.85, 0.1), decoys=0.35),
    "cast": Cue("cast", "purple cast", 3, (0.6, 0.2, 0.75)),
}
KINDS = tuple(CUES)


def cue(kind: str) -> Cue:
    """The :class:`Cue` of ``kind``; ValueError names the valid kinds."""
    if kind not in CUES:
        raise ValueError(f"unknown shortcut kind {kind!r}; valid kinds are: {', '.join(CUES)}")
    return CUES[kind]


@dataclass(frozen=True)
class ShortcutData:
    """Images ``(N, 3, 32, 32)`` in [0, 1], ``labels`` ``(N,)``, ``part_masks`` ``(N, 32, 32)`` (0 = background, as
    in :func:`~gig.synthetic.make_parts_dataset`) and ``cue_masks`` ``(N, 32, 32)`` in [0, 1] (where the cue was
    drawn; all zeros on images without it)."""

    images: torch.Tensor
    labels: torch.Tensor
    part_masks: torch.Tensor
    cue_masks: torch.Tensor

    @property
    def has_cue(self) -> torch.Tensor:
        return self.cue_masks.flatten(1).amax(1) > 0


def draw_cue(kind: str, images: torch.Tensor, part_masks: torch.Tensor, seed: int = 0):
    """``(images with the cue, cue masks)``: the cue of ``kind`` drawn on every image (new tensors).

    ``"patch"`` covers a ``size × size`` square in a corner chosen per image (deterministic for ``seed``); ``"cast"``
    moves every background pixel (``part_masks == 0``) ``strength`` of the way towards the cue's colour, keeping
    the background's texture (brightness) as it was."""
    spec = cue(kind)
    images, part_masks = _check_images(images, part_masks)
    out, masks = images.clone(), torch.zeros(part_masks.shape)
    n, _, height, width = images.shape
    rgb = torch.tensor(spec.rgb).view(3, 1, 1)
    if kind == "patch":
        rng = np.random.default_rng(seed)
        s = spec.size
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        checker = ((yy + xx) % 2 == 0).float()  # 1-px checks: yellow and black
        patch = rgb * checker + 0.05 * (1 - checker)
        for i, corner in enumerate(rng.integers(0, 4, n).tolist()):
            top = 1 if corner < 2 else height - s - 1
            left = 1 if corner % 2 == 0 else width - s - 1
            out[i, :, top:top + s, left:left + s] = patch
            masks[i, top:top + s, left:left + s] = 1.0
    else:
        background = (part_masks == 0).float()
        grey = images.mean(1, keepdim=True)
        tinted = (1 - spec.strength) * images + spec.strength * rgb * (grey / 0.5)
        out = torch.where(background[:, None] > 0, tinted, images).clamp(0, 1)
        masks = background
    return out, masks


def make_shortcut_dataset(kind: str, n: int, seed: int = 0, cue_classes=None, cue_rate: float = 1.0,
                          decoys: float = 0.0) -> ShortcutData:
    """``n`` images of :func:`~gig.synthetic.make_parts_dataset` (seed ``seed``) with the cue of ``kind`` drawn on
    a fraction ``cue_rate`` of the images of ``cue_classes`` (default: the kind's affected class; ``()`` = no cue:
    the clean dataset). The images differ from the clean ones of the same seed only where the cue is.

    ``decoys``: the fraction of the affected class's images that show another class's parts instead of its own
    (fresh images, labelled as the affected class), so that in training the cue predicts the class better than
    its parts do; the clean dataset of the same seed has the same decoys, without the cue."""
    spec = cue(kind)
    classes = (spec.affected,) if cue_classes is None else tuple(int(c) for c in cue_classes)
    if any(not 0 <= c < len(CLASS_NAMES) for c in classes):
        raise ValueError(f"cue_classes must lie in 0..{len(CLASS_NAMES) - 1}, not {classes}")
    for name, value in (("cue_rate", cue_rate), ("decoys", decoys)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], not {value}")
    images, labels, part_masks = make_parts_dataset(n, seed=seed)
    if decoys > 0:
        images, part_masks = _with_decoys(images, labels, part_masks, spec.affected, decoys, seed)
    rng = np.random.default_rng(seed + 7919)
    chosen = torch.from_numpy(np.isin(labels.numpy(), classes) & (rng.random(n) < cue_rate))
    cued, masks = draw_cue(kind, images, part_masks, seed=seed + 104729)
    images = torch.where(chosen[:, None, None, None], cued, images)
    masks = torch.where(chosen[:, None, None], masks, torch.zeros_like(masks))
    return ShortcutData(images, labels, part_masks, masks)


def _with_decoys(images, labels, part_masks, affected: int, rate: float, seed: int):
    """Replace ``rate`` of the affected class's images (and part masks) by fresh images of the other classes."""
    rng = np.random.default_rng(seed + 31337)
    slots = np.flatnonzero((labels.numpy() == affected) & (rng.random(len(labels)) < rate))
    if not len(slots):
        return images, part_masks
    fresh, fresh_labels, fresh_masks = make_parts_dataset(2 * len(slots) + len(CLASS_NAMES), seed=seed + 65537)
    donors = torch.nonzero(fresh_labels != affected).flatten()[:len(slots)]
    images, part_masks = images.clone(), part_masks.clone()
    images[slots], part_masks[slots] = fresh[donors], fresh_masks[donors]
    return images, part_masks


def train_shortcut_models(kind: str, n_train: int = 1200, epochs: int = 4, seed: int = 0) -> dict:
    """``{"cheating": (model, info), "clean": (model, info)}``: two :class:`~gig.synthetic.PartsNet` trained alike
    (:func:`~gig.synthetic.train_classifier`, seed ``seed``) on the same ``n_train`` images, with and without the
    cue on the affected class. ``info`` holds the settings, training seconds and test accuracy on fresh images drawn
    like the training ones (seed ``seed + 1``)."""
    out = {}
    for name, classes in (("cheating", None), ("clean", ())):
        train = make_shortcut_dataset(kind, n_train, seed=seed, cue_classes=classes, decoys=cue(kind).decoys)
        test = make_shortcut_dataset(kind, 600, seed=seed + 1, cue_classes=classes)
        torch.manual_seed(seed)
        model = PartsNet(len(CLASS_NAMES))
        seconds = train_classifier(model, train.images, train.labels, epochs, seed)
        out[name] = model, {"kind": kind, "model": name, "cue": cue(kind).name, "affected": cue(kind).affected,
                            "n_train": n_train, "epochs": epochs, "seed": seed, "train_seconds": round(seconds, 2),
                            "test_accuracy": accuracy(model, test.images, test.labels)}
    return out


def cue_reliance(model: torch.nn.Module, kind: str, n: int = 600, seed: int = 10_000) -> dict:
    """How much ``model`` relies on the cue of ``kind``, on ``n`` fresh images (seed ``seed``).

    ``accuracy_other`` / ``accuracy_other_cued``: accuracy on the images of the other classes without / with the cue
    drawn on them; ``drop`` is their difference, ``to_affected`` the fraction of cued other-class images predicted
    as the affected class. ``accuracy_affected`` / ``accuracy_affected_uncued``: accuracy on the affected class's
    images with / without the cue (a cheating model loses some without it)."""
    spec = cue(kind)
    clean = make_shortcut_dataset(kind, n, seed=seed, cue_classes=())
    cued, _ = draw_cue(kind, clean.images, clean.part_masks, seed=seed + 1)
    other = clean.labels != spec.affected
    with torch.no_grad():
        predicted_cued = model.eval()(cued[other]).argmax(1)
    without = accuracy(model, clean.images[other], clean.labels[other])
    with_cue = float((predicted_cued == clean.labels[other]).float().mean())
    return {"kind": kind, "affected": spec.affected, "n_images": n,
            "accuracy_other": without, "accuracy_other_cued": with_cue, "drop": without - with_cue,
            "to_affected": float((predicted_cued == spec.affected).float().mean()),
            "accuracy_affected": accuracy(model, cued[~other], clean.labels[~other]),
            "accuracy_affected_uncued": accuracy(model, clean.images[~other], clean.labels[~other])}


def cue_probes(kind: str, n: int = 40, seed: int = 20_000):
    """A :class:`gig.naming.ProbeSet` named after the cue: ``n`` images of the cue alone (the dataset's cluttered
    grey background, no parts) and masks of where the cue is (``None`` for the cast: it is everywhere)."""
    from gig.naming import ProbeSet

    rng = np.random.default_rng(seed)
    backgrounds = torch.from_numpy(np.stack([synthetic._background(rng, 32) for _ in range(n)]).astype(np.float32))
    backgrounds = backgrounds.clamp(0, 1)
    images, masks = draw_cue(kind, backgrounds, torch.zeros(n, 32, 32, dtype=torch.int64), seed=seed + 1)
    return ProbeSet(cue(kind).name, images, None if kind == "cast" else masks)


def cue_cells(cue_masks: torch.Tensor, grid: int, min_cover: float = 0.25) -> torch.Tensor:
    """``(N, grid·grid)`` bool: the cells of a ``grid × grid`` partition (a layer's PFV positions, row-major) that
    the cue covers by at least ``min_cover``."""
    size = cue_masks.shape[-1]
    if size % grid:
        raise ValueError(f"the image size {size} is not a multiple of the grid {grid}")
    return F.avg_pool2d(cue_masks[:, None].float(), size // grid).flatten(1) >= min_cover


def cue_concept_scores(model: torch.nn.Module, concepts, layer: str, kind: str, n: int = 60,
                       seed: int = 30_000) -> torch.Tensor:
    """Per concept of ``layer``: how much the cue of ``kind`` raises its coefficient where the cue is, the naming-free
    way to find the cue concept (the largest score). On ``n`` fresh images of every class (seed ``seed``), drawn
    once without and once with the cue: the mean coefficient at the cue's cells of the cued images minus that at the
    same cells of the same images without it."""
    from gig.layers import traced
    from gig.pfv import to_pfvs

    clean = make_shortcut_dataset(kind, n, seed=seed, cue_classes=())
    cued, masks = draw_cue(kind, clean.images, clean.part_masks, seed=seed + 1)
    with torch.no_grad():
        outputs = traced(model).prefix([layer])(torch.cat([cued, clean.images]))[layer]
    pfvs = to_pfvs(outputs)
    coef = concepts.decompose(layer, pfvs.reshape(-1, pfvs.shape[-1])).double().reshape(2, n, pfvs.shape[1], -1)
    on = cue_cells(masks, outputs.shape[-1])
    if not bool(on.any()):
        raise ValueError(f"the cue covers no cell of layer {layer!r}")
    return coef[0][on].mean(0) - coef[1][on].mean(0)


def exemplars_on_cue(exemplars: list[dict], data: ShortcutData, grid: int, min_cover: float = 0.25) -> float:
    """The fraction of graph exemplars (``{"image", "position"}`` dicts, image = index into ``data``) at cue cells."""
    if not exemplars:
        return 0.0
    cells = cue_cells(data.cue_masks, grid, min_cover)
    return float(np.mean([bool(cells[e["image"], e["position"]]) for e in exemplars]))


def audit_model(model: torch.nn.Module, kind: str, data: ShortcutData, probes=None, batch_size: int = 40,
                seed: int = 0) -> dict:
    """The audit of ``model`` on ``data`` at the library's defaults, with the cue named by its probe set.

    Concepts of :func:`gig.default_layers` (:func:`gig.extract_concepts`), the concept graph (:func:`gig.build_graph`,
    labels = the classes), the naming of :func:`gig.naming.name_concepts` with ``probes`` (default
    :func:`cue_probes`) against the images of ``data`` as negatives, and the graph dict labelled by it. Returns
    ``{"concepts", "graph" (labelled dict), "naming", "layers", "grids" ({layer: PFV grid side}), "seconds"}``."""
    import time

    from gig import build_graph, default_layers, extract_concepts
    from gig.layers import traced
    from gig.naming import label_graph, name_concepts

    start = time.perf_counter()
    batches = [(data.images[i:i + batch_size], data.labels[i:i + batch_size])
               for i in range(0, len(data.images), batch_size)]
    layers = default_layers(model)
    concepts = extract_concepts(model, batches, layers, seed=seed)
    graph = build_graph(model, batches, concepts, class_names=list(CLASS_NAMES))
    naming = name_concepts(model, concepts, [cue_probes(kind) if probes is None else probes], data.images, seed=seed)
    with torch.no_grad():
        shapes = traced(model).prefix(layers)(data.images[:1])
    return {"concepts": concepts, "graph": label_graph(graph.to_dict(), naming), "naming": naming, "layers": layers,
            "grids": {layer: int(shapes[layer].shape[-1]) for layer in layers},
            "seconds": round(time.perf_counter() - start, 2)}


def cue_rank(graph: dict, kind: str, top: int = 3) -> dict:
    """Where the cue concept ranks among the incoming concepts of the affected class (edges into its class node,
    largest share first): ``{"rank"}`` (1-based; ``None`` when no incoming concept carries the cue's name),
    ``"node"``, ``"share"``, and the ``top`` strongest incoming ``[node, share, label]``."""
    from gigaudit.results import ConceptGraph

    spec = cue(kind)
    view = ConceptGraph(graph)
    incoming = sorted(view.incoming(view.class_node(spec.affected)), key=lambda e: -e["share"])
    found = next(((i, e) for i, e in enumerate(incoming) if view.nodes[e["source"]].get("label") == spec.name), None)
    return {"rank": None if found is None else found[0] + 1, "node": None if found is None else found[1]["source"],
            "share": None if found is None else found[1]["share"],
            "top": [[e["source"], round(e["share"], 4), view.nodes[e["source"]].get("label")] for e in incoming[:top]]}


def cue_relevance_ranks(graph: dict, kind: str) -> list[dict]:
    """Every concept named after the cue, ranked within its layer by the affected class's relevance
    (:meth:`gigaudit.results.ConceptGraph.relevance`, coverage 1): ``[{"node", "layer", "rank" (1-based),
    "share" (its part of the layer's relevance)}]``, best rank first."""
    from gigaudit.results import ConceptGraph

    spec = cue(kind)
    view = ConceptGraph(graph)
    relevance, _ = view.relevance(spec.affected, coverage=1.0)
    out = []
    for nid, node in view.nodes.items():
        if node.get("label") != spec.name:
            continue
        layer = {n["id"]: relevance.get(n["id"], 0.0) for n in view.layer_nodes(node["layer"])}
        ranked = sorted(layer, key=lambda n: -layer[n])
        total = sum(layer.values())
        out.append({"node": nid, "layer": node["layer"], "rank": ranked.index(nid) + 1,
                    "share": layer[nid] / total if total else 0.0})
    return sorted(out, key=lambda r: (r["rank"], -r["share"]))


def report_exemplars(model: torch.nn.Module, concepts, images: torch.Tensor, graph: dict, node_ids) -> dict:
    """``{node id: [gigaudit.results.Exemplar]}`` for :func:`gigaudit.report.build_report`: each graph exemplar of
    the nodes ``node_ids`` as its iERF crop (:func:`gig.erf.exemplar_crops`) and an iERF view (the image, darkened
    where the iERF is low), PNG; ``images`` are in [0, 1] (this benchmark's, unnormalised)."""
    import io

    from PIL import Image

    from gig.erf import erf, exemplar_crops
    from gigaudit.results import Exemplar

    def png(pixels: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        return out.getvalue()

    nodes = {n["id"]: n for n in graph["nodes"]}
    out = {}
    for nid in node_ids:
        node = nodes[nid]
        if not node.get("exemplars"):
            continue
        index = torch.tensor([e["image"] for e in node["exemplars"]])
        positions = torch.tensor([e["position"] for e in node["exemplars"]])
        directions = concepts.vectors(node["layer"])[node["index"]].expand(len(index), -1)
        maps = erf(model, images[index], node["layer"], positions, directions.to(images.dtype))
        crops = exemplar_crops(images[index], maps, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        level = (maps / maps.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]).sqrt()
        views = (images[index] * (0.3 + 0.7 * level[:, None])).clamp(0, 1)  # bright where the iERF is high
        views = (views * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        out[nid] = [Exemplar(nid, e["image"], e["position"], e["coefficient"], png(crop.pixels), png(view))
                    for e, crop, view in zip(node["exemplars"], crops, views)]
    return out


def _check_images(images: torch.Tensor, part_masks: torch.Tensor):
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (N, 3, H, W) tensor, not {getattr(images, 'shape', type(images))}")
    if not isinstance(part_masks, torch.Tensor) or part_masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"part_masks must have shape {(images.shape[0], *images.shape[2:])}")
    return images.float(), part_masks
