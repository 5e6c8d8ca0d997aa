"""Concept extraction over a dataset (DESIGN §1.2): sample PFVs, cluster them, then decompose every PFV.

Two streamed passes over ``data``; memory holds only the sampled PFVs and per-concept accumulators:

1. one forward (and, for contribution sampling, one backward) per batch gives every analysed layer's activation
   and gradient; ``pfvs_per_image`` positions per image and layer are kept;
2. each layer's samples are clustered into concept vectors;
3. every PFV of every image is decomposed to count, per concept, the images where it has a positive coefficient
   (``frequency``), the mean of its positive coefficients (``mean_coefficient``) and its ``n_exemplars``
   strongest images (bounded top-k over the PFVs that the concept names, :meth:`ConceptSet.assign`, ranked by
   their coefficient of it; one position per image).

The defaults (``n_concepts``, ``pfvs_per_image``, ``method``, ``lam`` and the naming rule) were chosen by measurement
on three planted datasets and tested on a fourth (``benchmarks/bench_concepts.py``, ``tests/gig/test_defaults.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

import warnings

from gig.concepts.clustering import DEFAULT, check_method, check_n_concepts, cluster, resolve_n_concepts
from gig.concepts.conceptset import ConceptSet, Exemplar, LayerConcepts, check_lasso, lam_scale
from gig.concepts.decompose import LassoSettings
from gig.concepts.sampling import check_sampling, position_weights, sample_positions
from gig.data import check_reiterable, eval_mode, iter_batches, n_batches
from gig.layers import LOGITS, traced
from gig.pfv import to_pfvs
from gig.types import ConceptCounts, Data, Device, Progress


DEFAULT_PFVS_PER_IMAGE = 4
DEFAULT_LAM = 0.02  # relative: λ = 0.02 · the layer's mean λ_max
#: The paper's settings (one PFV per image, ``8 × C`` concepts, bisecting k-means), one option away:
#: ``extract_concepts(model, data, layers, **PAPER_PRESET)``.
PAPER_PRESET = {"n_concepts": "paper", "method": "bisecting_kmeans", "pfvs_per_image": 1}


def extract_concepts(model: nn.Module, data: Data, layers: Sequence[str], n_concepts: ConceptCounts = None,
                     method: str = DEFAULT, pfvs_per_image: int = DEFAULT_PFVS_PER_IMAGE,
                     sampling: str = "contribution", lam: float = DEFAULT_LAM, nonneg: bool = False, seed: int = 0,
                     device: Device = None, progress: Progress | None = None, n_exemplars: int = 8,
                     relative_lam: bool = True, solver: LassoSettings | None = None) -> ConceptSet:
    """Concepts of ``layers`` of ``model`` on ``data`` (a re-iterable of images or ``(images, labels)`` that yields
    the same images in the same order on each pass: no shuffling; exemplars name images by that order).

    ``n_concepts``: ``None`` (the default, :data:`gig.concepts.clustering.DEFAULT_N_CONCEPTS` per layer), ``"paper"``
    (``8 × C``, the paper's preset), an int, or ``{layer: int}`` (others keep the default). It never exceeds what
    the samples support (one concept per :data:`~gig.concepts.clustering.MIN_SAMPLES_PER_CONCEPT` distinct
    sampled PFVs): a larger request is clipped with a warning, recorded in ``params["warnings"]`` and
    ``params["n_concepts_requested"]``; sample more PFVs per image (``pfvs_per_image``) or images to avoid it.
    ``method``: a clustering name (:mod:`.clustering`); ``sampling``: ``"contribution"``, ``"uniform"`` or
    ``"norm"``; ``lam``/``nonneg``: the Lasso of the set, ``lam`` relative to each layer's scale
    (:func:`~gig.concepts.conceptset.lam_scale` of the sampled PFVs) unless ``relative_lam=False``; ``solver``:
    :class:`LassoSettings`; ``progress(stage, done, total)`` is called with stages ``"sample"``, ``"cluster"`` and
    ``"decompose"`` (done and total in batches), and with ``"decompose:fine"`` in finer units (images × layers,
    moving with every chunk of Lasso rows; a progress display should show one or the other). The second pass
    also records, per layer, ``params["decomposition"][layer] =
    {"relative_error", "l0"}`` over every PFV of ``data`` (``‖X − X̂‖/‖X‖`` and the fraction of non-zero
    coefficients).
    """
    layers = traced(model).check_layers(layers)
    check_method(method)
    check_sampling(sampling)
    check_n_concepts(n_concepts, layers)
    check_lasso(lam, nonneg)
    if isinstance(pfvs_per_image, bool) or not isinstance(pfvs_per_image, int) or pfvs_per_image < 1:
        raise ValueError(f"pfvs_per_image must be a positive int, not {pfvs_per_image!r}")
    if isinstance(n_exemplars, bool) or not isinstance(n_exemplars, int) or n_exemplars < 0:
        raise ValueError(f"n_exemplars must be a non-negative int, not {n_exemplars!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, not {seed!r}")
    if solver is not None and not isinstance(solver, LassoSettings):
        raise ValueError(f"solver must be a LassoSettings, not {type(solver).__name__}")
    check_reiterable(data)
    device = _check_device(model, device)
    report = progress or (lambda stage, done, total: None)

    with eval_mode(model):
        samples, n_images = sample_pfvs(model, data, layers, sampling, pfvs_per_image, seed, device, report)
        concepts, requested, notes = {}, {}, []
        for i, layer in enumerate(layers):
            report("cluster", i, len(layers))
            wanted, k = resolve_n_concepts(n_concepts, layer, samples[layer].shape[1], samples[layer])
            if k < wanted:
                requested[layer] = wanted
                notes.append(f"{layer}: {wanted} concepts asked for, but the {samples[layer].shape[0]} sampled PFVs "
                             f"support {k}; sample more PFVs per image or more images")
            concepts[layer] = LayerConcepts(cluster(samples[layer], k, method, seed))
        report("cluster", len(layers), len(layers))
        for note in notes:
            warnings.warn(f"n_concepts clipped: {note}", stacklevel=2)
        params = {
            "n_concepts": {layer: lc.n_concepts for layer, lc in concepts.items()},
            "sampling": sampling, "pfvs_per_image": pfvs_per_image, "seed": seed, "n_images": n_images,
            "n_samples": {layer: s.shape[0] for layer, s in samples.items()},
            "relative_lam": bool(relative_lam),
        }
        if notes:
            params["warnings"] = notes
            params["n_concepts_requested"] = requested
        scales = ({layer: lam_scale(samples[layer], lc.vectors, nonneg) for layer, lc in concepts.items()}
                  if relative_lam else None)
        result = ConceptSet(concepts, lam=lam, nonneg=nonneg, solver=solver, method=method, params=params,
                            lam_scales=scales)
        result.params["decomposition"] = _fill_statistics(model, data, result, n_images, n_exemplars, device, report)
    return result


def _check_device(model, device) -> torch.device:
    param = next(model.parameters(), None)
    own = param.device if param is not None else torch.device("cpu")
    try:
        device = own if device is None else torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda:0', not {device!r}") from exc
    if device.type != own.type or (device.index is not None and own.index is not None and device != own):
        raise ValueError(f"the model is on {own} but device={device}; move the model or pass device={own}")
    return own


def sample_pfvs(model, data, layers, sampling="contribution", per_image=1, seed=0, device=None, report=None):
    """Pass 1: ``{layer: (images × per_image, C)}`` sampled PFVs on the CPU, and the number of images.

    ``layers`` must be checked cut names in forward order; the model must be in eval mode.
    """
    device = _check_device(model, device)
    report = report or (lambda stage, done, total: None)
    prefix = traced(model).prefix(layers)
    generator = torch.Generator().manual_seed(seed)
    kept: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    total, n_images = n_batches(data), 0
    report("sample", 0, total)
    for done, batch in enumerate(iter_batches(data, device), 1):
        with torch.enable_grad() if sampling == "contribution" else torch.no_grad():
            images = batch.images.detach().requires_grad_(sampling == "contribution")
            outputs = prefix(images)
            activations = [outputs[layer] for layer in layers]
            grads = [None] * len(layers)
            if sampling == "contribution":
                logits = outputs[LOGITS]
                predicted = logits.argmax(dim=1, keepdim=True)
                grads = torch.autograd.grad(logits.gather(1, predicted).sum(), activations)
        for layer, activation, grad in zip(layers, activations, grads):
            pfvs = to_pfvs(activation.detach())
            weights = position_weights(sampling, pfvs, None if grad is None else to_pfvs(grad))
            positions = sample_positions(weights, per_image, generator)
            picked = pfvs.gather(1, positions.unsqueeze(-1).expand(-1, -1, pfvs.shape[-1]))
            kept[layer].append(picked.reshape(-1, pfvs.shape[-1]).cpu())
        n_images += batch.images.shape[0]
        report("sample", done, total)
    return {layer: torch.cat(chunks) for layer, chunks in kept.items()}, n_images


class _Accumulator:
    """Per-concept counts, positive-coefficient sums and a bounded top-``n`` of (image, position, coefficient)."""

    def __init__(self, k: int, n: int, device):
        self.present = torch.zeros(k, dtype=torch.long, device=device)
        self.positive_sum = torch.zeros(k, dtype=torch.float64, device=device)
        self.positive_count = torch.zeros(k, dtype=torch.long, device=device)
        self.top_value = torch.full((k, n), -torch.inf, device=device)
        self.top_image = torch.zeros(k, n, dtype=torch.long, device=device)
        self.top_position = torch.zeros(k, n, dtype=torch.long, device=device)
        self.error_sq = self.norm_sq = 0.0  # of the reconstruction, over every PFV
        self.nonzero = self.coefficients = 0

    def add_reconstruction(self, pfvs: torch.Tensor, coef: torch.Tensor, rebuilt: torch.Tensor) -> None:
        """Accumulate ``‖X − X̂‖²``, ``‖X‖²`` and the non-zero count of one batch."""
        self.error_sq += float((pfvs - rebuilt).double().square().sum())
        self.norm_sq += float(pfvs.double().square().sum())
        self.nonzero += int((coef != 0).sum())
        self.coefficients += coef.numel()

    def decomposition(self) -> dict[str, float]:
        return {"relative_error": (self.error_sq / max(self.norm_sq, 1e-300)) ** 0.5,
                "l0": self.nonzero / max(self.coefficients, 1)}

    def add(self, coef: torch.Tensor, named: torch.Tensor, first_image: int) -> None:
        """``coef`` ``(B, P, K)`` of images ``first_image, first_image + 1, …`` and the concept ``named`` ``(B, P)``
        of each PFV; a concept's exemplar candidates are the PFVs it names, ranked by its coefficient."""
        self.present += (coef.amax(dim=1) > 0).sum(0)
        self.positive_sum += coef.clamp_min(0).sum((0, 1)).double()
        self.positive_count += (coef > 0).sum((0, 1))
        if self.top_value.shape[1]:
            own = torch.nn.functional.one_hot(named, coef.shape[2]).bool()
            best, where = coef.masked_fill(~own, -torch.inf).max(dim=1)  # (B, K): strongest PFV named k per image
            images = torch.arange(first_image, first_image + coef.shape[0], device=coef.device)
            value = torch.cat([self.top_value, best.T.to(self.top_value.dtype)], 1)
            image = torch.cat([self.top_image, images.expand(coef.shape[2], -1)], 1)
            position = torch.cat([self.top_position, where.T], 1)
            self.top_value, order = value.topk(self.top_value.shape[1], dim=1)
            self.top_image, self.top_position = image.gather(1, order), position.gather(1, order)

    def write(self, concepts: LayerConcepts, n_images: int) -> None:
        concepts.frequency = (self.present.double() / n_images).float().cpu()
        concepts.mean_coefficient = (self.positive_sum / self.positive_count.clamp_min(1)).float().cpu()
        concepts.exemplars = [
            [Exemplar(int(i), int(p), float(v)) for v, i, p in zip(vs, ims, ps) if v > 0]
            for vs, ims, ps in zip(self.top_value.tolist(), self.top_image.tolist(), self.top_position.tolist())
        ]


def _fill_statistics(model, data, concepts: ConceptSet, n_images, n_exemplars, device, report) -> dict:
    """Pass 2: decompose every PFV of every image and write each layer's statistics and exemplars; returns the
    reconstruction error and ℓ0 of each layer."""
    layers = list(concepts.layers)
    prefix = traced(model).prefix(layers)
    stats = {layer: _Accumulator(concepts.layers[layer].n_concepts, n_exemplars, device) for layer in layers}
    total, first = n_batches(data), 0
    units = n_images * len(layers)  # fine units: images × layers
    report("decompose", 0, total)
    report("decompose:fine", 0, units)
    for done, batch in enumerate(iter_batches(data, device), 1):
        with torch.no_grad():
            outputs = prefix(batch.images)
        size = batch.images.shape[0]
        for i, layer in enumerate(layers):
            pfvs = to_pfvs(outputs[layer])
            base = first * len(layers) + i * size

            def rows_done(rows, n_rows, base=base):
                report("decompose:fine", min(units, base + size * rows // max(n_rows, 1)), units)

            coef = concepts.decompose(layer, pfvs, progress=rows_done)
            stats[layer].add(coef, concepts.assign(layer, pfvs), first)
            stats[layer].add_reconstruction(pfvs, coef, concepts.reconstruct(layer, coef))
        first += batch.images.shape[0]
        report("decompose", done, total)
    if first != n_images:
        raise ValueError(f"data gave {n_images} images in the first pass but {first} in the second; it must not change")
    for layer in layers:
        stats[layer].write(concepts.layers[layer], n_images)
    return {layer: stats[layer].decomposition() for layer in layers}
