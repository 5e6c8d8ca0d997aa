"""Decomposition of PFVs into concept coefficients: ``u = argmin ½‖x − Vᵀu‖² + λ‖u‖₁`` (optionally ``u ≥ 0``).

Rows of ``x`` are independent problems, solved together. ``λ = 0`` is least squares (the minimum-norm solution
when there are more atoms than channels); otherwise a batched FISTA on the precomputed Gram ``G = V Vᵀ`` with
step ``1/L`` (``L`` the largest eigenvalue of ``G``) and gradient-based momentum restarts; each row stops
(and leaves the working set) once its relative change falls below ``tol``. The objective is the one of scikit-learn's
``sparse_encode(..., alpha=λ)`` (which divides both terms by ``C`` inside ``Lasso``), so the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_CHECK_EVERY = 10  # iterations between convergence checks


@dataclass(frozen=True)
class LassoSettings:
    """Solver settings stored with a concept set."""

    max_iter: int = 1000
    tol: float = 1e-5
    chunk_rows: int = 8192

    def __post_init__(self):
        if not (isinstance(self.max_iter, int) and self.max_iter > 0):
            raise ValueError(f"max_iter must be a positive int, not {self.max_iter!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, not {self.tol!r}")
        if not (isinstance(self.chunk_rows, int) and self.chunk_rows > 0):
            raise ValueError(f"chunk_rows must be a positive int, not {self.chunk_rows!r}")


class Dictionary:
    """Concept vectors ``V`` (``K × C``) with what the solvers reuse: the Gram matrix, ``L`` and ``pinv(Vᵀ)``."""

    def __init__(self, atoms: torch.Tensor):
        if atoms.dim() != 2 or atoms.shape[0] == 0 or atoms.shape[1] == 0:
            raise ValueError(f"concept vectors must be a non-empty (K, C) matrix, not {tuple(atoms.shape)}")
        if not atoms.is_floating_point() or not torch.isfinite(atoms).all():
            raise ValueError("concept vectors must be finite floating-point values")
        self.atoms = atoms
        self.gram = atoms @ atoms.T
        self.lipschitz = float(torch.linalg.eigvalsh(self.gram.double())[-1].clamp_min(1e-12))
        self._pinv: torch.Tensor | None = None

    @property
    def pinv(self) -> torch.Tensor:
        """``pinv(Vᵀ)`` as ``(C, K)``: ``x @ pinv`` is the minimum-norm least-squares code."""
        if self._pinv is None:
            self._pinv = torch.linalg.pinv(self.atoms.double().T).T.to(self.atoms.dtype)
        return self._pinv


def lasso_objective(x: torch.Tensor, atoms: torch.Tensor, coef: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-row ``½‖x − Vᵀu‖² + λ‖u‖₁`` for ``x`` ``(N, C)``, ``coef`` ``(N, K)``."""
    residual = x - coef @ atoms
    return 0.5 * residual.pow(2).sum(-1) + lam * coef.abs().sum(-1)


def least_squares(x: torch.Tensor, dictionary: Dictionary) -> torch.Tensor:
    """Minimum-norm least-squares coefficients ``(N, K)`` of rows ``x`` ``(N, C)``."""
    return x @ dictionary.pinv


def fista(
    x: torch.Tensor,
    dictionary: Dictionary,
    lam: float,
    nonneg: bool = False,
    settings: LassoSettings = LassoSettings(),
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lasso coefficients ``(N, K)`` of rows ``x`` ``(N, C)`` by batched FISTA, chunked over rows."""
    out = torch.empty(x.shape[0], dictionary.atoms.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], settings.chunk_rows):
        rows = slice(start, start + settings.chunk_rows)
        out[rows] = _fista_chunk(x[rows], dictionary, lam, nonneg, settings, None if init is None else init[rows])
    return out


def _fista_chunk(x, dictionary: Dictionary, lam, nonneg, settings: LassoSettings, init):
    gram, step = dictionary.gram, 1.0 / dictionary.lipschitz
    threshold = lam * step
    linear = x @ dictionary.atoms.T  # V x, (N, K)
    out = torch.zeros_like(linear) if init is None else init.clone()
    active = torch.arange(x.shape[0], device=x.device)  # rows still iterating
    coef, point = out.clone(), out.clone()
    momentum = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    for iteration in range(1, settings.max_iter + 1):
        z = point - step * (point @ gram - linear)
        new = (z - threshold).clamp_min(0) if nonneg else torch.sign(z) * (z.abs() - threshold).clamp_min(0)
        change = new - coef
        # Restart the momentum of rows whose step goes against it (O'Donoghue & Candès 2015).
        restart = ((point - new) * change).sum(-1, keepdim=True) > 0
        momentum = torch.where(restart, torch.ones_like(momentum), momentum)
        next_momentum = (1 + torch.sqrt(1 + 4 * momentum**2)) / 2
        point = new + ((momentum - 1) / next_momentum) * change
        momentum, coef = next_momentum, new
        if iteration % _CHECK_EVERY == 0:  # retire converged rows (few device syncs)
            done = change.norm(dim=-1) < settings.tol * new.norm(dim=-1).clamp_min(1e-12)
            if done.any():
                out[active[done]] = coef[done]
                keep = ~done
                active, coef, point, momentum, linear = (t[keep] for t in (active, coef, point, momentum, linear))
                if active.numel() == 0:
                    break
    out[active] = coef
    return out
