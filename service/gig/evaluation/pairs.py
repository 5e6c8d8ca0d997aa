"""A layer pair ``a → b`` on a batch of images, one target per image, and what removing source concepts does.

The source activation is decomposed, ``X̂ = U V``. Keeping a subset of concepts zeroes the other columns of ``U``.
For each kept subset two values are read from the segment's output ``F(X̂)``:

- the **target** ``g = <W, F(X̂)>``, the linear GIG target (a masked projection on a concept of ``b``, or a logit);
- the **readout** the deletion curves follow: the maximum projection ``max_p <F(X̂)_p, v̂_r>`` on the target
  concept (the paper's inter-layer protocol), or the class probability (C-Del / C-Ins, Fel et al. 2023).

:func:`analyse` runs one prefix pass over the images and decomposes every analysed layer; :func:`pair_problem`
cuts a :class:`PairProblem` out of it for one pair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from gig.attribution import class_targets, concept_targets, integrate
from gig.layers import LOGITS, traced
from gig.pfv import from_pfvs, to_pfvs
from gig.quadrature import DEFAULT
from gig.targets import DEFAULT_CLASS_TARGET

READOUTS = ("projection", "probability", "target")
# Default chunk: about this many elements of coefficients, segment input and output per chunk of rows.
ROW_BUDGET_ELEMENTS = 2**24


@dataclass
class AnalysedBatch:
    """One prefix pass over a batch: every analysed activation, the logits and each layer's coefficients."""

    activations: dict[str, torch.Tensor]  # layer -> X^layer
    logits: torch.Tensor  # (B, classes)
    coefficients: dict[str, torch.Tensor]  # layer -> (B, P, K)
    vectors: dict[str, torch.Tensor]  # layer -> (K, C), on the activations' device and dtype
    labels: torch.Tensor | None  # (B,) or None

    @property
    def classes(self) -> torch.Tensor:
        """The class each image is explained towards: its label when known, else the predicted class."""
        return self.labels if self.labels is not None else self.logits.argmax(1)


def analyse(model: nn.Module, concepts, images: torch.Tensor, layers: list[str],
            labels: torch.Tensor | None = None) -> AnalysedBatch:
    """Run the prefix of ``model`` once on ``images`` and decompose every layer of ``layers`` with ``concepts``."""
    with torch.no_grad():
        outputs = traced(model).prefix(layers)(images)
    coefficients, vectors = {}, {}
    for layer in layers:
        activation = outputs[layer]
        vectors[layer] = concepts.vectors(layer).to(device=activation.device, dtype=activation.dtype)
        coefficients[layer] = concepts.decompose(layer, to_pfvs(activation)).to(activation.dtype)
    if labels is not None:
        labels = labels.to(outputs[LOGITS].device)
    return AnalysedBatch({layer: outputs[layer] for layer in layers}, outputs[LOGITS], coefficients, vectors, labels)


@dataclass
class PairProblem:
    """Pair ``a → b`` with one target per image row; rows may repeat an image for several targets."""

    segment: nn.Module  # X^a -> X^b (or logits)
    coefficients: torch.Tensor  # (B, P, K) of X^a
    vectors: torch.Tensor  # (K, C) concepts of a
    like_shape: tuple  # shape of X^a
    target_weights: torch.Tensor  # (B, *out): g = <W, F(X̂)>
    readout: str  # "projection" (on target_vectors), "probability" (of target_classes) or "target" (g itself)
    target_vectors: torch.Tensor | None = None  # (B, C_b) unit concept vectors of the targets
    target_classes: torch.Tensor | None = None  # (B,) classes
    steps: int | None = None  # None: the rule's default
    method: str = DEFAULT
    max_batch_rows: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; valid readouts are: {', '.join(READOUTS)}")
        if self.readout == "projection" and self.target_vectors is None:
            raise ValueError("readout 'projection' needs target_vectors (B, C_b)")
        if self.readout == "probability" and self.target_classes is None:
            raise ValueError("readout 'probability' needs target_classes (B,)")
        self.like_shape = tuple(self.like_shape)

    @property
    def batch(self) -> int:
        return self.coefficients.shape[0]

    @property
    def active(self) -> torch.Tensor:
        """``(B, K)``: the concepts present in each row's image (a non-zero coefficient somewhere)."""
        return self.coefficients.abs().sum(1) > 0

    def gig(self) -> torch.Tensor:
        """``(B, K)`` GIG of every source concept to the row's target (``steps``, ``method``)."""
        if "gig" not in self._cache:
            self._cache["gig"] = self._integrate(self.steps, self.method)
        return self._cache["gig"]

    def gradient_x_coefficient(self) -> torch.Tensor:
        """``(B, K)``: ``Σ_p U_pq <v_q, ∇g(F(X̂))>``, the gradient at ``α = 1`` (one right Riemann step)."""
        return self._integrate(1, "riemann_right")

    def _integrate(self, steps: int, method: str) -> torch.Tensor:
        attributions, _ = integrate(self.segment, self.coefficients, self.vectors, self.like_shape,
                                    self.target_weights.unsqueeze(1), steps, method,
                                    max_batch_rows=self.max_batch_rows)
        return attributions[:, :, 0]

    def values(self, rows: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout and target ``(N,)`` each, for image rows ``rows`` ``(N,)`` keeping concepts ``keep`` ``(N, K)``."""
        readouts, targets = [], []
        chunk = self._chunk_rows()
        with torch.no_grad():
            for first in range(0, rows.shape[0], chunk):
                index, kept = rows[first:first + chunk], keep[first:first + chunk]
                pfvs = (self.coefficients[index] * kept.unsqueeze(1).to(self.coefficients.dtype)) @ self.vectors
                out = self.segment(from_pfvs(pfvs, (index.shape[0], *self.like_shape[1:])))
                target = (out * self.target_weights[index]).flatten(1).sum(1)
                targets.append(target)
                readouts.append(target if self.readout == "target" else self._readout(out, index))
        return torch.cat(readouts), torch.cat(targets)

    def full_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout and target ``(B,)`` with every concept kept (the reconstruction ``X̂``)."""
        if "full" not in self._cache:
            rows = torch.arange(self.batch, device=self.coefficients.device)
            self._cache["full"] = self.values(rows, torch.ones_like(self.active))
        return self._cache["full"]

    def _readout(self, out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.readout == "probability":
            return out.softmax(1).gather(1, self.target_classes[index].unsqueeze(1)).squeeze(1)
        return (to_pfvs(out) @ self.target_vectors[index].unsqueeze(2)).squeeze(2).amax(1)

    def _chunk_rows(self) -> int:
        if self.max_batch_rows is not None:
            return self.max_batch_rows
        per_row = self.coefficients[0].numel() + math.prod(self.like_shape[1:]) + self.target_weights[0].numel()
        return max(1, ROW_BUDGET_ELEMENTS // per_row)


def pair_problem(model: nn.Module, batch: AnalysedBatch, source: str, target: str, targets_per_image: int = 1,
                 steps: int | None = None, method: str = DEFAULT, max_batch_rows: int | None = None,
                 readout: str | None = None, class_target: str = DEFAULT_CLASS_TARGET) -> PairProblem:
    """The :class:`PairProblem` of ``source → target`` (an analysed layer or ``"logits"``).

    Targets: each image's top ``targets_per_image`` concepts of ``target`` by total coefficient (rows repeat the
    image once per target), or at the logits the image's label, else its predicted class. ``readout``: what the
    deletion curves follow; default the paper's (``"projection"`` between layers, ``"probability"`` at the
    logits); ``"target"``: the target function ``g`` that GIG attributes (masked projection sum, or the class
    target: the logit, or with ``class_target="contrastive"`` the logit minus the mean of the others).
    """
    if readout is not None and readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; valid readouts are: {', '.join(READOUTS)}")
    coefficients = batch.coefficients[source]
    segment = traced(model).segment(source, target)
    like_shape = batch.activations[source].shape
    if target == LOGITS:
        classes, weights = class_targets(batch.logits, targets=batch.classes.unsqueeze(1), class_target=class_target)
        return PairProblem(segment, coefficients, batch.vectors[source], like_shape, weights[:, 0],
                           readout or "probability",
                           target_classes=classes[:, 0], steps=steps, method=method, max_batch_rows=max_batch_rows)
    target_vectors = batch.vectors[target]
    chosen, weights = concept_targets(batch.coefficients[target], target_vectors, batch.activations[target].shape,
                                      top_t=targets_per_image)
    rows = torch.arange(coefficients.shape[0], device=coefficients.device).repeat_interleave(chosen.shape[1])
    units = target_vectors / target_vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(target_vectors.dtype).tiny)
    return PairProblem(segment, coefficients[rows], batch.vectors[source], (rows.shape[0], *like_shape[1:]),
                       weights.flatten(0, 1), readout or "projection", target_vectors=units[chosen.flatten()], steps=steps,
                       method=method, max_batch_rows=max_batch_rows)
