"""Inference on fits with held components (``fixed_variances=``) and residual classes.

Satterthwaite's df, the variance-component standard errors, ratios, intervals and the
F tests are pinned to an independent dense computation (``tests/dense_reml.py``): ``V``
is built from the incidence matrices, the held components and the residual classes, the
Hessian of ``-2 log L`` in the *free* components is the analytic observed information
(``beta`` profiled out), ``var(beta) = (X'V^-1X)^-1`` and its derivatives are analytic,
and ``df = 2 (l'Cl)^2 / (g' A g)`` with ``A = 2 H^-1``.  Everything is evaluated at
mixedblup's own estimates, so the comparison does not depend on how tightly either side
optimises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dense_reml import dense_fit, dense_information, dense_satterthwaite, incidence, sleepstudy_slopes
from scipy import stats

import mixedblup as mb
from mixedblup import inference
from mixedblup.errors import MixedBlupError

HERE = Path(__file__).parent / "data" / "residual_groups"
CLASSES = ["A", "B", "C"]
#: Numerical (Richardson) against analytic derivatives.
RTOL = 1e-5


def _vc(res) -> pd.DataFrame:
    vc = res.variance_components
    return vc.set_index([vc["group"], vc["term1"], vc["term2"]])


# ----------------------------------------------------------------------------- held components
@pytest.fixture(scope="module")
def crossed() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n, a_lev, b_lev = 90, 9, 6
    a, b = rng.integers(0, a_lev, n), rng.integers(0, b_lev, n)
    x = rng.normal(size=n)
    y = 10 + 0.5 * x + rng.normal(0, 1.2, a_lev)[a] + rng.normal(0, 0.8, b_lev)[b] + rng.normal(0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b]})


def _crossed_parts(data):
    y = data["y"].to_numpy()
    X = np.column_stack([np.ones(len(y)), data["x"].to_numpy()])
    Za, Zb = incidence(data["a"]), incidence(data["b"])
    return y, X, Za @ Za.T, Zb @ Zb.T


@pytest.fixture(scope="module", params=["REML", "ML"])
def held_b(request, crossed):
    method = request.param
    res = mb.fit("y ~ x + (1|a) + (1|b)", crossed, fixed_variances={"b": 0.7}, method=method)
    y, X, Ka, Kb = _crossed_parts(crossed)
    vc = _vc(res)["estimate"]
    v = np.array([vc[("a", "(Intercept)", "")], vc[("Residual", "", "")]])
    H, C, dC = dense_information(y, X, 0.7 * Kb, [Ka, np.eye(len(y))], v, method == "REML")
    return res, H, C, dC


def test_held_component_satterthwaite_and_se(held_b):
    res, H, C, dC = held_b
    df = dense_satterthwaite(H, C, dC, np.eye(2))
    np.testing.assert_allclose(res.fixed_effects["df"].to_numpy(), df, rtol=RTOL)
    np.testing.assert_allclose(res.vcov_fixed.to_numpy(), C, rtol=1e-8)
    se = _vc(res)["std_error"]
    A = 2 * np.linalg.inv(H)
    np.testing.assert_allclose([se[("a", "(Intercept)", "")], se[("Residual", "", "")]], np.sqrt(np.diag(A)),
                               rtol=RTOL)
    assert np.isnan(se[("b", "(Intercept)", "")])
    # p-values and intervals use those df
    fe = res.fixed_effects
    t = fe["estimate"] / fe["std_error"]
    np.testing.assert_allclose(fe["p_value"], 2 * stats.t.sf(np.abs(t), df), rtol=1e-3)


def test_held_component_tests_use_the_corrected_df(held_b):
    res, H, C, dC = held_b
    df_x = dense_satterthwaite(H, C, dC, [[0.0, 1.0]])[0]
    assert res.contrast([[0, 1]])["den_df"] == pytest.approx(df_x, rel=RTOL)
    aov = res.anova()
    assert aov.loc["x", "den_df"] == pytest.approx(df_x, rel=RTOL)
    # a 2-row contrast: per-direction df from the eigenvectors of L C L', combined as in lmerTest
    L = np.eye(2)
    _, vecs = np.linalg.eigh(L @ C @ L.T)
    nu = dense_satterthwaite(H, C, dC, vecs.T @ L)
    e = np.sum(nu / (nu - 2))
    assert res.contrast(L)["den_df"] == pytest.approx(2 * e / (e - 2), rel=RTOL)


def test_held_component_is_not_differentiated(held_b, crossed):
    """Guard: treating the held variance as estimated gives clearly different df here."""
    res, H, C, dC = held_b
    y, X, Ka, Kb = _crossed_parts(crossed)
    vc = _vc(res)["estimate"]
    v3 = [vc[("a", "(Intercept)", "")], 0.7, vc[("Residual", "", "")]]
    H3, C3, dC3 = dense_information(y, X, None, [Ka, Kb, np.eye(len(y))], v3, res.method == "REML")
    wrong = dense_satterthwaite(H3, C3, dC3, np.eye(2))
    right = dense_satterthwaite(H, C, dC, np.eye(2))
    assert np.max(np.abs(wrong / right - 1)) > 0.05
    np.testing.assert_allclose(res.fixed_effects["df"].to_numpy(), right, rtol=RTOL)


def test_ratio_with_a_held_component_treats_it_as_known(held_b):
    res, H, _, _ = held_b
    vc = _vc(res)["estimate"]
    a, e = vc[("a", "(Intercept)", "")], vc[("Residual", "", "")]
    total = a + 0.7 + e
    out = res.ratio("a")
    assert out["estimate"] == pytest.approx(a / total, rel=1e-12)
    grad = np.array([1 / total - a / total ** 2, -a / total ** 2])  # d/da, d/de (b is given)
    se = np.sqrt(grad @ (2 * np.linalg.inv(H)) @ grad)
    assert out["std_error"] == pytest.approx(se, rel=RTOL)
    ci = res.confint()
    assert ci.loc["var(b)", "method"] == "held" and np.isnan(ci.loc["var(b)", "lower"])
    assert ci.loc["var(a)", "upper"] == pytest.approx(
        a + stats.norm.ppf(0.975) * np.sqrt(2 * np.linalg.inv(H)[0, 0]), rel=RTOL)


def test_profile_keeps_held_components_at_their_values(crossed):
    y, X, Ka, Kb = _crossed_parts(crossed)
    res = mb.fit("y ~ x + (1|a) + (1|b)", crossed, fixed_variances={"b": 0.7})
    prof = res.profile("a", n=4, width=1.5)
    for value, deviance in zip(prof["value"], prof["deviance"]):
        # dense: sigma_a^2 at the value, sigma_b^2 held, the residual re-optimised
        _, best = dense_fit(y, X, value * Ka + 0.7 * Kb, [np.eye(len(y))], True)
        assert deviance == pytest.approx(best, abs=1e-5)
    lo, hi = res.confint(method="profile", parm=["var(a)"]).loc["var(a)", ["lower", "upper"]]
    d_hat = -2 * res.loglik
    for bound in (lo, hi):
        _, best = dense_fit(y, X, bound * Ka + 0.7 * Kb, [np.eye(len(y))], True)
        assert best - d_hat == pytest.approx(stats.chi2.ppf(0.95, 1), abs=1e-3)
    with pytest.raises(MixedBlupError, match="held"):
        res.profile("b")


def test_correlated_term_with_held_residual():
    sleep = mb.datasets.load("sleepstudy")
    res = mb.fit("Reaction ~ Days + (Days|Subject)", sleep, fixed_variances={"residual": 700.0})
    y, X, Ks = sleepstudy_slopes(sleep)
    vc = _vc(res)
    keys = [("Subject", "(Intercept)", ""), ("Subject", "Days", ""), ("Subject", "(Intercept)", "Days")]
    v = vc.loc[keys, "estimate"].to_numpy()
    H, C, dC = dense_information(y, X, 700.0 * np.eye(len(y)), Ks, v, True)
    np.testing.assert_allclose(res.fixed_effects["df"].to_numpy(), dense_satterthwaite(H, C, dC, np.eye(2)),
                               rtol=RTOL)
    np.testing.assert_allclose(vc.loc[keys, "std_error"].to_numpy(), np.sqrt(np.diag(2 * np.linalg.inv(H))),
                               rtol=RTOL)
    assert np.isnan(vc.loc[("Residual", "", ""), "std_error"])


# ----------------------------------------------------------------------------- residual classes
@pytest.fixture(scope="module")
def classes_data() -> pd.DataFrame:
    return pd.read_csv(HERE / "data.csv")


def _class_parts(data, weighted: bool):
    y = data["y"].to_numpy()
    X = np.column_stack([np.ones(len(y)), data["x"].to_numpy()])
    Z = incidence(data["a"].astype(str))
    G = pd.Index(CLASSES).get_indexer(data["g"])
    w = data["w"].to_numpy() if weighted else np.ones(len(y))
    R = [np.diag((G == g) / w) for g in range(len(CLASSES))]
    return y, X, Z @ Z.T, R


@pytest.fixture(scope="module", params=[("REML", False), ("ML", False), ("REML", True)],
                ids=["REML", "ML", "REML-weighted"])
def by_class(request, classes_data):
    method, weighted = request.param
    kwargs = {"weights": "w"} if weighted else {}
    res = mb.fit("y ~ x + (1|a)", classes_data, residual_groups="g", method=method, **kwargs)
    y, X, K, R = _class_parts(classes_data, weighted)
    vc = _vc(res)["estimate"]
    v = np.array([vc[("a", "(Intercept)", "")]] + [vc[("Residual", c, "")] for c in CLASSES])
    H, C, dC = dense_information(y, X, None, [K] + R, v, method == "REML")
    return res, H, C, dC, v


def test_residual_classes_satterthwaite_and_se(by_class):
    res, H, C, dC, _ = by_class
    df = dense_satterthwaite(H, C, dC, np.eye(2))
    np.testing.assert_allclose(res.fixed_effects["df"].to_numpy(), df, rtol=RTOL)
    keys = [("a", "(Intercept)", "")] + [("Residual", c, "") for c in CLASSES]
    np.testing.assert_allclose(_vc(res).loc[keys, "std_error"].to_numpy(), np.sqrt(np.diag(2 * np.linalg.inv(H))),
                               rtol=RTOL)
    assert res.contrast([[0, 1]])["den_df"] == pytest.approx(df[1], rel=RTOL)
    assert res.anova().loc["x", "den_df"] == pytest.approx(df[1], rel=RTOL)


def test_residual_classes_ratios_name_the_class(by_class):
    res, H, _, _, v = by_class
    A = 2 * np.linalg.inv(H)
    with pytest.raises(MixedBlupError, match="residual_class="):
        res.ratio("a")
    with pytest.raises(MixedBlupError, match="residual_class="):
        res.heritability("a")
    with pytest.raises(KeyError, match="name one as 'residual:<class>'"):
        res.ratio("residual")
    with pytest.raises(KeyError, match="no residual class 'Z'"):
        res.ratio("residual:Z")
    for k, c in enumerate(CLASSES):
        total = v[0] + v[1 + k]
        grad = np.zeros(len(v))
        grad[0] = 1 / total - v[0] / total ** 2
        grad[1 + k] = -v[0] / total ** 2
        h2 = res.heritability("a", residual_class=c)
        assert h2.name == f"h2(a|Residual:{c})"
        assert h2["estimate"] == pytest.approx(v[0] / total, rel=1e-12)
        assert h2["std_error"] == pytest.approx(np.sqrt(grad @ A @ grad), rel=RTOL)
        # a class's residual as numerator: that class's total variance by default
        r = res.ratio(f"residual:{c}")
        assert r.name == f"Residual:{c}"
        assert r["estimate"] == pytest.approx(v[1 + k] / total, rel=1e-12)
        assert res.ratio(("residual", c))["estimate"] == r["estimate"]
    explicit = res.ratio("a", over=["a", "residual:A", "residual:B"])
    assert explicit["estimate"] == pytest.approx(v[0] / (v[0] + v[1] + v[2]), rel=1e-12)
    with pytest.raises(MixedBlupError, match="over="):
        res.ratio("a", over=["a", "residual:A"], residual_class="A")


def test_residual_classes_confint(by_class):
    res, H, _, _, v = by_class
    A = 2 * np.linalg.inv(H)
    ci = res.confint()
    z = stats.norm.ppf(0.975)
    for k, c in enumerate(CLASSES):
        row = ci.loc[f"var(Residual:{c})"]
        assert row["estimate"] == pytest.approx(v[1 + k], rel=1e-12)
        assert row["upper"] == pytest.approx(v[1 + k] + z * np.sqrt(A[1 + k, 1 + k]), rel=RTOL)
    assert ci.index.is_unique
    sd = res.confint(scales="sdcor")
    assert sd.loc["sd(Residual:B)", "estimate"] == pytest.approx(np.sqrt(v[2]), rel=1e-12)
    with pytest.raises(MixedBlupError, match="residual classes"):
        res.confint(method="profile")
    with pytest.raises(MixedBlupError, match="residual classes"):
        res.heritability("a", method="profile", residual_class="A")
    with pytest.raises(MixedBlupError, match="Satterthwaite"):
        res.contrast([[0, 1]], ddf="Kenward-Roger")


def test_one_class_held(classes_data):
    res = mb.fit("y ~ x + (1|a)", classes_data, residual_groups="g", fixed_variances={"residual": {"B": 2.0}})
    y, X, K, R = _class_parts(classes_data, False)
    vc = _vc(res)
    keys = [("a", "(Intercept)", ""), ("Residual", "A", ""), ("Residual", "C", "")]
    v = vc.loc[keys, "estimate"].to_numpy()
    H, C, dC = dense_information(y, X, 2.0 * R[1], [K, R[0], R[2]], v, True)
    np.testing.assert_allclose(res.fixed_effects["df"].to_numpy(), dense_satterthwaite(H, C, dC, np.eye(2)),
                               rtol=RTOL)
    np.testing.assert_allclose(vc.loc[keys, "std_error"].to_numpy(), np.sqrt(np.diag(2 * np.linalg.inv(H))),
                               rtol=RTOL)
    # the held class's residual is known: no SE, and no uncertainty in a ratio over it
    h2 = res.heritability("a", residual_class="B")
    total = v[0] + 2.0
    assert h2["std_error"] == pytest.approx(np.sqrt(2 * np.linalg.inv(H)[0, 0]) * 2.0 / total ** 2, rel=RTOL)


@pytest.mark.parametrize("kind", ["held", "classes"])
def test_information_rebuilt_from_results(kind, crossed, classes_data):
    """Results without the estimation's information (as read by ``load``) rebuild the same one."""
    if kind == "held":
        res = mb.fit("y ~ x + (1|a) + (1|b)", crossed, fixed_variances={"b": 0.7})
    else:
        res = mb.fit("y ~ x + (1|a)", classes_data, residual_groups="g")
    rebuilt = inference._general_varpar(res)
    np.testing.assert_allclose(rebuilt.vcov, res._varpar.vcov, rtol=1e-8)
    np.testing.assert_allclose(rebuilt.jacobian, res._varpar.jacobian, rtol=1e-8, atol=1e-14)


def test_loaded_fit_has_the_same_df(crossed, tmp_path):
    """``load`` hands no information over: the rebuilt one gives the fit's df."""
    res = mb.fit("y ~ x + (1|a) + (1|b)", crossed, fixed_variances={"b": 0.7})
    again = mb.load(res.save(tmp_path / "held"))
    np.testing.assert_allclose(again.fixed_effects["df"], res.fixed_effects["df"], rtol=1e-10)
    assert again.ratio("a")["std_error"] == pytest.approx(res.ratio("a")["std_error"], rel=1e-10)
