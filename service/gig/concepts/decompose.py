"""Decomposition of PFVs into concept coefficients: ``u = argmin ½‖x − Vᵀu‖² + λ‖u‖₁`` (optionally ``u ≥ 0``).

Rows of ``x`` are independent problems, solved together. ``λ = 0`` is least squares (the minimum-norm solution
when there are more atoms than channels). Otherwise one of three solvers of the same objective (scikit-learn's
``sparse_encode(..., alpha=λ)``, which divides both terms by ``C`` inside ``Lasso``):

- ``"active_set"`` (default): batched active-set search (:mod:`.active_set`): each row grows a small set of atoms
  from its residual's correlations and solves the sign-fixed sub-problem on it exactly by batched Cholesky, until
  its duality gap is below ``tol``. Any device; on real (strongly correlated) concept sets it is several times
  faster than scikit-learn's coordinate descent on the CPU.
- ``"fista"``: batched torch FISTA on the precomputed Gram ``G = V Vᵀ`` with gradient-based momentum restarts, run
  per row on a small working set of atoms (its support plus the worst violators of the optimality condition);
  rows leave the batch as they converge. Any device; slow on correlated atoms (small steps ``1/L``).
- ``"lasso_cd"``: scikit-learn's coordinate descent (``sparse_encode``, Gram precomputed), the CPU reference.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from sklearn.decomposition import sparse_encode
from sklearn.exceptions import ConvergenceWarning

from gig.concepts import active_set as _active_set

_CHECK_EVERY = 10  # FISTA iterations between convergence checks
_MAX_ROUNDS = 20  # working-set rounds; each adds the worst violators, so few are needed
_KKT_TOL = 1e-2  # a zero coefficient may exceed the threshold λ by this fraction of λ
def _default_chunk_rows(device: torch.device, k: int) -> int:
    """Rows per FISTA chunk: small on the CPU (cache), large on accelerators, where every iteration of a chunk
    costs a dozen kernel launches and small chunks leave the device launch-bound."""
    return _CPU_CHUNK_ROWS if device.type == "cpu" else max(1, _ACCELERATOR_CHUNK_ELEMENTS // k)


_CPU_CHUNK_ROWS = 8192
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 25  # coefficients per chunk (128 MiB in float32 per (N, K) tensor)
_SUB_GRAM_ELEMENTS = 1 << 25  # rows × size² per sub-problem batch (128 MiB in float32)
_CPU_CHUNK_ELEMENTS = 1 << 22  # active set on the CPU: coefficients per chunk (16 MiB in float32 per (N, K) tensor)
SOLVERS = ("active_set", "fista", "lasso_cd")


@dataclass(frozen=True)
class LassoSettings:
    """Solver settings stored with a concept set."""

    solver: str = "active_set"
    max_iter: int = 1000  # FISTA: iterations; active set: grow/solve rounds; lasso_cd: its max_iter
    tol: float = 1e-5  # FISTA: relative change; active set: relative duality gap (lasso_cd uses its own)
    chunk_rows: int | None = None  # FISTA and active set; None: a size that suits the device and K
    working_set: int = 32  # FISTA only: atoms per row iterated at once (grows when needed)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown Lasso solver {self.solver!r}; valid: {', '.join(SOLVERS)}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise ValueError(f"tol must be a positive number, not {self.tol!r}")
        for name in ("max_iter", "chunk_rows", "working_set"):
            value = getattr(self, name)
            if name == "chunk_rows" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")


class Dictionary:
    """Concept vectors ``V`` (``K × C``) with what the solvers reuse, computed once when first needed."""

    def __init__(self, atoms: torch.Tensor):
        if atoms.dim() != 2 or atoms.shape[0] == 0 or atoms.shape[1] == 0:
            raise ValueError(f"concept vectors must be a non-empty (K, C) matrix, not {tuple(atoms.shape)}")
        if not atoms.is_floating_point() or not torch.isfinite(atoms).all():
            raise ValueError("concept vectors must be finite floating-point values")
        self.atoms = atoms

    @cached_property
    def gram(self) -> torch.Tensor:
        """``G = V Vᵀ`` ``(K, K)``."""
        return self.atoms @ self.atoms.T

    @cached_property
    def lipschitz(self) -> float:
        """``L``: the largest eigenvalue of ``G``, the Lipschitz constant of the smooth part's gradient."""
        return float(torch.linalg.eigvalsh(self.gram.double())[-1].clamp_min(1e-12))

    @cached_property
    def pinv(self) -> torch.Tensor:
        """``pinv(Vᵀ)`` as ``(C, K)``: ``x @ pinv`` is the minimum-norm least-squares code."""
        return torch.linalg.pinv(self.atoms.double().T).T.to(self.atoms.dtype)

    @cached_property
    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Atoms and Gram as float64 NumPy arrays (for scikit-learn)."""
        atoms = self.atoms.detach().cpu().double()
        return atoms.numpy(), (atoms @ atoms.T).numpy()


def lasso_objective(x: torch.Tensor, atoms: torch.Tensor, coef: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-row ``½‖x − Vᵀu‖² + λ‖u‖₁`` for ``x`` ``(N, C)``, ``coef`` ``(N, K)``."""
    residual = x - coef @ atoms
    return 0.5 * residual.pow(2).sum(-1) + lam * coef.abs().sum(-1)


def least_squares(x: torch.Tensor, dictionary: Dictionary) -> torch.Tensor:
    """Minimum-norm least-squares coefficients ``(N, K)`` of rows ``x`` ``(N, C)``."""
    return x @ dictionary.pinv


def lasso(
    x: torch.Tensor,
    dictionary: Dictionary,
    lam: float,
    nonneg: bool = False,
    settings: LassoSettings = LassoSettings(),
    init: torch.Tensor | None = None,
    progress=None,
) -> torch.Tensor:
    """Lasso coefficients ``(N, K)`` of rows ``x`` ``(N, C)`` by the solver ``settings.solver`` names;
    ``progress(rows_done, n_rows)`` after every chunk of rows (once, at the end, for ``lasso_cd``)."""
    solve = {"active_set": active_set, "fista": fista, "lasso_cd": lasso_cd}[settings.solver]
    if solve is lasso_cd:
        coef = lasso_cd(x, dictionary, lam, nonneg, settings, init)
        if progress is not None:
            progress(x.shape[0], x.shape[0])
        return coef
    return solve(x, dictionary, lam, nonneg, settings, init, progress=progress)


def active_set(
    x: torch.Tensor,
    dictionary: Dictionary,
    lam: float,
    nonneg: bool = False,
    settings: LassoSettings = LassoSettings(),
    init: torch.Tensor | None = None,
    progress=None,
) -> torch.Tensor:
    """Lasso coefficients ``(N, K)`` of rows ``x`` ``(N, C)`` by batched active-set search, chunked over rows
    (``progress(rows_done, n_rows)`` after each chunk).

    Every row ends with a relative duality gap of at most ``settings.tol``, or with no atom violating the
    optimality condition, or after ``settings.max_iter`` rounds. ``init`` ``(N, K)`` warm-starts the search (its
    support is the first active set; negative entries are clipped when ``nonneg``).
    """
    k = dictionary.atoms.shape[0]
    _check_problem(x, dictionary, lam, init)
    gram = dictionary.gram if k <= _active_set.GRAM_ATOMS else None  # larger K: sub-blocks built from V
    out = torch.empty(x.shape[0], k, dtype=x.dtype, device=x.device)
    if x.device.type == "cpu":
        default_chunk = min(_CPU_CHUNK_ROWS, max(64, _CPU_CHUNK_ELEMENTS // k))
    else:
        default_chunk = max(1, _ACCELERATOR_CHUNK_ELEMENTS // k)
    chunk = settings.chunk_rows or default_chunk
    atoms = dictionary.atoms.to(x.dtype)
    gram = None if gram is None else gram.to(x.dtype)
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, start + chunk)
        out[rows] = _active_set.solve(x[rows], atoms, gram, float(lam), nonneg, settings.tol, settings.max_iter,
                                      None if init is None else init[rows])
        if progress is not None:
            progress(min(start + chunk, x.shape[0]), x.shape[0])
    return out


def _check_problem(x: torch.Tensor, dictionary: Dictionary, lam: float, init: torch.Tensor | None) -> None:
    k, c = dictionary.atoms.shape
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < float("inf"):
        raise ValueError(f"lam must be a finite non-negative number, not {lam!r}")
    if x.dim() != 2 or x.shape[1] != c:
        raise ValueError(f"rows must have shape (N, {c}), not {tuple(x.shape)}")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError("rows must be finite floating-point values")
    if init is not None and tuple(init.shape) != (x.shape[0], k):
        raise ValueError(f"init must have shape {(x.shape[0], k)}, not {tuple(init.shape)}")
    if init is not None and not torch.isfinite(init).all():
        raise ValueError("init must be finite")


def lasso_cd(
    x: torch.Tensor,
    dictionary: Dictionary,
    lam: float,
    nonneg: bool = False,
    settings: LassoSettings = LassoSettings(),
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lasso coefficients ``(N, K)`` by scikit-learn's coordinate descent (float64, on the CPU)."""
    atoms, gram = dictionary.numpy
    start = None if init is None else init.detach().cpu().double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # its duality-gap tolerance (1e-8) is fixed and strict
        code = sparse_encode(x.detach().cpu().double().numpy(), atoms, gram=gram, algorithm="lasso_cd", alpha=lam,
                             init=start, max_iter=settings.max_iter, positive=nonneg)
    return torch.from_numpy(code).to(x.device, x.dtype)


def fista(
    x: torch.Tensor,
    dictionary: Dictionary,
    lam: float,
    nonneg: bool = False,
    settings: LassoSettings = LassoSettings(),
    init: torch.Tensor | None = None,
    progress=None,
) -> torch.Tensor:
    """Lasso coefficients ``(N, K)`` of rows ``x`` ``(N, C)`` by batched working-set FISTA, chunked over rows
    (``progress(rows_done, n_rows)`` after each chunk).

    Each row iterates on its own ``working_set`` atoms (its non-zero coefficients, then the atoms that violate the
    optimality condition ``|∇_j| ≤ λ`` most), until no atom outside violates it by more than ``λ / 100``; the set
    doubles when a row's support fills it. With ``K ≤ 2 · working_set`` it is plain FISTA on all atoms.
    """
    out = torch.empty(x.shape[0], dictionary.atoms.shape[0], dtype=x.dtype, device=x.device)
    chunk = settings.chunk_rows or _default_chunk_rows(x.device, dictionary.atoms.shape[0])
    for start in range(0, x.shape[0], chunk):
        rows = slice(start, start + chunk)
        out[rows] = _working_set(x[rows], dictionary, lam, nonneg, settings, None if init is None else init[rows])
        if progress is not None:
            progress(min(start + chunk, x.shape[0]), x.shape[0])
    return out


def _working_set(x, dictionary: Dictionary, lam, nonneg, settings: LassoSettings, init):
    atoms, gram = dictionary.atoms, dictionary.gram
    linear = x @ atoms.T  # V x, (N, K)
    k = gram.shape[0]
    coef = torch.zeros_like(linear) if init is None else init.clone()
    size = settings.working_set
    if k <= 2 * size:
        return _fista(gram, linear, torch.full_like(linear[:, :1], dictionary.lipschitz), lam, nonneg, settings, coef)
    pending = torch.arange(x.shape[0], device=x.device)  # rows not yet known to be optimal
    for round_ in range(_MAX_ROUNDS):
        rows_coef = coef[pending]
        grad = (rows_coef @ atoms - x[pending]) @ atoms.T  # = G u − V x, in O(C·K) per row instead of O(K²)
        excess = _kkt_excess(grad, lam, nonneg).masked_fill(rows_coef != 0, -torch.inf)
        unsettled = excess.amax(1) > _KKT_TOL * lam
        if round_ == 0:  # a warm start's non-zero coefficients are not known to be optimal yet
            unsettled |= (rows_coef != 0).any(1)
        pending, rows_coef, excess = pending[unsettled], rows_coef[unsettled], excess[unsettled]
        if not pending.numel():
            break
        while int((rows_coef != 0).sum(1).max()) >= size and size < k:
            size = min(2 * size, k)
        priority = excess.masked_fill(rows_coef != 0, torch.inf)
        chosen = priority.topk(size, dim=1).indices  # (n, size): the support first, then the worst violators
        for part in torch.split(torch.arange(pending.numel(), device=x.device), max(1, _SUB_GRAM_ELEMENTS // size**2)):
            idx, rows = chosen[part], pending[part]
            sub_gram = gram[idx.unsqueeze(2), idx.unsqueeze(1)]  # (n, size, size)
            # A safe step per row: the Gershgorin bound of its sub-Gram, never above the full Gram's L.
            lipschitz = sub_gram.abs().sum(2).amax(1, keepdim=True).clamp_max(dictionary.lipschitz)
            sub = _fista(sub_gram, linear[rows].gather(1, idx), lipschitz, lam, nonneg, settings,
                         coef[rows].gather(1, idx))
            coef[rows] = torch.zeros_like(coef[rows]).scatter_(1, idx, sub)
        if size == k:
            break  # every atom was in the set: the rows are solved
    return coef


def _kkt_excess(grad: torch.Tensor, lam: float, nonneg: bool) -> torch.Tensor:
    """How far a zero coefficient's gradient exceeds the ℓ1 threshold (positive: it should become non-zero)."""
    return (-grad if nonneg else grad.abs()) - lam


def _fista(gram, linear, lipschitz, lam, nonneg, settings: LassoSettings, coef):
    """FISTA on ``½ uᵀGu − uᵀb + λ‖u‖₁`` per row; ``gram`` ``(K, K)`` shared or ``(N, K, K)`` per row,
    ``lipschitz`` ``(N, 1)``; rows retire once their relative change falls below ``tol``."""
    step = 1.0 / lipschitz
    out = coef.clone()
    active = torch.arange(linear.shape[0], device=linear.device)  # rows still iterating
    point = coef.clone()
    momentum = torch.ones_like(step)
    for iteration in range(1, settings.max_iter + 1):
        product = point @ gram if gram.dim() == 2 else torch.bmm(point.unsqueeze(1), gram).squeeze(1)
        z = point - step * (product - linear)
        threshold = lam * step
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
                active, coef, point, momentum, linear, step = (
                    t[keep] for t in (active, coef, point, momentum, linear, step))
                if gram.dim() == 3:
                    gram = gram[keep]
                if active.numel() == 0:
                    break
    out[active] = coef
    return out
