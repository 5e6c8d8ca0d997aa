"""Lasso solvers: the active set and FISTA against scikit-learn's sparse_encode, least squares, sparsity versus λ."""
import warnings

import pytest
import torch
from sklearn.decomposition import sparse_encode

from gig.concepts import cluster
from gig.concepts.decompose import (Dictionary, LassoSettings, active_set, fista, lasso, lasso_cd, lasso_objective,
                                    least_squares)


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
    assert LassoSettings().solver == "active_set"  # the default (issue 13)
    torch.testing.assert_close(lasso(x, d, 0.1, True), active_set(x, d, 0.1, True))
    torch.testing.assert_close(lasso(x, d, 0.1, True, LassoSettings(solver="fista")), fista(x, d, 0.1, True))
    for solver in (active_set, fista):
        objective = [float(lasso_objective(x, atoms, u, 0.1).sum()) for u in (cd, solver(x, d, 0.1, True))]
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


# ---------------------------------------------------------------- the active-set solver on concept-like atoms
def _concept_problem(c=16, k=128, n=300, seed=0, dtype=torch.float32):
    """Rows and concept vectors like real ones: non-negative PFVs mixed from a few directions, and bisecting
    k-means centroids of such PFVs as atoms (strongly correlated: cosines up to 0.99)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, c, generator=g).relu() * 2

    def draw(m):
        which = torch.randint(0, 6, (m, 2), generator=g)
        mix = torch.rand(m, 2, generator=g)
        noise = 0.3 * torch.randn(m, c, generator=g)
        return (mix[:, :1] * centres[which[:, 0]] + mix[:, 1:] * centres[which[:, 1]] + noise).relu()

    atoms = cluster(draw(max(4 * k, 400)), k, "bisecting_kmeans", seed)
    return draw(n).to(dtype), atoms.to(dtype)


def _lam(x, atoms, rel, nonneg):
    """``rel`` times the mean over rows of ``λ_max(x)`` (the smallest λ that zeroes a row's code)."""
    corr = x.double() @ atoms.double().T
    return rel * float((corr if nonneg else corr.abs()).amax(1).mean())


def _objective(x, atoms, coef, lam):
    return float(lasso_objective(x.double(), atoms.double(), coef.double(), lam).sum())


def _relative_gaps(x, atoms, coef, lam, nonneg):
    """Per-row duality gap over the objective (dual point: the residual scaled into the dual feasible set)."""
    x, atoms, coef = x.double(), atoms.double(), coef.double()
    residual = x - coef @ atoms
    corr = residual @ atoms.T
    top = corr.amax(1) if nonneg else corr.abs().amax(1)
    scale = torch.where(top > lam, lam / top, torch.ones_like(top))
    primal = 0.5 * residual.pow(2).sum(1) + lam * coef.abs().sum(1)
    dual = scale * (residual * x).sum(1) - 0.5 * scale.pow(2) * residual.pow(2).sum(1)
    return (primal - dual) / primal.clamp_min(1e-12)


@pytest.mark.parametrize("c,k", [(32, 16), (16, 128)])  # K < C and K ≫ C
@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("rel", [0.05, 0.3])
def test_active_set_matches_sklearn_on_concept_atoms(c, k, nonneg, rel):
    x, atoms = _concept_problem(c, k)
    lam = _lam(x, atoms, rel, nonneg)
    ours = active_set(x, Dictionary(atoms), lam, nonneg)
    ref = _sklearn(x, atoms, lam, nonneg)
    assert abs(_objective(x, atoms, ours, lam) - _objective(x, atoms, ref, lam)) / _objective(x, atoms, ref, lam) < 5e-3
    assert _relative_gaps(x, atoms, ours, lam, nonneg).max() < 1e-3  # every row is certified near-optimal
    assert ((ours != 0).sum(1) < k).all() and (ours != 0).any()  # sparse, not trivial
    if nonneg:
        assert (ours >= 0).all()


def test_active_set_uses_negative_coefficients_when_signed():
    x, atoms = _concept_problem(32, 16)
    ours = active_set(x, Dictionary(atoms), _lam(x, atoms, 0.05, False))
    assert (ours < 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_active_set_keeps_dtype_and_matches_sklearn(dtype):
    x, atoms = _concept_problem(16, 64, dtype=dtype)
    lam = _lam(x, atoms, 0.1, False)
    ours = active_set(x, Dictionary(atoms), lam)
    assert ours.dtype == dtype
    ref = _objective(x, atoms, _sklearn(x, atoms, lam, False), lam)
    assert abs(_objective(x, atoms, ours, lam) - ref) / ref < (1e-6 if dtype == torch.float64 else 1e-4)


def test_active_set_warm_start():
    x, atoms = _concept_problem(16, 128, n=120)
    d = Dictionary(atoms)
    lam = _lam(x, atoms, 0.05, True)
    solution = active_set(x, d, lam, True)
    one_round = LassoSettings(max_iter=1)
    warm, cold = active_set(x, d, lam, True, one_round, init=solution), active_set(x, d, lam, True, one_round)
    best = _objective(x, atoms, solution, lam)
    assert _objective(x, atoms, warm, lam) <= best * (1 + 1e-6)  # a solution stays a solution
    assert _objective(x, atoms, cold, lam) > best * (1 + 1e-4)  # while one round from zero is not enough
    perturbed = (solution + 0.05 * torch.rand_like(solution)).clamp_min(0)  # a dense, wrong start still converges
    assert _objective(x, atoms, active_set(x, d, lam, True, init=perturbed), lam) <= best * (1 + 1e-5)
    negative = active_set(x, d, lam, True, init=-solution)  # clipped to the feasible set
    assert (negative >= 0).all() and _objective(x, atoms, negative, lam) <= best * (1 + 1e-5)


@pytest.mark.parametrize("nonneg", [False, True])
def test_active_set_duplicate_and_near_duplicate_atoms(nonneg):
    x, atoms = _concept_problem(16, 48, n=200)
    g = torch.Generator().manual_seed(3)
    doubled = torch.cat([atoms, atoms[:10], atoms[10:20] + 1e-6 * torch.randn(10, 16, generator=g)])
    lam = _lam(x, atoms, 0.05, nonneg)
    ours = active_set(x, Dictionary(doubled), lam, nonneg)
    assert torch.isfinite(ours).all()
    ref = _objective(x, doubled, _sklearn(x, doubled, lam, nonneg), lam)
    assert abs(_objective(x, doubled, ours, lam) - ref) / ref < 5e-3
    # the same problem without the copies has the same optimum
    assert abs(_objective(x, doubled, ours, lam) - _objective(x, atoms, active_set(x, Dictionary(atoms), lam, nonneg),
                                                                  lam)) / ref < 1e-4


def test_active_set_zero_rows_and_large_lambda():
    x, atoms = _concept_problem(16, 64, n=50)
    x[::5] = 0
    d = Dictionary(atoms)
    coef = active_set(x, d, _lam(x, atoms, 0.1, False))
    assert (coef[::5] == 0).all() and (coef[1::5] != 0).any(1).all()
    lam_max = float((x @ atoms.T).abs().amax())
    assert (active_set(x, d, lam_max * 1.001) == 0).all()  # λ ≥ every row's λ_max: all codes are zero
    assert (active_set(x, d, lam_max * 0.9) != 0).any()


def test_active_set_chunking_and_max_iter():
    x, atoms = _concept_problem(16, 128, n=90)
    d = Dictionary(atoms)
    lam = _lam(x, atoms, 0.05, False)
    whole = active_set(x, d, lam)
    torch.testing.assert_close(active_set(x, d, lam, settings=LassoSettings(chunk_rows=7)), whole, atol=1e-5, rtol=1e-4)
    assert not torch.equal(active_set(x, d, lam, settings=LassoSettings(max_iter=1)), whole)  # max_iter is honoured


def test_active_set_large_dictionary_builds_blocks_from_atoms():
    # more atoms than the Gram is cached for: sub-blocks are built from V; same optimum as from the Gram
    from gig.concepts import active_set as module

    x, atoms = _concept_problem(8, 40, n=60)
    lam = _lam(x, atoms, 0.1, True)
    from_gram = module.solve(x, atoms, atoms @ atoms.T, lam, True, 1e-7, 100)
    from_atoms = module.solve(x, atoms, None, lam, True, 1e-7, 100)
    assert abs(_objective(x, atoms, from_gram, lam) - _objective(x, atoms, from_atoms, lam)) < 1e-5 * _objective(
        x, atoms, from_gram, lam)


@pytest.mark.parametrize("bad", [{"lam": -1.0}, {"lam": float("nan")}, {"init": torch.zeros(3, 5)},
                                 {"x": torch.zeros(4, 7)}, {"x": torch.full((4, 16), float("nan"))},
                                 {"init": torch.full((10, 32), float("inf"))}])
def test_active_set_bad_input(bad):
    x, atoms = _concept_problem(16, 32, n=10)
    args = {"x": x, "lam": 0.1, "init": None, **bad}
    with pytest.raises(ValueError):
        active_set(args["x"], Dictionary(atoms), args["lam"], init=args["init"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("nonneg", [False, True])
def test_active_set_on_cuda_matches_cpu(nonneg):
    x, atoms = _concept_problem(16, 128)
    lam = _lam(x, atoms, 0.05, nonneg)
    cpu = active_set(x, Dictionary(atoms), lam, nonneg)
    gpu = active_set(x.cuda(), Dictionary(atoms.cuda()), lam, nonneg)
    assert gpu.device.type == "cuda"
    reference = _objective(x, atoms, cpu, lam)
    assert abs(_objective(x, atoms, gpu.cpu(), lam) - reference) < 1e-4 * reference
