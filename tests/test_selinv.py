"""Sparse LDL' with a cached symbolic analysis, selected inversion and the "ldl" back end."""

import numpy as np
import pytest
import scipy.sparse as sp

from mixedblup import selinv as S
from mixedblup._blas import blas_threads
from mixedblup.factor import factorize


def _spd(n, density, seed):
    A = sp.random(n, n, density=density, random_state=seed)
    return sp.csc_matrix(A + A.T + sp.identity(n) * (2 + n * density * 2))


def _pattern_pairs(F):
    sym = F.sym
    n1 = sym.n1
    L = sp.csc_matrix((np.ones(sym.Lp[n1]), F.Li, sym.Lp[: n1 + 1]), shape=(sym.n, n1)).tocoo()
    tail = sym.perm[n1:]
    ii, jj = np.meshgrid(tail, tail)
    rows = np.concatenate([sym.perm[L.row], ii.ravel(), np.arange(sym.n)])
    cols = np.concatenate([sym.perm[L.col], jj.ravel(), np.arange(sym.n)])
    return rows, cols


@pytest.mark.parametrize("n1", [None, 0, 1, 40, 119, 120])
def test_factor_solve_logdet_and_selected_inverse_equal_dense(n1):
    A = _spd(120, 0.04, 3)
    dense = A.toarray()
    inv = np.linalg.inv(dense)
    F = S.LDLFactor(A, S.symbolic(A, n1=n1))
    assert F.ok
    assert F.logdet() == pytest.approx(np.linalg.slogdet(dense)[1], rel=1e-12)
    b = np.random.default_rng(0).normal(size=(120, 5))
    np.testing.assert_allclose(F.solve(b), inv @ b, atol=1e-12)
    np.testing.assert_allclose(F.solve(b[:, 0]), inv @ b[:, 0], atol=1e-12)
    rows, cols = _pattern_pairs(F)
    np.testing.assert_allclose(F.inverse_entries(rows, cols), inv[rows, cols], atol=1e-13)


def test_pure_python_kernels_match_compiled():
    """MIXEDBLUP_NO_NUMBA semantics: the kernels' .py_func give the same numbers."""
    A = _spd(40, 0.08, 5)
    sym = S.symbolic(A, n1=30)
    py = lambda f: getattr(f, "py_func", f)  # noqa: E731
    perm = py(S._amd_kernel)
    pat = sp.csc_matrix((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)
    order = perm(40, pat.indptr.astype(np.int64), pat.indices.astype(np.int64), 100)
    assert sorted(order) == list(range(40))
    Ux, ok = py(S._scatter_upper)(40, A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data,
                                  sym.pinv, sym.Up, sym.Ui)
    assert ok
    Li, Lx, D, Sd, ok = py(S.ldl_numeric)(40, 30, sym.Up, sym.Ui, Ux, sym.Lp, sym.parent)
    F = S.LDLFactor(A, sym)
    np.testing.assert_allclose(Lx, F.Lx)
    np.testing.assert_allclose(D, F.D)
    Z22 = np.linalg.inv(Sd)
    Zd, Zx = py(S.selected_inverse)(40, 30, sym.Lp, Li, Lx, D, Z22)
    Zd2, Zx2, _ = F.selected()
    np.testing.assert_allclose(Zd, Zd2, rtol=1e-10)
    np.testing.assert_allclose(Zx, Zx2, rtol=1e-10, atol=1e-14)
    B = np.ascontiguousarray(np.eye(40)[sym.perm][:, :3])
    py(S._forward)(30, sym.Lp, Li, Lx, D, B)
    B[30:] = np.linalg.solve(Sd, B[30:])
    py(S._backward)(30, sym.Lp, Li, Lx, B)
    out = np.empty_like(B)
    out[sym.perm] = B
    np.testing.assert_allclose(out, np.linalg.inv(A.toarray())[:, :3], atol=1e-12)


def test_amd_fill_is_reasonable():
    # a 2-D grid Laplacian: natural order fills O(n^1.5); minimum degree much less
    m = 30
    T = sp.diags([-1, 2.5, -1], [-1, 0, 1], shape=(m, m))
    A = sp.csc_matrix(sp.kron(sp.identity(m), T) + sp.kron(T, sp.identity(m)))
    amd = S.symbolic(A)
    natural = S.symbolic(A, perm=np.arange(m * m))
    assert amd.nnz < 0.6 * natural.nnz


def test_template_subset_pattern_and_outside_pattern():
    A = _spd(60, 0.05, 7)
    sym = S.symbolic(A)
    B = A.copy().tolil()
    r, c = A.nonzero()
    off = np.nonzero(r != c)[0][0]
    B[r[off], c[off]] = 0.0
    B[c[off], r[off]] = 0.0
    B = sp.csc_matrix(B)
    B.eliminate_zeros()
    F = S.LDLFactor(B, sym)  # a subset of the analysed pattern
    assert F.logdet() == pytest.approx(np.linalg.slogdet(B.toarray())[1], rel=1e-12)
    other = sp.csc_matrix(A + sp.csc_matrix(([0.01, 0.01], ([0, 59], [59, 0])), shape=(60, 60)))
    if (other != 0).nnz > (A != 0).nnz:
        with pytest.raises(ValueError):
            S.LDLFactor(other, sym)
        f = factorize(other, "ldl", symbolic=sym)  # the back end re-analyses
        assert f.logdet() == pytest.approx(np.linalg.slogdet(other.toarray())[1], rel=1e-12)


def test_not_positive_definite_is_reported():
    from mixedblup.errors import EstimationError

    A = _spd(50, 0.05, 2)
    A = sp.csc_matrix(A - sp.identity(50) * 1e3)
    assert not S.LDLFactor(A, S.symbolic(A)).ok
    with pytest.raises(EstimationError):
        factorize(A, "ldl")


def test_ldl_backend_block_diagonal_equals_dense():
    A = _spd(90, 0.05, 11)
    inv = np.linalg.inv(A.toarray())
    starts = np.repeat(np.arange(0, 90, 3), 3)
    sizes = np.full(90, 3)
    got = factorize(A, "ldl").block_diagonal(starts, sizes)
    want = factorize(A, "dense").block_diagonal(starts, sizes)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got[4, 2] == pytest.approx(inv[5, 4])


def test_real_mme_ldl_equals_splu_and_dense():
    import mixedblup as mb
    from mixedblup.mme import cross_products, solve_mme
    from mixedblup.api import resolve_covariances
    from mixedblup.design import build_design
    from mixedblup.formula import parse_formula
    from mixedblup.simulate import simulate_population

    sim = simulate_population(600, n_generations=4, n_herds=10, sires_per_generation=12,
                              records_per_animal=2, maternal=0.1, cov_am=-0.02, seed=3)
    rec = sim.records[sim.records["dam"] != "0"]
    ped = mb.Pedigree.from_frame(sim.pedigree, id="id", sire="sire", dam="dam")
    spec = parse_formula("y ~ herd_year + (1|id) + (1|dam)", rec.columns)
    covs = resolve_covariances(spec, {("id", "dam"): ped})
    design = build_design(spec, rec, levels={k: s.labels for k, s in covs.structures.items()},
                          joint=covs.joint)
    cp = cross_products(design, [covs.structures[t.name].bind(t.levels) for t in design.terms])
    lam = [np.array([[0.8, 0.0], [-0.2, 0.5]])]
    a, b = solve_mme(cp, lam, "ldl"), solve_mme(cp, lam, "dense")
    assert a.factor.backend == "ldl"
    assert a.logdet_C == pytest.approx(b.logdet_C, rel=1e-10)
    np.testing.assert_allclose(a.u, b.u, atol=1e-9)
    n = cp.size
    starts = np.concatenate([np.arange(cp.p), cp.p + (np.arange(n - cp.p) // 2) * 2])
    sizes = np.concatenate([np.ones(cp.p, int), np.full(n - cp.p, 2)])
    np.testing.assert_allclose(a.factor.block_diagonal(starts, sizes), b.factor.block_diagonal(starts, sizes),
                               atol=1e-10)
    # the traces REML derivatives need: C^-1 on the pattern of K^-1 (x) 1 lies on the factor's pattern
    Kinv = sp.kron(cp.covariances[0].precision, np.ones((2, 2))).tocoo()
    rows, cols = Kinv.row + cp.p, Kinv.col + cp.p
    inv = b.factor.inverse()
    np.testing.assert_allclose(a.factor.inverse_entries(rows, cols), inv[rows, cols], atol=1e-10)
    # zero variance: pattern of C shrinks, the model's analysis still applies
    z = solve_mme(cp, [np.zeros((2, 2))], "ldl")
    assert z.logdet_C == pytest.approx(solve_mme(cp, [np.zeros((2, 2))], "dense").logdet_C, rel=1e-10)


def test_blas_threads_context_restores():
    with blas_threads(1):
        np.linalg.cholesky(np.eye(3))


def _arrow_spd(n, band, dense, seed):
    """SPD matrix with a sparse band, a few dense rows (a large dense tail) and random fill."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.03, random_state=seed).tolil()
    for i in range(n):
        for j in range(max(0, i - band), i):
            A[i, j] = rng.normal()
    A[n - dense:, :] = rng.normal(size=(dense, n))
    A = sp.csc_matrix(A)
    A = A + A.T
    return sp.csc_matrix(A + sp.identity(n) * (abs(A).sum(axis=1).max() + 1))


@pytest.mark.parametrize("min_d", [1, 3, 10 ** 9])
def test_grouped_dense_tail_products_and_schur_update_match_column_by_column(min_d):
    """The batched tail products (selected inverse) and Schur update (factorisation) give
    the same numbers whichever columns are grouped."""
    A = _arrow_spd(150, 3, 12, 11)
    sym = S.symbolic(A, n1=110)
    F = S.LDLFactor(A, sym)
    Ux, _ = S._scatter_upper(150, A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data,
                             sym.pinv, sym.Up, sym.Ui)
    Li, Lx, D, S2, ok = S._ldl_numeric_kernel(150, 110, sym.Up, sym.Ui, Ux, sym.Lp, sym.parent)
    assert ok
    S._schur_update(150, 110, sym.Lp, Li, Lx, D, S2, min_d=min_d, grow=1.5)
    Ap = A.toarray()[np.ix_(sym.perm, sym.perm)]  # the Schur complement, densely
    S_ref = Ap[110:, 110:] - Ap[110:, :110] @ np.linalg.solve(Ap[:110, :110], Ap[:110, 110:])
    np.testing.assert_allclose(S2, S_ref, rtol=1e-10, atol=1e-10)
    Z22 = np.linalg.inv(S_ref)
    P = S._dense_products(150, 110, sym.Lp, Li, Lx, Z22, min_d=min_d, grow=1.5)
    P_ref = S._dense_products(150, 110, sym.Lp, Li, Lx, Z22, min_d=10 ** 9)
    np.testing.assert_allclose(P, P_ref, rtol=1e-12, atol=1e-14)
    inv = np.linalg.inv(A.toarray())
    rows, cols = _pattern_pairs(F)
    np.testing.assert_allclose(F.inverse_entries(rows, cols), inv[rows, cols], atol=1e-13)


def test_amd_ordering_is_postordered_and_inverse_block_matches_dense():
    A = _arrow_spd(200, 2, 8, 4)
    sym = S.symbolic(A)
    # postorder: every column's parent comes after it and each subtree is contiguous
    parent = sym.parent
    assert all(parent[j] == -1 or parent[j] > j for j in range(sym.n))
    size = np.ones(sym.n, dtype=int)
    first = np.arange(sym.n)
    for j in range(sym.n):  # children come before parents: sizes and first columns are final
        if parent[j] != -1:
            size[parent[j]] += size[j]
            first[parent[j]] = min(first[parent[j]], first[j])
    np.testing.assert_array_equal(first, np.arange(sym.n) - size + 1)  # subtree j is first..j
    F = factorize(A, "ldl")
    inv = np.linalg.inv(A.toarray())
    idx = np.array([0, 5, 17, 100, 199, 150])
    np.testing.assert_allclose(F.inverse_columns(idx, idx), inv[np.ix_(idx, idx)], atol=1e-13)
    rows, cols = np.array([3, 8]), np.array([9, 199, 3])
    np.testing.assert_allclose(F.inverse_columns(cols, rows), inv[np.ix_(rows, cols)], atol=1e-13)
    np.testing.assert_allclose(F.inverse_columns(cols), inv[:, cols], atol=1e-13)


def test_inverse_block_of_every_back_end_matches_dense():
    A = _arrow_spd(180, 2, 10, 8)
    inv = np.linalg.inv(A.toarray())
    idx = np.array([0, 3, 60, 179, 120])
    for backend in ("ldl", "dense", "splu"):
        F = factorize(A, backend)
        np.testing.assert_allclose(F.inverse_block(idx), inv[np.ix_(idx, idx)], atol=1e-13)
