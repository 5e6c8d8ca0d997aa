"""Lasso solvers: FISTA against scikit-learn's sparse_encode, least squares, sparsity versus λ."""
import warnings

import pytest
import torch
from sklearn.decomposition import sparse_encode

from gig.concepts.decompose import Dictionary, LassoSettings, fista, lasso, lasso_cd, lasso_objective, least_squares


def _problem(c=16, k=96, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(k, c, generator=g)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    sparse = torch.rand(n, k, generator=g).pow(2) * (torch.rand(n, k, generator=g) < 0.05)
    x = sparse @ atoms + 0.05 * torch.randn(n, c, generator=g)
    return x, atoms


def _sklearn(x, atoms, lam, positive):
    a = atoms.double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lasso_cd warns about tiny duality gaps
        code = sparse_encode(x.double().numpy(), a.numpy(), algorithm="lasso_cd", alpha=lam,
                             gram=(a @ a.T).numpy(), positive=positive)
    return torch.from_numpy(code)


@pytest.mark.parametrize("working_set", [4, 16, 64])  # grows from 4; sub-problems of 16; plain FISTA (K ≤ 128)
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("lam", [0.02, 0.2])
def test_fista_matches_sklearn_objective(lam, nonneg, working_set):
    x, atoms = _problem()
    ours = fista(x, Dictionary(atoms), lam, nonneg, LassoSettings(working_set=working_set))
    ref = _sklearn(x, atoms, lam, nonneg)
    obj = lasso_objective(x.double(), atoms.double(), ours.double(), lam).sum()
    obj_ref = lasso_objective(x.double(), atoms.double(), ref, lam).sum()
    assert abs(obj - obj_ref) / obj_ref < 0.01
    if nonneg:
        assert (ours >= 0).all()
    else:
        assert (ours < 0).any()  # the unconstrained problem does use negative coefficients here


def test_fista_chunks_and_warm_start_agree():
    x, atoms = _problem(n=50)
    d = Dictionary(atoms)
    whole = fista(x, d, 0.1)
    chunked = fista(x, d, 0.1, settings=LassoSettings(chunk_rows=7))
    assert not torch.equal(whole, fista(x, d, 0.1, settings=LassoSettings(max_iter=3)))  # max_iter is honoured
    torch.testing.assert_close(whole, chunked, atol=1e-4, rtol=1e-3)
    warm = fista(x, d, 0.1, settings=LassoSettings(max_iter=5), init=whole)
    cold = fista(x, d, 0.1, settings=LassoSettings(max_iter=5))
    ref = lasso_objective(x, atoms, whole, 0.1).sum()
    assert lasso_objective(x, atoms, warm, 0.1).sum() - ref < lasso_objective(x, atoms, cold, 0.1).sum() - ref


def test_least_squares_is_exact_when_complete_and_minimum_norm():
    g = torch.Generator().manual_seed(1)
    atoms = torch.randn(24, 8, generator=g, dtype=torch.float64)  # K > C, full rank
    x = torch.randn(30, 8, generator=g, dtype=torch.float64)
    coef = least_squares(x, Dictionary(atoms))
    torch.testing.assert_close(coef @ atoms, x)
    # minimum norm: no component in the null space of Vᵀ
    null = torch.linalg.svd(atoms.T).Vh[8:]  # rows spanning null(Vᵀ)
    assert (coef @ null.T).abs().max() < 1e-9


def test_sparsity_grows_with_lambda():
    x, atoms = _problem(n=80)
    d = Dictionary(atoms)
    l0 = [float((fista(x, d, lam) != 0).float().mean()) for lam in (0.01, 0.05, 0.2, 0.8)]
    assert all(a > b for a, b in zip(l0, l0[1:])), l0


def test_solvers_agree():
    x, atoms = _problem(n=60)
    d = Dictionary(atoms)
    cd = lasso_cd(x, d, 0.1, nonneg=True)
    assert cd.dtype == x.dtype and (cd >= 0).all()
    torch.testing.assert_close(lasso(x, d, 0.1, True, LassoSettings(solver="lasso_cd")), cd)
    torch.testing.assert_close(lasso(x, d, 0.1, True), fista(x, d, 0.1, True))
    objective = [float(lasso_objective(x, atoms, u, 0.1).sum()) for u in (cd, fista(x, d, 0.1, True))]
    assert abs(objective[0] - objective[1]) / objective[0] < 0.01
    warm = lasso_cd(x, d, 0.1, init=cd)
    assert float(lasso_objective(x, atoms, warm, 0.1).sum()) <= objective[0] * 1.0001


@pytest.mark.parametrize("kwargs", [{"solver": "admm"}, {"working_set": 0}, {"max_iter": 0}, {"tol": 0.0}, {"chunk_rows": -1}, {"max_iter": 2.5}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        LassoSettings(**kwargs)


@pytest.mark.parametrize("atoms", [torch.zeros(0, 3), torch.zeros(3), torch.tensor([[1.0, float("nan")]]),
                                   torch.ones(2, 2, dtype=torch.long)])
def test_bad_dictionary(atoms):
    with pytest.raises(ValueError):
        Dictionary(atoms)
