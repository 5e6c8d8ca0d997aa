"""Named concepts from probe sets: which extracted concepts a small labelled set of images (``watermark/``,
``grass/``) decomposes onto, checked on held-out probe images.

Method (``method="lasso"``, the default): at each analysed layer the probe images' PFVs (inside the masks, each
mask averaged down to the layer's grid) and the PFVs of ``negatives`` (ordinary images) are decomposed onto the
concept set with its own Lasso (:meth:`ConceptSet.decompose`). A concept's score for a probe is the ROC-AUC of its
coefficient, probe positions against negative positions: the chance that it is stronger at a random position of
the concept than at a random position of an ordinary image (0.5 = no better than chance). Probe and negative
images are split into a fit part, which names concepts, and a held-out part, on which each naming is scored again
(``heldout_score``). The AUC alone would name concepts after probes unlike anything the concepts describe (noise
outranks ordinary PFVs yet sits far from every concept), so a concept must also cover the probe: ``coverage``, the
fraction of probe PFVs that are its typical members (:func:`typical_coverage`). A concept is named when score and
coverage reach ``min_score`` and ``min_coverage`` on both parts; a probe that names nothing is listed in
``unmatched``. ``benchmarks/bench_naming.py`` measured this against the probe-mass share and against a TCAV-style
alternative (``method="cav"``: a logistic-regression concept activation vector matched to the concept of highest
cosine), on planted parts whose true concepts are known.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gig.concepts import ConceptSet
from gig.data import eval_mode
from gig.layers import traced
from gig.pfv import to_pfvs
from gig.types import Device

METHODS = ("lasso", "cav")
FORMAT = "gigaudit.naming/1"
_BATCH = 64  # images per forward pass
_INSIDE = 0.5  # a PFV lies on the concept when its cell is at least this much inside the mask
#: The least cosine between a CAV and the concept it names (``method="cav"``): planted parts gave 0.14–0.47,
#: probes of noise ≤ 0.07 (benchmarks/bench_naming.py).
CAV_MIN_COSINE = 0.1


@dataclass(frozen=True)
class ProbeSet:
    """One named concept: ``images`` ``(N, 3, H, W)`` preprocessed like the model's input and optional ``masks``
    ``(N, H, W)`` in ``[0, 1]`` marking where the concept is (``None`` = everywhere)."""

    name: str
    images: torch.Tensor
    masks: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"a probe set needs a non-empty name, not {self.name!r}")
        images = self.images
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"probe {self.name!r}: images must be a (N, 3, H, W) tensor, not {shape}")
        if images.shape[0] == 0:
            raise ValueError(f"probe {self.name!r} is empty: it needs at least one image")
        if images.shape[1] != 3 or 0 in images.shape[2:]:
            raise ValueError(f"probe {self.name!r}: images must be RGB (N, 3, H, W), not {tuple(images.shape)}")
        if not images.is_floating_point() or not torch.isfinite(images).all():
            raise ValueError(f"probe {self.name!r}: images must be finite floating-point values")
        if self.masks is not None:
            masks = self.masks
            want = (images.shape[0], *images.shape[2:])
            if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != want:
                shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
                raise ValueError(f"probe {self.name!r}: masks must have shape {want} (one per image), not {shape}")
            masks = masks.float()
            if not torch.isfinite(masks).all() or masks.min() < 0 or masks.max() > 1:
                raise ValueError(f"probe {self.name!r}: mask values must lie in [0, 1]")
            empty = (masks.flatten(1).amax(1) == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"probe {self.name!r}: the masks of images {empty[:5]} are empty (all zero)")


@dataclass
class Naming:
    """The names that probe sets gave to concepts.

    ``labels``: node id ``"layer:index"`` → ``(probe name, score)`` (the best-scoring probe when several name it);
    ``matches``: probe → ``[{"layer", "concept", "node", "score", "heldout_score"}]``, best first (held-out score
    ``None`` when ``holdout=0``); ``unmatched``: probes that named no concept; ``probes``: per probe the image
    counts (``images``, ``fit``, ``heldout``) and its ``best`` candidate (also when unmatched, to say how close it
    came); ``params``: the settings.
    """

    labels: dict[str, tuple[str, float]] = field(default_factory=dict)
    matches: dict[str, list[dict]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    probes: dict[str, dict] = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-able dict (labels as ``[name, score]`` pairs); :meth:`from_dict` reads it back."""
        return {"format": FORMAT, "labels": {node: [name, score] for node, (name, score) in self.labels.items()},
                "matches": copy.deepcopy(self.matches), "unmatched": list(self.unmatched),
                "probes": copy.deepcopy(self.probes), "params": copy.deepcopy(self.params)}

    @classmethod
    def from_dict(cls, data: dict) -> "Naming":
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a naming dict (expected format {FORMAT!r})")
        try:
            labels = {str(node): (str(name), float(score)) for node, (name, score) in data["labels"].items()}
            return cls(labels, copy.deepcopy(data["matches"]), list(data["unmatched"]),
                       copy.deepcopy(data.get("probes", {})), copy.deepcopy(data.get("params", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"corrupt naming dict: {exc}") from exc


def name_concepts(model: nn.Module, concepts: ConceptSet, probes: Sequence[ProbeSet], negatives: torch.Tensor, *,
                  layers: Sequence[str] | None = None, holdout: float = 0.3, min_score: float = 0.6, seed: int = 0,
                  device: Device = "cpu",
                  method: str = "lasso", min_coverage: float = 0.2) -> Naming:
    """Name the concepts of ``concepts`` that each probe set decomposes onto (see the module docstring).

    ``negatives`` ``(M, 3, H, W)``: ordinary images (e.g. of the audit dataset) of the probes' size; ``layers``:
    a subset of the concept set's layers (default all); ``holdout``: the fraction of each probe's images (and of
    the negatives) kept out of naming and used to check it (``0`` = no check); ``min_score``: the least fit and
    held-out score of a naming; ``min_coverage``: the least fraction of the probe's PFVs (fit and held out) that
    the concept must name (:meth:`ConceptSet.assign`); ``method``: ``"lasso"`` or ``"cav"`` (the TCAV-style
    alternative, whose score is the CAV's cosine to the concept: it needs ``CAV_MIN_COSINE`` and a held-out AUC of
    ``min_score``; ``min_coverage`` does not apply).
    """
    probes = _check_probes(probes, negatives)
    if method not in METHODS:
        raise ValueError(f"unknown naming method {method!r}; valid: {', '.join(METHODS)}")
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise ValueError(f"holdout must be a fraction in [0, 1), not {holdout!r}")
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score <= 1:
        raise ValueError(f"min_score must lie in [0, 1], not {min_score!r}")
    if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or not 0 <= min_coverage <= 1:
        raise ValueError(f"min_coverage must lie in [0, 1], not {min_coverage!r}")
    if not isinstance(concepts, ConceptSet):
        raise ValueError(f"concepts must be a gig.ConceptSet, not {type(concepts).__name__}")
    layers = list(concepts.layers) if layers is None else _check_layers(concepts, layers)
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    negative_fit, negative_held = _split(negatives.shape[0], holdout, rng, "the negatives")
    with eval_mode(model), torch.no_grad():
        negative_pfvs = _pfvs(model, negatives, None, layers, device)
        naming = Naming(params={"method": method, "layers": layers, "holdout": float(holdout),
                                "min_score": float(min_score), "min_coverage": float(min_coverage), "seed": seed, "negatives": int(negatives.shape[0])})
        for probe in probes:
            fit, held = _split(probe.images.shape[0], holdout, rng, f"probe {probe.name!r}")
            probe_pfvs = _pfvs(model, probe.images, probe.masks, layers, device)
            candidates = []
            for layer in layers:
                pos, neg = probe_pfvs[layer], negative_pfvs[layer]
                parts = {"fit": (_rows(pos, fit), _rows(neg, negative_fit)),
                         "held": (_rows(pos, held), _rows(neg, negative_held)) if held.size else None}
                candidates += _score_layer(concepts, layer, parts, method)
            candidates.sort(key=lambda c: (-c["score"], -(c["heldout_score"] or 0)))
            matches = [c for c in candidates if _accepts(c, method, min_score, min_coverage)]
            naming.matches[probe.name] = matches
            naming.probes[probe.name] = {"images": int(probe.images.shape[0]), "fit": int(fit.size),
                                         "heldout": int(held.size), "best": candidates[0] if candidates else None}
            if not matches:
                naming.unmatched.append(probe.name)
            for match in matches:
                current = naming.labels.get(match["node"])
                if current is None or match["score"] > current[1]:
                    naming.labels[match["node"]] = (probe.name, match["score"])
    return naming


def label_graph(graph: dict, naming: Naming) -> dict:
    """A copy of the graph dict (``docs/graph-format.md``) whose concept nodes named by ``naming`` carry ``label``
    and ``label_score`` (labels of an earlier naming are dropped), with ``evidence.naming = naming.to_dict()``."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ValueError("graph must be a concept graph dict (ConceptGraph.to_dict()) with a list of nodes")
    if not isinstance(naming, Naming):
        raise ValueError(f"naming must be a gig.naming.Naming, not {type(naming).__name__}")
    out = copy.deepcopy(graph)
    ids = {node.get("id") for node in out["nodes"]}
    missing = sorted(set(naming.labels) - ids)
    if missing:
        raise ValueError(f"the naming labels nodes the graph does not have: {missing[:5]}; was it made with the "
                         "graph's concept set?")
    for node in out["nodes"]:
        node.pop("label", None)
        node.pop("label_score", None)
        if node.get("id") in naming.labels:
            node["label"], node["label_score"] = naming.labels[node["id"]]
    out.setdefault("evidence", {})["naming"] = naming.to_dict()
    return out


# ---------------------------------------------------------------------------------------------------------- checks
def _check_probes(probes, negatives) -> list[ProbeSet]:
    if isinstance(probes, ProbeSet):
        probes = [probes]
    if not isinstance(probes, Sequence) or not probes:
        raise ValueError("name_concepts needs at least one probe set")
    if not all(isinstance(p, ProbeSet) for p in probes):
        raise ValueError("probes must be gig.naming.ProbeSet objects")
    names = [p.name for p in probes]
    if len(set(names)) != len(names):
        raise ValueError(f"probe names must be unique, not {names}")
    if not isinstance(negatives, torch.Tensor) or negatives.dim() != 4 or negatives.shape[0] == 0:
        shape = tuple(negatives.shape) if isinstance(negatives, torch.Tensor) else type(negatives).__name__
        raise ValueError(f"negatives must be a non-empty (M, 3, H, W) image tensor, not {shape}")
    if not negatives.is_floating_point() or not torch.isfinite(negatives).all():
        raise ValueError("negatives must be finite floating-point images")
    want = tuple(negatives.shape[1:])
    for p in probes:
        if tuple(p.images.shape[1:]) != want:
            raise ValueError(f"probe {p.name!r} has images of {_describe(p.images.shape[1:])} but the negatives are "
                             f"{_describe(want)}; preprocess them like the model's input")
    return list(probes)


def _describe(shape) -> str:
    c, h, w = shape
    return f"{h}×{w} px with {c} channel{'s' if c != 1 else ''}"


def _check_layers(concepts: ConceptSet, layers) -> list[str]:
    layers = [layers] if isinstance(layers, str) else list(layers)
    unknown = [layer for layer in layers if layer not in concepts.layers]
    if not layers or unknown:
        raise ValueError(f"layers must be a non-empty subset of the concept set's layers "
                         f"({', '.join(concepts.layers)}), not {layers}")
    return layers


def _split(n: int, holdout: float, rng: np.random.Generator, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, held_out)`` of ``n`` items; at least one of each when ``holdout > 0``."""
    order = rng.permutation(n)
    if holdout == 0:
        return np.sort(order), np.zeros(0, dtype=np.int64)
    if n < 2:
        raise ValueError(f"{what} need at least 2 images to hold some out (holdout={holdout}); add images or pass "
                         "holdout=0")
    held = min(n - 1, max(1, round(holdout * n)))
    return np.sort(order[held:]), np.sort(order[:held])


# ------------------------------------------------------------------------------------------------------------ PFVs
def _pfvs(model, images: torch.Tensor, masks, layers, device) -> dict[str, list[torch.Tensor]]:
    """Per layer and image, the PFVs ``(P_i, C)`` that lie on the concept (all of them without a mask)."""
    prefix = traced(model).prefix(layers)
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, images.shape[0], _BATCH):
        batch = images[start:start + _BATCH].to(device)
        try:
            activations = prefix(batch)
        except RuntimeError as exc:
            raise ValueError(f"the model could not run on images of shape {tuple(batch.shape[1:])}: {exc}") from exc
        for layer in layers:
            pfvs = to_pfvs(activations[layer]).double().cpu()
            if masks is None:
                out[layer] += list(pfvs)
                continue
            weights = _cell_weights(masks[start:start + _BATCH].float(), activations[layer].shape)
            for x, w in zip(pfvs, weights):
                inside = w >= _INSIDE
                out[layer].append(x[inside] if inside.any() else x[w.argmax()][None])
    return out


def _cell_weights(masks: torch.Tensor, shape) -> torch.Tensor:
    """The fraction of each PFV's cell inside the mask: ``(B, P)`` for an activation of ``shape``. CNN maps use
    their grid; tokens a square grid (a leading class token gets the mask's mean); a flat vector the mean."""
    b = masks.shape[0]
    if len(shape) == 4:
        return F.adaptive_avg_pool2d(masks[:, None], tuple(shape[2:])).flatten(1)
    positions = shape[1] if len(shape) == 3 else 1
    for extra in (0, 1):
        side = math.isqrt(positions - extra)
        if positions - extra > 0 and side * side == positions - extra:
            grid = F.adaptive_avg_pool2d(masks[:, None], (side, side)).flatten(1)
            return torch.cat([masks.flatten(1).mean(1, keepdim=True), grid], 1) if extra else grid
    return masks.flatten(1).mean(1, keepdim=True).expand(b, positions)


def _rows(pfvs: list[torch.Tensor], index: np.ndarray) -> torch.Tensor:
    return torch.cat([pfvs[i] for i in index.tolist()]) if index.size else torch.zeros(0)


# --------------------------------------------------------------------------------------------------------- scoring
def _score_layer(concepts: ConceptSet, layer: str, parts: dict, method: str) -> list[dict]:
    """Candidates ``{"layer", "concept", "node", "score", "heldout_score", ...}`` of one layer."""
    if method == "cav":
        return _cav_candidates(concepts, layer, parts)
    scores = {}
    for part, rows in parts.items():
        if rows is None:
            continue
        pos, neg = (x.to(concepts.vectors(layer).dtype) for x in rows)
        k = concepts[layer].n_concepts
        scores[part] = (auc(concepts.decompose(layer, pos).double(), concepts.decompose(layer, neg).double()),
                        typical_coverage(concepts, layer, pos, neg))
    (score, coverage), held = scores["fit"], scores.get("held")
    return [{"layer": layer, "concept": k, "node": f"{layer}:{k}", "score": float(score[k]),
             "heldout_score": None if held is None else float(held[0][k]), "coverage": float(coverage[k]),
             "heldout_coverage": None if held is None else float(held[1][k])} for k in range(score.shape[0])]


def typical_coverage(concepts: ConceptSet, layer: str, pfvs: torch.Tensor, ordinary: torch.Tensor) -> torch.Tensor:
    """Per concept, the fraction of ``pfvs`` that are typical members of it: it is their nearest concept
    (:meth:`ConceptSet.assign`) and they lie as close to it (cosine) as the ``ordinary`` PFVs it names do, at least
    their first quartile (no such bound for a concept that names fewer than 4 ordinary PFVs). This is what rejects
    probes unlike any concept (noise), whose PFVs differ from ordinary images' yet sit far from every concept."""
    vectors = concepts.vectors(layer).to(pfvs.dtype)
    k = vectors.shape[0]
    named, cosine = _nearest(concepts, layer, pfvs, vectors)
    ordinary_named, ordinary_cosine = _nearest(concepts, layer, ordinary, vectors)
    bound = torch.full((k,), -torch.inf, dtype=pfvs.dtype)
    for j in range(k):
        members = ordinary_cosine[ordinary_named == j]
        if members.numel() >= 4:
            bound[j] = torch.quantile(members, 0.25)
    typical = cosine >= bound[named]
    return torch.bincount(named[typical], minlength=k).double() / max(pfvs.shape[0], 1)


def _nearest(concepts: ConceptSet, layer: str, pfvs: torch.Tensor, vectors: torch.Tensor):
    named = concepts.assign(layer, pfvs)
    return named, F.cosine_similarity(pfvs, vectors[named], dim=1)


def _accepts(candidate: dict, method: str, min_score: float, min_coverage: float) -> bool:
    if method == "cav":
        first = candidate["score"] >= CAV_MIN_COSINE
        return first and (candidate["heldout_score"] is None or candidate["heldout_score"] >= min_score)
    held = candidate["heldout_score"]
    return (candidate["score"] >= min_score and candidate["coverage"] >= min_coverage
            and (held is None or (held >= min_score and candidate["heldout_coverage"] >= min_coverage)))


def auc(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per column, the ROC-AUC of ``positive`` ``(n, K)`` against ``negative`` ``(m, K)``: ``P(p > q) + ½ P(p = q)``
    (Mann–Whitney with mid-ranks for ties, so columns that are all zero score 0.5)."""
    from scipy.stats import rankdata

    n, m = positive.shape[0], negative.shape[0]
    ranks = rankdata(torch.cat([positive, negative]).numpy(), axis=0)
    u = ranks[:n].sum(0) - n * (n + 1) / 2
    return torch.from_numpy(u / (n * m))


def _cav_candidates(concepts: ConceptSet, layer: str, parts: dict) -> list[dict]:
    """TCAV-style: a logistic regression separates probe from negative PFVs; its normal (the CAV) names the concept
    of highest cosine. Score: that cosine (clipped at 0); held-out score: the CAV's held-out ROC-AUC."""
    from sklearn.linear_model import LogisticRegression

    pos, neg = parts["fit"]
    x = torch.cat([pos, neg]).numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scale = x.std(0).mean() or 1.0
    fit = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x / scale, y)
    cav = torch.from_numpy(fit.coef_[0])
    vectors = concepts.vectors(layer).double()
    cosine = (vectors @ cav) / (vectors.norm(dim=1) * cav.norm()).clamp_min(1e-12)
    held = None
    if parts["held"] is not None:
        hp, hn = parts["held"]
        held = float(auc((hp @ cav)[:, None], (hn @ cav)[:, None])[0])
    k = int(cosine.argmax())
    return [{"layer": layer, "concept": k, "node": f"{layer}:{k}", "score": max(0.0, float(cosine[k])),
             "heldout_score": held}]
