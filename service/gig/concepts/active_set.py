"""Batched active-set Lasso: ``u = argmin ½‖x − Vᵀu‖² + λ‖u‖₁`` (optionally ``u ≥ 0``) for many rows at once.

Each row grows its own small set of atoms ``A`` and solves the sub-problem on it exactly, in the spirit of
feature-sign search (Lee et al. 2007) and Lawson–Hanson NNLS:

1. **Grow.** From the residual's correlations ``c = V (x − Vᵀu)`` (at ``u = 0`` simply ``Vx``), atoms outside
   the support whose ``|c_j|`` (``c_j`` when non-negative) exceeds ``λ`` are the violators of the optimality
   condition; the worst few join ``A`` with the sign ``θ_j = sign(c_j)``.
2. **Solve.** With the signs fixed the sub-problem is a linear system, ``G_AA u_A = b_A − λ θ_A`` (``G = V Vᵀ``,
   ``b = Vx``), solved by one batched Cholesky factorisation of the padded ``(n, s, s)`` blocks (float64, with a
   tiny ridge that keeps near-duplicate atoms solvable). A newly added atom whose solution has the wrong sign
   leaves ``A``; otherwise the row steps from its current code towards the solution and stops where the first
   coefficient reaches zero, which leaves ``A`` (the objective falls at every step). A row whose solution keeps
   every sign is optimal on ``A``.
3. **Check.** A row retires when its duality gap (dual point: the residual scaled into the dual feasible set) is
   at most ``tol`` times its objective, or when no atom violates the optimality condition.

Atoms enter a few at a time (doubling while the support grows), so rows need few rounds, each one GEMM against
all atoms plus small batched solves; rows leave the batch as they finish. Every step is a batched tensor operation
on whatever device the inputs are on, with a few host synchronisations per step and no per-row Python loop.
"""
from __future__ import annotations

import torch

_MIN_ADD = 2  # violators a row adds per round at first; then as many as its support holds
_MAX_INNER = 64  # solve/step iterations per round (each removes an atom or ends the row's round)
_RIDGE = 1e-11  # relative ridge of the float64 sub-systems; raised where a factorisation fails
_BLOCK_ELEMENTS = 1 << 24  # rows × s × max(s, C) per batch of sub-problems
_DENSE_FACTOR = 16  # Vᵀu by a dense GEMM while K ≤ this × the set size (cheaper than gathering atoms)
GRAM_ATOMS = 4096  # up to this many atoms the sub-blocks are gathered from the cached Gram, else built from V


def solve(x: torch.Tensor, atoms: torch.Tensor, gram: torch.Tensor | None, lam: float, nonneg: bool,
          tol: float, max_rounds: int, init: torch.Tensor | None = None) -> torch.Tensor:
    """Lasso coefficients ``(n, K)`` of the rows ``x`` ``(n, C)`` against ``atoms`` ``(K, C)``.

    ``gram``: ``atoms @ atoms.T`` when available (used for the sub-blocks), else ``None``; ``tol``: relative
    duality gap at which a row retires; ``max_rounds``: grow/solve rounds at most; ``init``: a warm start.
    """
    n, k = x.shape[0], atoms.shape[0]
    coef = torch.zeros(n, k, dtype=x.dtype, device=x.device) if init is None else init.to(x.dtype).clone()
    if nonneg:
        coef.clamp_(min=0)
    residual = x.clone() if init is None else x - coef @ atoms  # kept up to date from the sparse codes
    pending = torch.arange(n, device=x.device)
    # whether a row's code is optimal on its own support (a warm start's is not known to be)
    solved = (coef == 0).all(1)
    add = torch.full((n,), _MIN_ADD, dtype=torch.long, device=x.device)
    for _ in range(max_rounds):
        rows_coef, rows_residual = coef[pending], residual[pending]
        corr = rows_residual @ atoms.T  # = b − G u, the negative gradient (one GEMM per round)
        violation = (corr if nonneg else corr.abs()) - lam
        support = rows_coef != 0
        violation.masked_fill_(support, -torch.inf)
        n_violators = (violation > 0).sum(1)
        done = (n_violators == 0) & solved[pending]
        done |= _gap_closed(rows_residual, corr, rows_coef, lam, nonneg, tol)
        if bool(done.all()):
            break
        keep = ~done
        pending, rows_coef, corr, violation, support = (
            t[keep] for t in (pending, rows_coef, corr, violation, support))
        n_violators, nnz, rows_add = n_violators[keep], support.sum(1), add[pending]
        size = nnz + torch.minimum(rows_add, n_violators)
        width = int(size.max())
        priority = violation.masked_fill(violation <= 0, -torch.inf).masked_fill(support, torch.inf)
        idx = priority.topk(width, dim=1).indices  # support first, then the worst violators
        valid = torch.arange(width, device=x.device) < size.unsqueeze(1)
        values = rows_coef.gather(1, idx)
        block_corr = corr.gather(1, idx)
        sign = torch.where(values != 0, values.sign(), block_corr.sign())
        new_values, grew, finished = _solve_blocks(atoms, gram, block_corr, idx, valid, values, sign, lam)
        rows_coef = torch.zeros_like(rows_coef).scatter_(1, idx, new_values)
        coef[pending] = rows_coef
        # the new residual: a dense GEMM when K is small, else from the few atoms each row uses
        code = rows_coef @ atoms if k <= _DENSE_FACTOR * width else _combine(new_values, idx, atoms)
        residual[pending] = x[pending] - code
        # A row whose new atoms were all rejected tries its single worst violator next (that one always enters:
        # at a sub-problem optimum its solution has the violation's sign); others add as many as they hold. A
        # row that rejects even that one is optimal up to rounding and retires.
        stuck = (rows_add == 1) & ~grew & solved[pending]  # (the premise: it started at its set's optimum)
        solved[pending] = finished
        add[pending] = torch.where(grew, torch.clamp(2 * nnz, min=_MIN_ADD), torch.ones_like(nnz))
        pending = pending[~stuck]
        if pending.numel() == 0:
            break
    return coef


def _combine(values: torch.Tensor, idx: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """``Σ_j values_j · V[idx_j]`` per row ``(n, C)``, in batches of at most ``_BLOCK_ELEMENTS`` gathered entries."""
    n, width = idx.shape
    out = torch.empty(n, atoms.shape[1], dtype=atoms.dtype, device=atoms.device)
    for part in torch.split(torch.arange(n, device=idx.device), max(1, _BLOCK_ELEMENTS // (width * atoms.shape[1]))):
        out[part] = (values[part].unsqueeze(1) @ atoms[idx[part]]).squeeze(1)
    return out


def _gap_closed(residual, corr, coef, lam, nonneg, tol) -> torch.Tensor:
    """Rows whose duality gap is at most ``tol`` × their objective. With ``s = min(1, λ / max_j c_j)`` and
    ``q = uᵀc`` the gap ``P(u) − D(s·r)`` is ``½(1 − s)²‖r‖² + λ‖u‖₁ − s·q``: no cancellation of large terms."""
    r2 = residual.pow(2).sum(1)
    l1 = coef.abs().sum(1)
    top = corr.amax(1) if nonneg else corr.abs().amax(1)
    scale = torch.where(top > lam, lam / top.clamp_min(torch.finfo(top.dtype).tiny), torch.ones_like(top))
    gap = 0.5 * (1 - scale).pow(2) * r2 + lam * l1 - scale * (coef * corr).sum(1)
    return gap <= tol * (0.5 * r2 + lam * l1)


def _solve_blocks(atoms, gram, corr, idx, valid, values, sign, lam):
    """Solve every row's sub-problem on its atoms ``idx`` ``(n, s)`` (``corr``: the current correlations there,
    so that ``(Vx)_A = corr_A + G_AA u_A``), in batches that fit the memory budget. Returns the new values
    ``(n, s)``, whether each row kept at least one of its new atoms and whether it ended at the optimum of its
    final set."""
    n, width = idx.shape
    per_batch = max(1, _BLOCK_ELEMENTS // (width * (width if gram is not None else max(width, atoms.shape[1]))))
    out = torch.empty_like(values, dtype=torch.float64)
    grew = torch.empty(n, dtype=torch.bool, device=values.device)
    finished = torch.empty_like(grew)
    for part in torch.split(torch.arange(n, device=idx.device), per_batch):
        block_idx = idx[part]
        if gram is not None:
            block = gram[block_idx.unsqueeze(2), block_idx.unsqueeze(1)]
        else:
            chosen = atoms[block_idx]  # (p, s, C)
            block = chosen @ chosen.transpose(1, 2)
        block, current = block.double(), values[part].double()
        b = corr[part].double() + (block @ current.unsqueeze(2)).squeeze(2)
        out[part], grew[part], finished[part] = _fixed_sign_steps(block, b, current, sign[part].double(),
                                                                  valid[part], lam)
    return out.to(values.dtype), grew, finished


def _fixed_sign_steps(gram, b, values, sign, valid, lam):
    """Feature-sign iterations on padded blocks: ``gram`` ``(n, s, s)``, ``b`` ``(n, s)``, current ``values``,
    signs and ``valid`` mask. Returns the final values, whether any new atom was kept and whether the row ended at
    the optimum of its final set (rather than at the iteration cap)."""
    n, width = values.shape
    eye = torch.eye(width, dtype=gram.dtype, device=gram.device)
    ridge = _RIDGE * gram.diagonal(dim1=1, dim2=2).amax(1).clamp_min(1e-300)
    new = valid & (values == 0)
    result, active = values.clone(), torch.arange(n, device=values.device)
    optimal = torch.zeros(n, dtype=torch.bool, device=values.device)
    for _ in range(_MAX_INNER):
        pair = valid.unsqueeze(2) & valid.unsqueeze(1)
        system = torch.where(pair, gram, eye) + ridge.view(-1, 1, 1) * eye
        factor, info = torch.linalg.cholesky_ex(system)
        for _ in range(6):  # near-singular: raise the ridge of those rows
            if not bool((info > 0).any()):
                break
            ridge = torch.where(info > 0, ridge * 1e3, ridge)
            system = torch.where(pair, gram, eye) + ridge.view(-1, 1, 1) * eye
            factor, info = torch.linalg.cholesky_ex(system)
        rhs = torch.where(valid, b - lam * sign, torch.zeros_like(b))
        target = torch.cholesky_solve(rhs.unsqueeze(2), factor).squeeze(2)
        at_zero = values == 0
        wrong = valid & (target * sign <= 0)
        rejected = wrong & at_zero  # new atoms pointing the wrong way leave without a step
        crossing = wrong & ~at_zero
        reject_rows = rejected.any(1)
        step = torch.where(crossing, values / (values - target), torch.full_like(values, torch.inf))
        t = step.amin(1).clamp(max=1.0)
        t = torch.where(reject_rows, torch.zeros_like(t), t)
        moved = values + t.unsqueeze(1) * (target - values)
        hit = crossing & (step <= t.unsqueeze(1)) & ~reject_rows.unsqueeze(1)
        values = torch.where(hit | ~valid, torch.zeros_like(moved), moved)
        valid = valid & ~hit & ~rejected
        finished = ~reject_rows & ~crossing.any(1)
        if bool(finished.any()):
            result[active[finished]] = values[finished]
            optimal[active[finished]] = True
            keep = ~finished
            active, values, valid, sign, gram, b, ridge = (
                t_[keep] for t_ in (active, values, valid, sign, gram, b, ridge))
            if active.numel() == 0:
                break
    result[active] = values
    grew = (new & (result != 0)).any(1)
    return result, grew, optimal
