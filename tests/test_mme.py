"""The equations stage against dense, independent computations (V built directly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import mixedblup as mb
from mixedblup.covariance import Identity
from mixedblup.design import build_design
from mixedblup.mme import cross_products, minus_two_loglik, relative_factor, solve_mme


def dense_reference(X, Z, G, R, y):
    """GLS/BLUP and lme4-convention log-likelihoods from V = ZGZ' + R."""
    V = Z @ G @ Z.T + R
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    u = G @ Z.T @ Vi @ r
    n, p = X.shape
    quad = r @ Vi @ r
    reml = -0.5 * (np.linalg.slogdet(V)[1] + np.linalg.slogdet(XtViX)[1] + quad + (n - p) * np.log(2 * np.pi))
    ml = -0.5 * (np.linalg.slogdet(V)[1] + quad + n * np.log(2 * np.pi))
    return beta, u, np.linalg.inv(XtViX), reml, ml


@st.composite
def unbalanced(draw):
    n_groups = draw(st.integers(2, 6))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_groups, max_size=n_groups))
    n = sum(sizes)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    data = pd.DataFrame({
        "y": rng.normal(size=n) + rng.normal(size=n_groups).repeat(sizes),
        "x": rng.normal(size=n),
        "g": g,
        "s": rng.choice(["a", "b"], size=n),
    })
    lam = draw(st.floats(1e-3, 1e3))
    return data, lam, seed


def test_relative_factor_handles_singular_covariance():
    lam = relative_factor(np.array([[4.0, 2.0], [2.0, 1.0]]), 2.0)
    assert lam.shape == (2, 2) and np.linalg.matrix_rank(lam) == 1
    np.testing.assert_allclose(lam @ lam.T, [[2.0, 1.0], [1.0, 0.5]], atol=1e-12)
    np.testing.assert_array_equal(relative_factor(np.zeros((1, 1)), 1.0), [[0.0]])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(unbalanced())
def test_mme_solution_equals_gls_blup(case):
    data, lam, _ = case
    if data["s"].nunique() < 2 or len(data) < 5:
        return
    res = mb.fit("y ~ x + s + (1|g)", data, variances={"g": 1.0 / lam, "residual": 1.0})
    d = res._design
    X, Z = d.X, d.Z.toarray()
    G = np.eye(Z.shape[1]) / lam
    beta, u, cov, reml, ml = dense_reference(X, Z, G, np.eye(len(data)), d.y)
    np.testing.assert_allclose(res.fixed_effects["estimate"], beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.random_effects()["estimate"], u, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(res.vcov_fixed.to_numpy(), cov, rtol=1e-7, atol=1e-12)
    assert res.loglik == pytest.approx(reml, rel=1e-9, abs=1e-9)


def test_loglik_ml_and_correlated_term_against_dense():
    data = mb.datasets.load("sleepstudy")
    sigma = np.array([[600.0, 10.0], [10.0, 35.0]])
    for method in ("REML", "ML"):
        res = mb.fit("Reaction ~ Days + (Days|Subject)", data, method=method,
                     variances={"Subject": sigma, "residual": 650.0})
        d = res._design
        G = np.kron(np.eye(len(d.terms[0].levels)), sigma)
        beta, u, _, reml, ml = dense_reference(d.X, d.Z.toarray(), G, np.eye(d.n) * 650.0, d.y)
        np.testing.assert_allclose(res.fixed_effects["estimate"], beta, rtol=1e-9)
        np.testing.assert_allclose(res.random_effects()["estimate"], u, rtol=1e-7, atol=1e-8)
        assert res.loglik == pytest.approx(reml if method == "REML" else ml, rel=1e-11)


def test_weights_equal_duplicated_records():
    data = pd.DataFrame({"y": [1.0, 2.0, 2.5, 4.0, 3.0, 5.0], "x": [0, 1, 2, 3, 1, 2.0],
                         "g": list("aabbcc")})
    twice = pd.concat([data, data.iloc[[2]]], ignore_index=True)
    weighted = data.assign(w=[1, 1, 2, 1, 1, 1.0])
    v = {"g": 0.7, "residual": 1.3}
    a = mb.fit("y ~ x + (1|g)", twice, variances=v)
    b = mb.fit("y ~ x + (1|g)", weighted, variances=v, weights="w")
    np.testing.assert_allclose(a.fixed_effects["estimate"], b.fixed_effects["estimate"], rtol=1e-10)
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], rtol=1e-10)


@pytest.mark.parametrize("backend", ["dense", "splu", "schur"])
def test_backends_agree(backend):
    data = mb.datasets.load("penicillin")
    v = {"plate": 0.7, "sample": 3.7, "residual": 0.3}
    ref = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", data, variances=v, backend="dense")
    res = mb.fit("diameter ~ 1 + (1|plate) + (1|sample)", data, variances=v, backend=backend)
    np.testing.assert_allclose(res.random_effects()["estimate"], ref.random_effects()["estimate"], rtol=1e-9)
    np.testing.assert_allclose(res.random_effects()["pev"], ref.random_effects()["pev"], rtol=1e-9)
    assert res.loglik == pytest.approx(ref.loglik, rel=1e-12)


def test_cross_products_and_solution_shapes():
    data = mb.datasets.load("dyestuff")
    spec = mb.parse_formula("Yield ~ 1 + (1|Batch)", data.columns)
    d = build_design(spec, data)
    cp = cross_products(d, [Identity().bind(t.levels) for t in d.terms])
    assert cp.XtX.shape == (1, 1) and cp.ZtZ.shape == (6, 6) and cp.n == 30
    sol = solve_mme(cp, [relative_factor(np.array([[1764.05]]), 2451.25)])
    assert sol.u.shape == (6,) and abs(sol.u.sum()) < 1e-8  # sum-to-zero with intercept and G = I
    assert np.isfinite(minus_two_loglik(cp, sol, 2451.25, True))
    assert sp.issparse(sol.coefficient_matrix)
