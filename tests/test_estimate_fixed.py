"""Some variance components held at given values while the others are estimated (issue 4).

Every number is pinned to a dense V-based REML/ML written here: ``V`` is built
explicitly from the incidence matrices and the held components, and the free ones are
found by a generic optimiser on the log scale, starting from neutral values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dense_reml import dense_criterion, dense_fit, incidence, sleepstudy_slopes

import mixedblup as mb
from mixedblup.errors import CovarianceError


def _simulate(seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a_lev, b_lev = 9, 6
    n = 90
    a = rng.integers(0, a_lev, n)
    b = rng.integers(0, b_lev, n)
    x = rng.normal(size=n)
    y = (10 + 0.5 * x + rng.normal(0, 1.2, a_lev)[a] + rng.normal(0, 0.8, b_lev)[b]
         + rng.normal(0, 1.0, n))
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})


def m2ll(y, X, covs, variances, rdiag, reml) -> float:
    """-2 log L from V = sum_t s_t Z_t K_t Z_t' + diag(rdiag) (lme4's convention)."""
    V = np.diag(rdiag) + sum(s * K for s, K in zip(variances, covs))
    return dense_criterion(y, X, V, [], [], reml)[0]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _simulate()


@pytest.fixture(scope="module")
def parts(data):
    y = data["y"].to_numpy()
    X = np.column_stack([np.ones(len(data)), data["x"].to_numpy()])
    Za, Zb = incidence(data["a"]), incidence(data["b"])
    return y, X, Za @ Za.T, Zb @ Zb.T


def _vc(res) -> pd.Series:
    vc = res.variance_components
    return pd.Series(vc["estimate"].to_numpy(), index=vc["group"].to_numpy())


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_one_term_held(data, parts, method):
    y, X, Ka, Kb = parts
    reml = method == "REML"
    held_b = 0.7
    # dense: estimate sigma_a^2 and sigma_e^2 with sigma_b^2 = 0.7
    est, crit = dense_fit(y, X, held_b * Kb, [Ka, np.eye(len(y))], reml)
    res = mb.fit("y ~ x + (1|a) + (1|b)", data, fixed_variances={"b": held_b}, method=method)
    vc = _vc(res)
    assert vc["b"] == held_b
    np.testing.assert_allclose([vc["a"], vc["Residual"]], est, rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(crit, abs=1e-7 * abs(crit))
    # the criterion reported is the dense one at our estimates, and no worse than the dense optimum
    at_ours = m2ll(y, X, [Ka, Kb], [vc["a"], held_b], np.full(len(y), vc["Residual"]), reml)
    assert -2 * res.loglik == pytest.approx(at_ours, rel=1e-10)
    assert -2 * res.loglik <= crit + 1e-7 * abs(crit)
    assert not res.variances_known
    assert res.optimizer.held == ("b",)
    se = res.variance_components.set_index("group")["std_error"]
    assert np.isnan(se["b"]) and se["a"] > 0 and se["Residual"] > 0
    # AIC counts the estimated covariance parameters only: 2 fixed + a + residual
    assert res.npar == 4


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_residual_held(data, parts, method):
    y, X, Ka, Kb = parts
    reml = method == "REML"
    held_e = 1.3
    est, crit = dense_fit(y, X, held_e * np.eye(len(y)), [Ka, Kb], reml)
    res = mb.fit("y ~ x + (1|a) + (1|b)", data, fixed_variances={"residual": held_e}, method=method)
    vc = _vc(res)
    assert vc["Residual"] == pytest.approx(held_e, rel=1e-14)
    np.testing.assert_allclose([vc["a"], vc["b"]], est, rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(crit, abs=1e-7 * abs(crit))
    assert res.optimizer.held == ("Residual",)


def test_all_terms_held_residual_estimated(data, parts):
    y, X, Ka, Kb = parts
    est, crit = dense_fit(y, X, 1.5 * Ka + 0.5 * Kb, [np.eye(len(y))], True)
    res = mb.fit("y ~ x + (1|a) + (1|b)", data, fixed_variances={"a": 1.5, "b": 0.5})
    assert _vc(res)["Residual"] == pytest.approx(est[0], rel=2e-5)
    assert -2 * res.loglik == pytest.approx(crit, abs=1e-7 * abs(crit))


def test_held_at_the_free_estimate_reproduces_the_free_fit(data):
    free = mb.fit("y ~ x + (1|a) + (1|b)", data)
    vc = _vc(free)
    held = mb.fit("y ~ x + (1|a) + (1|b)", data, fixed_variances={"a": vc["a"]})
    np.testing.assert_allclose(_vc(held)[["b", "Residual"]].to_numpy(), vc[["b", "Residual"]].to_numpy(),
                               rtol=1e-4)
    assert held.loglik == pytest.approx(free.loglik, abs=1e-7)


def test_pedigree_animal_model_with_held_residual():
    ped_frame = pd.DataFrame({
        "id": [f"i{i}" for i in range(1, 31)],
        "sire": ["0"] * 6 + ["i1", "i1", "i2", "i2", "i3", "i3"] * 2 + ["i7", "i9", "i11", "i13", "i15", "i17"] * 2,
        "dam": ["0"] * 6 + ["i4", "i5", "i6", "i4", "i5", "i6"] * 2 + ["i8", "i10", "i12", "i14", "i16", "i18"] * 2,
    })
    ped = mb.Pedigree.from_frame(ped_frame, id="id", sire="sire", dam="dam")
    rng = np.random.default_rng(3)
    ids = np.repeat(ped_frame["id"].to_numpy()[4:], 2)
    data = pd.DataFrame({"id": ids, "sex": rng.integers(0, 2, len(ids)).astype(str)})
    A = ped.a_matrix(list(ped.ids)).to_numpy()
    a = np.linalg.cholesky(A) @ rng.normal(0, 1.0, len(A))
    pos = pd.Index(ped.ids).get_indexer(data["id"])
    data["y"] = 5 + (data["sex"] == "1") * 0.8 + a[pos] + rng.normal(0, 1.0, len(data))
    Z = np.zeros((len(data), len(A)))
    Z[np.arange(len(data)), pos] = 1.0
    X = np.column_stack([np.ones(len(data)), (data["sex"] == "1").to_numpy(float)])
    y = data["y"].to_numpy()
    held_e = 0.9
    est, crit = dense_fit(y, X, held_e * np.eye(len(y)), [Z @ A @ Z.T], True)
    res = mb.fit("y ~ sex + (1|id)", data, cov={"id": ped}, fixed_variances={"residual": held_e})
    assert _vc(res)["id"] == pytest.approx(est[0], rel=2e-5)
    assert -2 * res.loglik == pytest.approx(crit, abs=1e-7 * abs(crit))


def test_correlated_term_with_held_residual():
    sleep = mb.datasets.load("sleepstudy")
    res = mb.fit("Reaction ~ Days + (Days|Subject)", sleep, fixed_variances={"residual": 700.0})
    y, X, (K11, K22, K12) = sleepstudy_slopes(sleep)

    def crit(s11, s22, s12):
        return m2ll(y, X, [K11, K22, K12], [s11, s22, s12], np.full(len(y), 700.0), True)

    sig = res.variance_components.set_index(["group", "term1", "term2"])["estimate"]
    s11, s22 = sig[("Subject", "(Intercept)", "")], sig[("Subject", "Days", "")]
    s12 = sig[("Subject", "(Intercept)", "Days")]
    ours = crit(s11, s22, s12)
    assert -2 * res.loglik == pytest.approx(ours, rel=1e-10)

    # dense optimum over (s11, s22, s12), variances on the log scale
    est, best = dense_fit(y, X, 700.0 * np.eye(len(y)), [K11, K22, K12], True, positive=[True, True, False],
                          start=[500.0, 30.0, 0.0])
    assert ours <= best + 1e-7 * abs(best)
    np.testing.assert_allclose([s11, s22, s12], est, rtol=2e-5)


def test_errors_name_the_problem(data):
    with pytest.raises(CovarianceError, match="not terms of the model"):
        mb.fit("y ~ x + (1|a)", data, variances={"nope": 1.0})
    with pytest.raises(CovarianceError, match="one residual variance"):
        mb.fit("y ~ x + (1|a)", data, variances={"residual": {"A": 1.0}})
    with pytest.raises(CovarianceError, match="positive"):
        mb.fit("y ~ x + (1|a)", data, fixed_variances={"residual": -1.0})
    # variances= stays the all-known path: a missing component is an error pointing at fixed_variances=
    with pytest.raises(CovarianceError, match=r"missing \['residual'\].*fixed_variances="):
        mb.fit("y ~ x + (1|a)", data, variances={"a": 1.0})
    with pytest.raises(CovarianceError, match="not both"):
        mb.fit("y ~ x + (1|a)", data, variances={"a": 1.0, "residual": 1.0}, fixed_variances={"a": 1.0})
    with pytest.raises(CovarianceError, match="not terms of the model"):
        mb.fit("y ~ x + (1|a)", data, fixed_variances={"nope": 1.0})


def test_fixed_variances_in_full_is_the_known_variance_fit(data):
    known = mb.fit("y ~ x + (1|a)", data, variances={"a": 1.1, "residual": 0.9})
    held = mb.fit("y ~ x + (1|a)", data, fixed_variances={"a": 1.1, "residual": 0.9})
    assert held.variances_known and held.optimizer is None
    assert held.loglik == pytest.approx(known.loglik, rel=1e-12)
    np.testing.assert_allclose(held.fixed_effects["estimate"], known.fixed_effects["estimate"], rtol=1e-12)
