"""Registered models on a worker: the stored weights loaded per architecture family, checked, kept resident (LRU).

Per ``weights_format`` (:mod:`gigaudit_server.worker.architectures`):

- ``safetensors`` (torchvision, gigaudit, timm, plugins): the architecture is built with random weights and the
  file loaded strictly; missing, unexpected and mis-shaped keys are refused, listing the first few. Pickle files
  (``torch.save``), TorchScript and ``.pt2`` archives run code when loaded and are refused with a message that says
  what they are.
- ``huggingface``: a tar or zip of ``config.json`` + ``model.safetensors``, loaded by transformers from that config
  (its own key renames apply), refused on the same key mismatches.
- ``onnx``: the ``.onnx`` file converted with onnx2torch and run once.

Each loaded model also carries its own preprocessing configuration where it has one (timm's data config, a Hugging
Face ``preprocessor_config.json``, an ONNX model's static input size): :meth:`ModelCache.model_config`.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.architectures import build_architecture, family_of, huggingface, onnx_models

_SHOWN = 20  # keys listed per kind of mismatch


@dataclass(frozen=True)
class LoadedModel:
    """A checked model (eval mode, no gradients on its weights), its family and its own preprocessing config (a
    partial ``PreprocessingSpec`` dict, or None)."""
    model: nn.Module
    family: str
    config: dict | None


def read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ``ValueError`` naming the format of anything else."""
    if data[:1] == b"\x80" and data[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
        raise ValueError("weights are a Python pickle (torch.save of an old format); only safetensors is accepted")
    if data[:4] == b"PK\x03\x04":
        raise ValueError(
            "weights are a zip archive (torch.save, TorchScript or .pt2); only safetensors is accepted, "
            "e.g. safetensors.torch.save_file(model.state_dict(), 'model.safetensors')"
        )
    try:
        return safetensors.torch.load(data)
    except SafetensorError as exc:
        raise ValueError(f"weights are not a valid safetensors file ({exc}); truncated or a different format?") from exc


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str = "the architecture") -> None:
    """``ValueError`` listing missing, unexpected and mis-shaped keys, and tensors with NaN or inf."""
    expected = model.state_dict()
    check_keys(what,
               missing=[k for k in expected if k not in state],
               unexpected=sorted(k for k in state if k not in expected),  # a file's order is its writer's
               misshaped=[f"{k} (weights {list(state[k].shape)}, {what} {list(v.shape)})"
                          for k, v in expected.items() if k in state and state[k].shape != v.shape],
               non_finite=_non_finite(state))


def check_keys(what: str, missing=(), unexpected=(), misshaped=(), non_finite=()) -> None:
    """``ValueError`` listing the first keys of each kind of mismatch (none: returns)."""
    problems = [
        f"{label}: {_listing(list(keys))}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
            ("keys with NaN or inf", non_finite),
        )
        if keys
    ]
    if problems:
        raise ValueError(f"weights do not match {what}: " + "; ".join(problems))


def load_model(architecture: str, num_classes: int, data: bytes, device: str | torch.device = "cpu",
               options: Mapping | None = None) -> nn.Module:
    """The model of ``architecture`` with the stored file ``data`` (its ``weights_format``), checked, on ``device``."""
    return load(architecture, num_classes, data, device, options).model


def load(architecture: str, num_classes: int, data: bytes, device: str | torch.device = "cpu",
         options: Mapping | None = None) -> LoadedModel:
    """:class:`LoadedModel` of ``architecture`` and ``data``; ``ValueError`` saying what does not match."""
    family = family_of(architecture)
    what = f"{architecture} with {num_classes} classes"
    config = None
    if family == huggingface.FAMILY:
        model, info, preprocessor = huggingface.load(data, num_classes, dict(options or {}))
        check_keys(what, missing=sorted(info.get("missing_keys") or ()),
                   unexpected=sorted(info.get("unexpected_keys") or ()),
                   misshaped=[f"{k} (weights {list(saved)}, {what} {list(wanted)})"
                              for k, saved, wanted in sorted(info.get("mismatched_keys") or ())],
                   non_finite=_non_finite(model.state_dict()))
        config = _hf_config(model, preprocessor)
    elif family == onnx_models.FAMILY:
        if options:
            raise ValueError("onnx architectures take no architecture_options")
        model, config = onnx_models.convert(data)
        _run_once(model, config, "the ONNX model converted to torch")
    else:
        model = build_architecture(architecture, num_classes, options)
        state = read_safetensors(data)
        check_state_dict(model, state, what)
        model.load_state_dict(state, strict=True)
        if family == "timm":
            from gig.preprocessing import from_timm

            config = from_timm(model)
    model.requires_grad_(False)  # gig differentiates activations, never weights
    return LoadedModel(model.to(device).eval(), family, config)


class ModelCache:
    """Resident models keyed by (weights sha256, architecture, classes, options, tracer, device); the least recently
    used goes first. ``stats()`` counts hits, misses and evictions (the worker's metrics read them)."""

    def __init__(self, store: ArtifactStore, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.store = store
        self.capacity = capacity
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    @staticmethod
    def key(record: Mapping, device: str | torch.device = "cpu") -> tuple:
        """The cache key of a ModelRecord on ``device``."""
        try:
            architecture, num_classes, sha = record["architecture"], record["num_classes"], record["weights_sha256"]
        except KeyError as exc:
            raise ValueError(f"model record lacks {exc.args[0]!r}") from exc
        return (sha, architecture, num_classes, json.dumps(record.get("architecture_options") or {}, sort_keys=True),
                json.dumps(record.get("tracer") or {}, sort_keys=True), str(torch.device(device)))

    def get(self, record: Mapping, device: str | torch.device = "cpu") -> nn.Module:
        """The model of a ModelRecord (``architecture``, ``num_classes``, ``weights_sha256``, optionally
        ``architecture_options`` and ``tracer``) on ``device``."""
        return self.loaded(record, device).model

    def model_config(self, record: Mapping, device: str | torch.device = "cpu") -> dict | None:
        """The model's own preprocessing configuration (a partial ``PreprocessingSpec`` dict), or None."""
        return self.loaded(record, device).config

    def loaded(self, record: Mapping, device: str | torch.device = "cpu") -> LoadedModel:
        """The :class:`LoadedModel` of a ModelRecord on ``device`` (loaded and checked on a miss)."""
        key = self.key(record, device)
        with self._lock:
            if key in self._models:
                self.hits += 1
                self._models.move_to_end(key)
                return self._models[key]
            self.misses += 1
            loaded = load(record["architecture"], record["num_classes"], self.store.read("weights", key[0]),
                          device, record.get("architecture_options"))
            _configure_tracing(loaded, record)
            self._models[key] = loaded
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
                self.evictions += 1
            return loaded

    def stats(self) -> dict[str, int]:
        """``{hits, misses, evictions, resident, capacity}`` since the cache was made (without the lock, which a
        loading model holds for seconds)."""
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "resident": len(self._models), "capacity": self.capacity}

    def __len__(self) -> int:
        return len(self._models)

    def __bool__(self) -> bool:
        """Always true, empty or not: ``Tasks(store, device, models or ...)`` must keep a given empty cache."""
        return True

    def __contains__(self, key) -> bool:
        return key in self._models


def _configure_tracing(loaded: LoadedModel, record: Mapping) -> None:
    """Attach the record's tracer options to the model (gig then finds its layers with them)."""
    from gig import configure_tracing

    tracer = record.get("tracer") or {}
    if not any(tracer.values()):
        return
    preprocessing = record.get("preprocessing") or {}
    config = loaded.config or {}
    size = next(((h, w) for h, w in ((preprocessing.get("height"), preprocessing.get("width")),
                                     (config.get("height"), config.get("width"))) if h and w), None)
    if size is None and record.get("input_size"):
        size = (record["input_size"],) * 2
    configure_tracing(loaded.model, tracer, input_size=size)


def _hf_config(model: nn.Module, preprocessor: dict | None) -> dict | None:
    """The preprocessing of a Hugging Face model: its ``preprocessor_config.json``, else its config's image size."""
    if preprocessor is not None:
        from gig.preprocessing import from_hf_processor

        return from_hf_processor(preprocessor)
    size = getattr(model.config, "image_size", None)
    if isinstance(size, int) and size > 0:
        return {"height": size, "width": size}
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return {"height": size[0], "width": size[1]}
    return None


def _run_once(model: nn.Module, size: dict | None, what: str) -> None:
    """Run one zero image of the model's static input size (when it has one): ``ValueError`` when that fails."""
    if not size:
        return
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size["height"], size["width"]))
    except Exception as exc:  # noqa: BLE001 - whatever a converted graph raises, say that it fails
        raise ValueError(f"{what} fails on a 1x3x{size['height']}x{size['width']} input: "
                         f"{type(exc).__name__}: {exc}") from None


def _non_finite(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown} and {len(keys) - _SHOWN} more"
