"""gigaudit: the thin client of the gigaudit audit service (no torch).

The names below load on first use, so that torch-free helpers (``gigaudit.circuits``) import without grpc.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"AuditClient": "gigaudit.client", "GigauditError": "gigaudit.errors", "Policy": "gigaudit.policy",
            "PolicyResult": "gigaudit.policy", "evaluate_policy": "gigaudit.policy", "load_policy": "gigaudit.policy",
            "ConceptGraph": "gigaudit.results", "Exemplar": "gigaudit.results"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gigaudit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
