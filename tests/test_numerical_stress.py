"""Numerical stress (issue 8): extreme magnitudes, wildly different predictor scales,
near-collinear fixed effects, a non-positive-definite user G and a near-singular
coefficient matrix.  Each gives a correct result (checked against an independent dense
GLS computation or an exact scaling law) or a clear, typed message: never NaN tables
without a word.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.errors import (
    CovarianceError,
    EstimationError,
    RankDeficiencyWarning,
    ScaleWarning,
)


def data_set(seed: int = 11, n_groups: int = 15, n: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 3 + 0.6 * x1 - 0.4 * x2 + rng.normal(scale=1.1, size=n_groups)[g] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": [f"g{i:02d}" for i in g]})


def gls(df: pd.DataFrame, fixed: list[str], group: str, s2u: float, s2e: float, K: pd.DataFrame | None = None):
    """Dense GLS/BLUP written out: beta = (X'V^-1X)^-1 X'V^-1 y, u = s2u K Z'V^-1 (y - X beta)."""
    X = np.column_stack([np.ones(len(df))] + [df[c].to_numpy(float) for c in fixed])
    levels = sorted(df[group].unique()) if K is None else list(K.index)
    Z = (df[group].to_numpy()[:, None] == np.array(levels)[None, :]).astype(float)
    Kd = np.eye(len(levels)) if K is None else K.to_numpy()
    V = s2u * Z @ Kd @ Z.T + s2e * np.eye(len(df))
    Vi_X = np.linalg.solve(V, X)
    beta = np.linalg.solve(X.T @ Vi_X, Vi_X.T @ df["y"].to_numpy())
    u = s2u * Kd @ Z.T @ np.linalg.solve(V, df["y"].to_numpy() - X @ beta)
    return beta, pd.Series(u, index=levels)


# --------------------------------------------------------------------------- magnitudes


@pytest.mark.parametrize("k", [1e-8, 1e8])
def test_response_scaled_reml(k):
    df = data_set()
    ref = mb.fit("y ~ x1 + x2 + (1|g)", df)
    res = mb.fit("y ~ x1 + x2 + (1|g)", df.assign(y=df["y"] * k))
    vc0 = ref.variance_components.set_index("group")["estimate"]
    vc = res.variance_components.set_index("group")["estimate"]
    np.testing.assert_allclose(vc.to_numpy(), vc0.to_numpy() * k**2, rtol=1e-5)  # sigma^2 by k^2
    assert vc["g"] / vc["Residual"] == pytest.approx(vc0["g"] / vc0["Residual"], rel=1e-5)  # same lambda
    np.testing.assert_allclose(res.fixed_effects["estimate"], ref.fixed_effects["estimate"] * k, rtol=1e-6)
    np.testing.assert_allclose(res.fixed_effects["std_error"], ref.fixed_effects["std_error"] * k, rtol=1e-4)
    np.testing.assert_allclose(res.random_effects()["estimate"], ref.random_effects()["estimate"] * k,
                               rtol=1e-5, atol=1e-6 * k)
    # -2 log L (REML) shifts by exactly 2 (n - p) log k
    n, p = len(df), 3
    assert -2 * res.loglik == pytest.approx(-2 * ref.loglik + 2 * (n - p) * np.log(k), rel=1e-8, abs=1e-5)
    assert res.optimizer.converged


@pytest.mark.parametrize("k", [1e-8, 1e8])
def test_response_scaled_known_variances(k):
    df = data_set(seed=3)
    ref = mb.fit("y ~ x1 + (1|g)", df, variances={"g": 0.8, "residual": 1.3})
    res = mb.fit("y ~ x1 + (1|g)", df.assign(y=df["y"] * k), variances={"g": 0.8 * k**2, "residual": 1.3 * k**2})
    np.testing.assert_allclose(res.random_effects()["estimate"], ref.random_effects()["estimate"] * k, rtol=1e-10)
    np.testing.assert_allclose(res.random_effects()["pev"], ref.random_effects()["pev"] * k**2, rtol=1e-10)
    np.testing.assert_allclose(res.fixed_effects["estimate"], ref.fixed_effects["estimate"] * k, rtol=1e-10)
    beta, _ = gls(df.assign(y=df["y"] * k), ["x1"], "g", 0.8 * k**2, 1.3 * k**2)
    np.testing.assert_allclose(res.fixed_effects["estimate"], beta, rtol=1e-9)


@pytest.mark.parametrize("k", [1e-8, 1e8])
def test_animal_model_scaled(k):
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    data = mb.datasets.load("mrode_3_1")
    ref = mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": ped}, variances={"calf": 20, "residual": 40})
    res = mb.fit("wwg ~ 0 + sex + (1|calf)", data.assign(wwg=data["wwg"] * k), cov={"calf": ped},
                 variances={"calf": 20 * k**2, "residual": 40 * k**2})
    np.testing.assert_allclose(res.random_effects()["estimate"], ref.random_effects()["estimate"] * k, rtol=1e-10)
    np.testing.assert_allclose(res.random_effects()["reliability"], ref.random_effects()["reliability"],
                               rtol=1e-10)


# --------------------------------------------------------------------------- predictor scales


def test_predictors_on_wildly_different_scales():
    df = data_set(seed=5)
    ref = mb.fit("y ~ x1 + x2 + (1|g)", df)
    wild = df.assign(x1=df["x1"] * 1e-6, x2=df["x2"] * 1e6)
    with pytest.warns(ScaleWarning) as rec:
        res = mb.fit("y ~ x1 + x2 + (1|g)", wild)
    msg = " ".join(str(w.message) for w in rec)
    assert "x1 (sd" in msg and "x2 (sd" in msg and "rescaling" in msg
    fe0, fe = ref.fixed_effects, res.fixed_effects
    # BLUE back-transformed exactly: beta_x1 * 1e6, beta_x2 * 1e-6
    assert fe.loc["x1", "estimate"] == pytest.approx(fe0.loc["x1", "estimate"] * 1e6, rel=1e-6)
    assert fe.loc["x2", "estimate"] == pytest.approx(fe0.loc["x2", "estimate"] * 1e-6, rel=1e-6)
    assert fe.loc["x1", "std_error"] == pytest.approx(fe0.loc["x1", "std_error"] * 1e6, rel=1e-4)
    assert fe.loc["(Intercept)", "estimate"] == pytest.approx(fe0.loc["(Intercept)", "estimate"], rel=1e-6)
    np.testing.assert_allclose(res.variance_components["estimate"], ref.variance_components["estimate"], rtol=1e-5)
    np.testing.assert_allclose(res.fitted, ref.fitted, rtol=1e-7)
    assert fe[["estimate", "std_error"]].notna().all().all()
    # known variances: against the dense GLS of the rescaled data
    kv = mb.fit("y ~ x1 + x2 + (1|g)", wild, variances={"g": 1.0, "residual": 1.0}, checks={"scale_x": "ignore"})
    beta, u = gls(wild, ["x1", "x2"], "g", 1.0, 1.0)
    np.testing.assert_allclose(kv.fixed_effects["estimate"], beta, rtol=1e-8)
    np.testing.assert_allclose(kv.random_effects().set_index("level")["estimate"].reindex(u.index), u, atol=1e-9)


# --------------------------------------------------------------------------- collinearity


def test_near_collinear_fixed_effects_warned_and_correct():
    df = data_set(seed=8)
    rng = np.random.default_rng(1)
    near = df.assign(x3=df["x1"] + 5e-7 * rng.normal(size=len(df)))  # cond ~ 3e6: kept, but warned
    with pytest.warns(RankDeficiencyWarning) as rec:
        res = mb.fit("y ~ x1 + x3 + (1|g)", near, variances={"g": 1.0, "residual": 1.0})
    msg = " ".join(str(w.message) for w in rec)
    assert "'x1', 'x3' are nearly collinear" in msg and "centre covariates" in msg
    assert "collinear_x" in set(res.diagnostics["check"])
    fe = res.fixed_effects
    assert fe[["estimate", "std_error"]].notna().all().all() and not fe["dropped"].any()
    # estimable quantities are accurate: the sum of the two slopes, the fitted values, the BLUPs
    # reference: the same column space, well conditioned (x1 and the scaled difference)
    d = near["x3"] - near["x1"]
    beta, u = gls(near.assign(ds=d / d.std()), ["x1", "ds"], "g", 1.0, 1.0)
    b3 = beta[2] / d.std()
    # the sum of the two slopes is estimable (SE about 0.09): right to within 1% of its SE
    assert fe.loc["x1", "estimate"] + fe.loc["x3", "estimate"] == pytest.approx(beta[1], abs=1e-3)
    re = res.random_effects().set_index("level").reindex(u.index)
    # the normal equations square the condition number (as lme4's do): the BLUPs keep about
    # 3-4 digits, within 1% of their standard errors -- and the warning above says so
    np.testing.assert_allclose(re["estimate"], u, atol=1e-2 * re["std_error"].min())
    # the individual slopes are within a tiny fraction of their (huge) standard errors
    assert abs(fe.loc["x3", "estimate"] - b3) < 1e-2 * fe.loc["x3", "std_error"]
    # the switch: no warning, still recorded nowhere
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        mb.fit("y ~ x1 + x3 + (1|g)", near, variances={"g": 1.0, "residual": 1.0}, checks={"collinear_x": "ignore"})


def test_exactly_collinear_dropped_with_a_word_never_silent_nan():
    df = data_set(seed=9)
    exact = df.assign(x3=df["x1"] + 1e-12 * df["x2"], x4=2 * df["x2"])
    with pytest.warns(RankDeficiencyWarning, match=r"dropping 2 column\(s\): 'x3', 'x4'"):
        res = mb.fit("y ~ x1 + x2 + x3 + x4 + (1|g)", exact)
    fe = res.fixed_effects
    nan_rows = fe[fe["estimate"].isna()]
    assert list(nan_rows.index) == ["x3", "x4"] and nan_rows["dropped"].all()
    assert fe.loc[~fe["dropped"], ["estimate", "std_error"]].notna().all().all()
    ref = mb.fit("y ~ x1 + x2 + (1|g)", df)
    np.testing.assert_allclose(fe.loc[["(Intercept)", "x1", "x2"], "estimate"], ref.fixed_effects["estimate"],
                               rtol=1e-6)


def test_fixed_tables_never_nan_without_a_word():
    """Every NaN estimate in a fixed-effect table is a dropped column, announced by a warning."""
    df = data_set(seed=10)
    cases = {"y ~ x1 + (1|g)": df, "y ~ x1 + x3 + (1|g)": df.assign(x3=df["x1"] * 3.0),
             "y ~ x1 + x2 + (1|g)": df.assign(x2=df["x2"] * 1e7)}
    for formula, d in cases.items():
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            res = mb.fit(formula, d)
        fe = res.fixed_effects
        nan = fe["estimate"].isna() | fe["std_error"].isna()
        assert (fe.loc[nan, "dropped"]).all()
        if nan.any():
            assert any(isinstance(w.message, RankDeficiencyWarning) for w in rec)
        assert np.isfinite(res.variance_components["estimate"]).all()


# --------------------------------------------------------------------------- user G


def test_non_positive_definite_g_clear_error_and_explicit_fixes_only():
    rng = np.random.default_rng(2)
    ids = [f"a{i}" for i in range(12)]
    M = rng.binomial(2, 0.5, size=(12, 5)).astype(float)
    Zm = M - M.mean(axis=0)
    G = pd.DataFrame(Zm @ Zm.T / (0.5 * 5), index=ids, columns=ids)  # rank <= 5 of 12
    data = pd.DataFrame({"y": rng.normal(size=36), "id": np.repeat(ids, 3)})
    with pytest.raises(CovarianceError) as err:
        mb.fit("y ~ 1 + (1|id)", data, cov={"id": mb.Relationship(G)}, variances={"id": 1.0, "residual": 1.0})
    msg = str(err.value)
    assert "G is not positive definite" in msg and "numerical rank" in msg and "blend" in msg
    # explicit fix: the fit uses exactly the blended matrix (nothing else added to the diagonal)
    fixed = mb.adjust_relationship(G, blend=(0.9, "I"))
    res = mb.fit("y ~ 1 + (1|id)", data, cov={"id": fixed.relationship()}, variances={"id": 1.0, "residual": 1.0})
    _, u = gls(data, [], "id", 1.0, 1.0, K=0.9 * G + 0.1 * np.eye(12))
    np.testing.assert_allclose(res.random_effects().set_index("level")["estimate"].reindex(u.index), u, atol=1e-9)
    assert res.diagnostics["message"].str.contains("G <- 0.9 G + 0.1 I", regex=False).any()
    proj = mb.adjust_relationship(G, nearest_pd=True)
    res2 = mb.fit("y ~ 1 + (1|id)", data, cov={"id": proj.relationship()}, variances={"id": 1.0, "residual": 1.0})
    _, u = gls(data, [], "id", 1.0, 1.0, K=proj.G)
    np.testing.assert_allclose(res2.random_effects().set_index("level")["estimate"].reindex(u.index), u, atol=1e-7)
    assert res2.diagnostics["message"].str.contains("nearest positive definite").any()


# --------------------------------------------------------------------------- coefficient matrix


@pytest.mark.parametrize("backend", ["dense", "ldl", "splu", "schur"])
def test_near_singular_coefficient_matrix(backend):
    df = data_set(seed=12, n_groups=80, n=240)
    # moderately ill-conditioned (variance ratio 1e6): correct, all back ends agree with GLS
    res = mb.fit("y ~ x1 + (1|g)", df, variances={"g": 1e6, "residual": 1.0}, backend=backend)
    beta, u = gls(df, ["x1"], "g", 1e6, 1.0)
    assert res.fixed_effects.loc["x1", "estimate"] == pytest.approx(beta[1], rel=1e-6)
    np.testing.assert_allclose(res.fitted, gls_fitted(df, beta, u), rtol=1e-6)
    # singular to working precision: an error naming the blocks, never garbage
    with pytest.raises(EstimationError) as err:
        mb.fit("y ~ x1 + (1|g)", df, variances={"g": 1e17, "residual": 1.0}, backend=backend)
    msg = str(err.value)
    assert "'(Intercept)'" in msg and "'g'" in msg and "variance ratio" in msg and "Remove a fixed effect" in msg


def gls_fitted(df: pd.DataFrame, beta: np.ndarray, u: pd.Series) -> np.ndarray:
    return beta[0] + beta[1] * df["x1"].to_numpy() + u.reindex(df["g"]).to_numpy()


def test_reml_never_returns_a_near_singular_optimum_silently():
    """REML where the group effects explain almost everything: finite, converged, or said."""
    rng = np.random.default_rng(13)
    g = np.repeat(np.arange(20), 4)
    y = rng.normal(scale=1e4, size=20)[g] + rng.normal(scale=1e-3, size=80)
    df = pd.DataFrame({"y": y, "g": [f"g{i}" for i in g]})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = mb.fit("y ~ 1 + (1|g)", df)
    assert np.isfinite(res.variance_components["estimate"]).all()
    assert np.isfinite(res.random_effects()["estimate"]).all()
    vc = res.variance_components.set_index("group")["estimate"]
    msw = ((y - pd.Series(y).groupby(g).transform("mean")) ** 2).sum() / 60
    # sigma_u / sigma_e = 1e7 is beyond double precision in the equations: either the REML
    # answer (the within mean square) or a ConvergenceWarning saying the fit is not trusted
    if res.optimizer.converged:
        assert vc["Residual"] == pytest.approx(msw, rel=1e-3)
    else:
        assert any(isinstance(w.message, mb.ConvergenceWarning) for w in rec)
        assert "convergence" in set(res.diagnostics["check"])
