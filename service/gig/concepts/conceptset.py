"""A model's concepts: per analysed layer the concept vectors, their statistics and exemplars, and the decomposition.

Stored without pickle: :meth:`ConceptSet.save` writes ``<path>.safetensors`` (tensors) and ``<path>.json``
(everything else); :meth:`ConceptSet.to_bytes` packs both into one safetensors blob (the JSON in its header).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from gig.concepts.decompose import Dictionary, LassoSettings, lasso, least_squares

FORMAT = "gigaudit.concept-set/1"
_STATS = ("frequency", "mean_coefficient")


class Exemplar(NamedTuple):
    """A PFV that expresses a concept strongly: image index (dataset order), position index, coefficient."""

    image: int
    position: int
    coefficient: float


@dataclass
class LayerConcepts:
    """The concepts of one layer: ``vectors`` ``(K, C)`` (rows = concepts) and, after extraction, per concept the
    fraction of images where it is present, its mean coefficient where present, and its top exemplars."""

    vectors: torch.Tensor
    frequency: torch.Tensor | None = None
    mean_coefficient: torch.Tensor | None = None
    exemplars: list[list[Exemplar]] = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() != 2 or 0 in self.vectors.shape:
            shape = tuple(self.vectors.shape) if isinstance(self.vectors, torch.Tensor) else type(self.vectors)
            raise ValueError(f"concept vectors must be a non-empty (K, C) tensor, not {shape}")
        if not self.vectors.is_floating_point() or not torch.isfinite(self.vectors).all():
            raise ValueError("concept vectors must be finite floating-point values")
        for name in _STATS:
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (self.n_concepts,):
                raise ValueError(f"{name} must have shape ({self.n_concepts},), not {tuple(value.shape)}")
        if self.exemplars and len(self.exemplars) != self.n_concepts:
            raise ValueError(f"exemplars must hold one list per concept ({self.n_concepts}), not {len(self.exemplars)}")

    @property
    def n_concepts(self) -> int:
        return self.vectors.shape[0]

    @property
    def channels(self) -> int:
        return self.vectors.shape[1]


class ConceptSet:
    """Concepts of several layers (in forward order) and the Lasso that decomposes PFVs into them.

    ``lam`` is the ℓ1 weight (``0`` = least squares), ``nonneg`` forces ``u ≥ 0``, ``solver`` the Lasso solver settings;
    ``method`` and ``params`` record how the concepts were extracted. ``lam_scales`` ``{layer: s}`` makes ``lam``
    relative: layer ``a`` is decomposed with ``λ = lam · s_a`` (see :func:`lam_scale`); a layer without a scale
    uses ``lam`` as it is (absolute).
    """

    def __init__(
        self,
        layers: dict[str, LayerConcepts],
        lam: float = 0.0,
        nonneg: bool = False,
        solver: LassoSettings | None = None,
        method: str = "given",
        params: dict | None = None,
        lam_scales: dict[str, float] | None = None,
    ):
        if not layers:
            raise ValueError("a concept set needs at least one layer")
        if not all(isinstance(v, LayerConcepts) for v in layers.values()):
            raise ValueError("layers must map layer names to LayerConcepts")
        check_lasso(lam, nonneg)
        self.layers = dict(layers)
        self.lam = float(lam)
        self.nonneg = bool(nonneg)
        self.solver = solver or LassoSettings()
        self.method = method
        self.params = dict(params or {})
        self.lam_scales = {layer: float(scale) for layer, scale in (lam_scales or {}).items()}
        unknown = set(self.lam_scales) - set(self.layers)
        if unknown:
            raise ValueError(f"lam_scales names layers {sorted(unknown)} that have no concepts")
        if not all(math.isfinite(scale) and scale > 0 for scale in self.lam_scales.values()):
            raise ValueError(f"lam_scales must be finite positive numbers, not {self.lam_scales}")
        self._dictionaries: dict[tuple, Dictionary] = {}

    @classmethod
    def from_vectors(cls, vectors: dict[str, torch.Tensor], lam: float = 0.0, nonneg: bool = False,
                     relative_lam: bool = False, **solver: Any) -> ConceptSet:
        """A concept set from given concept vectors ``{layer: (K, C)}``; ``solver`` overrides :class:`LassoSettings`.

        ``lam`` is absolute unless ``relative_lam``: then each layer's scale is :func:`lam_scale` of its own
        concept vectors (standing in for the PFVs they came from).
        """
        if not isinstance(vectors, dict):
            raise ValueError(f"vectors must be a dict {{layer: (K, C) tensor}}, not {type(vectors).__name__}")
        try:
            settings = LassoSettings(**solver)
        except TypeError as exc:
            raise ValueError(f"unknown solver setting; valid: {', '.join(LassoSettings.__dataclass_fields__)}") from exc
        layers = {name: LayerConcepts(v.detach().clone() if isinstance(v, torch.Tensor) else v)
                  for name, v in vectors.items()}
        scales = {name: lam_scale(lc.vectors, lc.vectors, nonneg) for name, lc in layers.items()} if relative_lam else None
        return cls(layers, lam=lam, nonneg=nonneg, solver=settings, lam_scales=scales)

    # ------------------------------------------------------------------ decomposition
    def __getitem__(self, layer: str) -> LayerConcepts:
        if layer not in self.layers:
            raise ValueError(f"no concepts for layer {layer!r}; this set has: {', '.join(self.layers)}")
        return self.layers[layer]

    def vectors(self, layer: str) -> torch.Tensor:
        """The concept vectors ``(K, C)`` of ``layer``."""
        return self[layer].vectors

    def _dictionary(self, layer: str, like: torch.Tensor) -> Dictionary:
        vectors = self[layer].vectors
        key = (layer, like.device, like.dtype, id(vectors), vectors._version)  # new or edited vectors: a new entry
        if key not in self._dictionaries:
            self._dictionaries[key] = Dictionary(vectors.to(like.device, like.dtype))
        return self._dictionaries[key]

    def _check_pfvs(self, layer: str, pfvs: torch.Tensor) -> None:
        channels = self[layer].channels
        if not isinstance(pfvs, torch.Tensor) or pfvs.dim() == 0 or pfvs.shape[-1] != channels:
            shape = tuple(pfvs.shape) if isinstance(pfvs, torch.Tensor) else type(pfvs).__name__
            raise ValueError(f"PFVs of layer {layer!r} must have shape (..., {channels}), not {shape}")
        if not pfvs.is_floating_point() or not torch.isfinite(pfvs).all():
            raise ValueError("PFVs must be finite floating-point values")

    def layer_lam(self, layer: str) -> float:
        """The absolute ℓ1 weight ``λ`` that decomposes the PFVs of ``layer``."""
        self[layer]
        return self.lam * self.lam_scales.get(layer, 1.0)

    @torch.no_grad()
    def assign(self, layer: str, activations: torch.Tensor) -> torch.Tensor:
        """The concept that names each PFV: the index ``(...)`` of the nearest concept vector (Euclidean), for
        ``activations`` given as PFVs ``(..., C)`` or as a layer output (``(B, C, H, W)`` → ``(B, H·W)``).

        Nearest-vector naming is the clustering's own rule, so a PFV is named by the cluster it would join; it
        agreed better with planted parts than the largest Lasso coefficient (``benchmarks/bench_concepts.py``).
        """
        from gig.pfv import to_pfvs

        channels = self[layer].channels
        if isinstance(activations, torch.Tensor) and activations.dim() == 4 and activations.shape[1] == channels:
            activations = to_pfvs(activations)
        self._check_pfvs(layer, activations)
        vectors = self.vectors(layer).to(activations.device, activations.dtype)
        rows = activations.detach().reshape(-1, channels)
        # ‖x − v‖² = ‖x‖² − 2⟨x, v⟩ + ‖v‖²; ‖x‖² is the same for every concept of a row
        distance = vectors.square().sum(1) - 2 * rows @ vectors.T
        return distance.argmin(1).reshape(activations.shape[:-1])

    @torch.no_grad()
    def decompose(self, layer: str, pfvs: torch.Tensor, init: torch.Tensor | None = None,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Coefficients ``(..., K)`` of ``pfvs`` ``(..., C)``; ``init`` ``(..., K)`` warm-starts the Lasso;
        ``progress(rows_done, n_rows)`` after each chunk of rows the solver takes."""
        self._check_pfvs(layer, pfvs)
        dictionary = self._dictionary(layer, pfvs)
        rows = pfvs.detach().reshape(-1, pfvs.shape[-1])
        lam = self.layer_lam(layer)
        if lam == 0:
            coef = least_squares(rows, dictionary)
            if progress is not None:
                progress(rows.shape[0], rows.shape[0])
        else:
            if init is not None:
                if tuple(init.shape) != tuple(pfvs.shape[:-1]) + (dictionary.atoms.shape[0],):
                    raise ValueError(f"init must have shape {tuple(pfvs.shape[:-1]) + (dictionary.atoms.shape[0],)}")
                init = init.detach().reshape(rows.shape[0], -1).to(rows.dtype)
            coef = lasso(rows, dictionary, lam, self.nonneg, self.solver, init, progress=progress)
        return coef.reshape(*pfvs.shape[:-1], coef.shape[-1])

    def reconstruct(self, layer: str, coefficients: torch.Tensor) -> torch.Tensor:
        """PFVs ``(..., C)`` rebuilt from ``coefficients`` ``(..., K)``: ``Vᵀu``."""
        vectors = self.vectors(layer)
        if not isinstance(coefficients, torch.Tensor) or coefficients.shape[-1:] != vectors.shape[:1]:
            raise ValueError(f"coefficients of layer {layer!r} must have shape (..., {vectors.shape[0]})")
        return coefficients @ vectors.to(coefficients.device, coefficients.dtype)

    def decomposition_stats(self, layer: str, pfvs: torch.Tensor) -> dict[str, float]:
        """``relative_error`` ``‖X − X̂‖/‖X‖`` and ``l0`` (fraction of non-zero coefficients) of ``pfvs``."""
        coef = self.decompose(layer, pfvs)
        error = (pfvs.detach() - self.reconstruct(layer, coef)).norm() / pfvs.detach().norm().clamp_min(1e-12)
        return {"relative_error": float(error), "l0": float((coef != 0).float().mean())}

    # ------------------------------------------------------------------ model compatibility
    def check_model(self, model: torch.nn.Module, images: torch.Tensor | None = None) -> None:
        """``ValueError`` unless every layer of this set is a cut of ``model`` with the same number of channels.

        Channels are read from one forward pass of ``images`` (default: one zero image of the model's
        ``image_size`` attribute, else 224 px).
        """
        from gig.layers import traced
        from gig.pfv import to_pfvs

        tm = traced(model)
        names = list(self.layers)
        if tm.check_layers(names) != names:
            raise ValueError(f"the layers {names} of this concept set are not in the model's forward order")
        if images is None:
            size = getattr(model, "image_size", 224)
            param = next(model.parameters(), torch.empty(0))
            images = torch.zeros(1, 3, size, size, dtype=param.dtype, device=param.device)
        try:
            with torch.no_grad():
                outputs = tm.prefix(names)(images)
        except RuntimeError as exc:
            raise ValueError(f"could not run the model to read channel counts ({exc}); pass sample images") from exc
        for name in names:
            have, want = to_pfvs(outputs[name]).shape[-1], self.layers[name].channels
            if have != want:
                raise ValueError(f"layer {name!r} has {have} channels in the model but {want} in the concept set")

    # ------------------------------------------------------------------ storage
    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, lc in self.layers.items():
            tensors[f"{name}/vectors"] = lc.vectors.detach().cpu().contiguous()
            for stat in _STATS:
                if getattr(lc, stat) is not None:
                    tensors[f"{name}/{stat}"] = getattr(lc, stat).detach().cpu().contiguous()
        return tensors

    def _header(self) -> dict:
        return {
            "format": FORMAT,
            "layers": list(self.layers),
            "lam": self.lam,
            "lam_scales": self.lam_scales,
            "nonneg": self.nonneg,
            "solver": asdict(self.solver),
            "method": self.method,
            "params": self.params,
            "exemplars": {name: [[list(e) for e in ex] for ex in lc.exemplars] for name, lc in self.layers.items()},
        }

    @classmethod
    def _build(cls, header: dict, tensors: dict[str, torch.Tensor]) -> "ConceptSet":
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"not a concept set (expected format {FORMAT!r})")
        try:
            layers = {}
            for name in header["layers"]:
                exemplars = [[Exemplar(int(i), int(p), float(c)) for i, p, c in ex] for ex in header["exemplars"][name]]
                stats = {stat: tensors.get(f"{name}/{stat}") for stat in _STATS}
                layers[name] = LayerConcepts(tensors[f"{name}/vectors"], exemplars=exemplars, **stats)
            solver = LassoSettings(**header["solver"])
            return cls(layers, header["lam"], header["nonneg"], solver, header["method"], header["params"],
                       header.get("lam_scales"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"corrupt concept set: missing or malformed {exc}") from exc

    def to_bytes(self) -> bytes:
        """One safetensors blob holding the tensors, with the JSON header in its metadata."""
        return st_save(self._tensors(), metadata={"gigaudit": json.dumps(self._header())})

    @classmethod
    def from_bytes(cls, data: bytes) -> "ConceptSet":
        """Inverse of :meth:`to_bytes`."""
        try:
            tensors = st_load(data)
            header = json.loads(_metadata(data)["gigaudit"])
        except Exception as exc:  # safetensors raises its own error types for malformed data
            raise ValueError(f"not a concept set blob: {exc}") from exc
        return cls._build(header, tensors)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``<path>.safetensors`` and ``<path>.json``."""
        stem = _stem(path)
        with open(stem + ".safetensors", "wb") as f:
            f.write(st_save(self._tensors()))
        with open(stem + ".json", "w") as f:
            json.dump(self._header(), f, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ConceptSet":
        """Read a set written by :meth:`save`."""
        stem = _stem(path)
        try:
            with open(stem + ".json") as f:
                header = json.load(f)
            with open(stem + ".safetensors", "rb") as f:
                tensors = st_load(f.read())
        except FileNotFoundError as exc:
            raise ValueError(f"no concept set at {stem!r}: {exc}") from exc
        except Exception as exc:
            raise ValueError(f"unreadable concept set at {stem!r}: {exc}") from exc
        return cls._build(header, tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {lc.n_concepts}×{lc.channels}" for n, lc in self.layers.items())
        kind = "relative" if self.lam_scales else "absolute"
        return f"ConceptSet({shapes}; lam={self.lam} ({kind}), nonneg={self.nonneg}, method={self.method!r})"


def lam_scale(pfvs: torch.Tensor, vectors: torch.Tensor, nonneg: bool = False) -> float:
    """The scale of a layer that a relative ``lam`` multiplies: the mean over ``pfvs`` ``(N, C)`` of
    ``λ_max(x) = max_k ⟨v_k, x⟩`` (``|⟨v_k, x⟩|`` unless ``nonneg``), the smallest λ at which the Lasso code of
    ``x`` is all zero. So ``lam = 1`` zeroes a typical PFV's code, and one ``lam`` gives a similar sparsity on every
    layer and model, whatever the scale of its activations."""
    products = pfvs.detach().double().reshape(-1, pfvs.shape[-1]) @ vectors.detach().double().T
    peak = (products if nonneg else products.abs()).amax(1).clamp_min(0)
    scale = float(peak.mean())
    return scale if scale > 0 else 1.0


def check_lasso(lam, nonneg) -> None:
    """``ValueError`` unless ``lam ≥ 0`` is a number and ``nonneg`` comes with ``lam > 0``."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0 or lam == float("inf"):
        raise ValueError(f"lam must be a finite non-negative number, not {lam!r}")
    if nonneg and lam == 0:
        raise ValueError("nonneg=True needs lam > 0 (least squares has no sign constraint)")


def _stem(path) -> str:
    path = os.fspath(path)
    for suffix in (".safetensors", ".json"):
        if path.endswith(suffix):
            return path[: -len(suffix)]
    return path


def _metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian header length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]).get("__metadata__", {})
