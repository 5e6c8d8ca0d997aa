"""gigaudit: the thin client of the gigaudit audit service (no torch).

The names below load on first use, so that torch-free helpers (``gigaudit.circuits``, ``gigaudit.report``) import
without grpc: ``pip install gigaudit[core]`` has no grpc, and ``AuditClient`` then says to install
``gigaudit[client]``.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"AuditClient": "gigaudit.client", "GigauditError": "gigaudit.errors", "Policy": "gigaudit.policy",
            "PolicyResult": "gigaudit.policy", "evaluate_policy": "gigaudit.policy", "load_policy": "gigaudit.policy",
            "ConceptGraph": "gigaudit.results", "Exemplar": "gigaudit.results"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gigaudit' has no attribute {name!r}")
    try:
        module = importlib.import_module(_EXPORTS[name])
    except ImportError as exc:
        from gigaudit.launcher import missing_client_module

        if missing_client_module(exc) is None:
            raise
        raise ModuleNotFoundError(f"gigaudit.{name} needs the gRPC client ({exc.name} is not installed): "
                                  f"pip install 'gigaudit[client]'", name=exc.name) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
