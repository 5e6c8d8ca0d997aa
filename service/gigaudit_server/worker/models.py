"""Registered models on a worker: safetensors weights loaded into a registry architecture, kept resident (LRU).

Only safetensors is accepted. Pickle files (``torch.save``), TorchScript and ``.pt2`` archives run code when
loaded and are refused with a message that says what they are.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from gigaudit_server.storage.artifacts import ArtifactStore
from gigaudit_server.worker.architectures import build_architecture

_SHOWN = 20  # keys listed per kind of mismatch


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
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (weights {list(state[k].shape)}, {what} {list(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    non_finite = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    problems = [
        f"{label}: {_listing(keys)}"
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


def load_model(architecture: str, num_classes: int, data: bytes, device: str | torch.device = "cpu") -> nn.Module:
    """Build ``architecture`` and load the safetensors ``data`` strictly; returns the model on ``device``, eval."""
    model = build_architecture(architecture, num_classes)
    state = read_safetensors(data)
    check_state_dict(model, state, f"{architecture} with {num_classes} classes")
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)  # gig differentiates activations, never weights
    return model.to(device).eval()


class ModelCache:
    """Resident models keyed by (weights sha256, architecture, classes, device); the least recently used goes first.
    ``stats()`` counts hits, misses and evictions (the worker's metrics read them)."""

    def __init__(self, store: ArtifactStore, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.store = store
        self.capacity = capacity
        self._models: OrderedDict[tuple[str, str, int, str], nn.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, record: Mapping, device: str | torch.device = "cpu") -> nn.Module:
        """The model of a ModelRecord (``architecture``, ``num_classes``, ``weights_sha256``) on ``device``."""
        try:
            architecture, num_classes, sha = record["architecture"], record["num_classes"], record["weights_sha256"]
        except KeyError as exc:
            raise ValueError(f"model record lacks {exc.args[0]!r}") from exc
        key = (sha, architecture, num_classes, str(torch.device(device)))
        with self._lock:
            if key in self._models:
                self.hits += 1
                self._models.move_to_end(key)
                return self._models[key]
            self.misses += 1
            model = load_model(architecture, num_classes, self.store.read("weights", sha), device)
            self._models[key] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
                self.evictions += 1
            return model

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


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown if len(keys) <= _SHOWN else f"{shown} and {len(keys) - _SHOWN} more"
