"""Heterogeneous residual variances by class: ``var(e_i) = sigma^2_{g(i)} / w_i`` (issue 6).

Pinned to (a) a dense V-based REML/ML and BLUP written here (``R`` built explicitly)
and (b) nlme's ``lme(..., weights = varIdent(form = ~ 1 | g))``, whose values are in
``tests/data/residual_groups/nlme_reference.json`` (generator: ``generate_nlme.R``
next to it; data: ``make_data.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dense_reml import dense_fit

import mixedblup as mb
from mixedblup.errors import CovarianceError

HERE = Path(__file__).parent / "data" / "residual_groups"
CLASSES = ["A", "B", "C"]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return pd.read_csv(HERE / "data.csv")


@pytest.fixture(scope="module")
def nlme() -> dict:
    return json.loads((HERE / "nlme_reference.json").read_text())


@pytest.fixture(scope="module")
def dense(data):
    y = data["y"].to_numpy()
    X = np.column_stack([np.ones(len(y)), data["x"].to_numpy()])
    levels = sorted(data["a"].unique())
    Z = (data["a"].to_numpy()[:, None] == np.array(levels)[None, :]).astype(float)
    G = pd.Index(CLASSES).get_indexer(data["g"])
    return y, X, Z, G, levels


def dense_parts(y, X, Z, G, sa, rvars, w, reml):
    """-2 log L, beta and BLUP from V = sa Z Z' + diag(rvars[g] / w)."""
    n, p = X.shape
    R = np.asarray(rvars)[G] / w
    V = sa * Z @ Z.T + np.diag(R)
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    m2ll = np.linalg.slogdet(V)[1] + r @ Vi @ r
    m2ll += ((n - p) * np.log(2 * np.pi) + np.linalg.slogdet(XtViX)[1]) if reml else n * np.log(2 * np.pi)
    return float(m2ll), beta, sa * Z.T @ Vi @ r, XtViX


def _vc(res) -> pd.Series:
    vc = res.variance_components
    return pd.Series(vc["estimate"].to_numpy(), index=[f"{g}:{t}" if g == "Residual" else g
                                                         for g, t in zip(vc["group"], vc["term1"])])


@pytest.mark.parametrize("key,kwargs", [("reml", {}), ("ml", {"method": "ML"}),
                                        ("reml_weighted", {"weights": "w"})])
def test_matches_nlme_varident(data, nlme, key, kwargs):
    ref = nlme[key]
    res = mb.fit("y ~ x + (1|a)", data, residual_groups="g", **kwargs)
    vc = _vc(res)
    np.testing.assert_allclose([vc[f"Residual:{c}"] for c in CLASSES], [ref["residual"][c] for c in CLASSES],
                               rtol=2e-5)
    assert vc["a"] == pytest.approx(ref["a"], rel=2e-5)
    # the criterion: no worse than nlme's (equal to 1e-8 here)
    assert res.loglik == pytest.approx(ref["logLik"], abs=1e-7)
    assert res.loglik >= ref["logLik"] - 1e-8
    fe = res.fixed_effects
    for name in ["(Intercept)", "x"]:
        assert fe.loc[name, "estimate"] == pytest.approx(ref["fixed"][name], rel=1e-6)
        assert fe.loc[name, "std_error"] == pytest.approx(ref["fixed_se"][name], rel=1e-5)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_estimates_equal_dense_v(data, dense, method):
    y, X, Z, G, _ = dense
    w = data["w"].to_numpy()
    reml = method == "REML"

    est, best = dense_fit(y, X, None, [Z @ Z.T] + [np.diag((G == i) / w) for i in range(3)], reml)
    res = mb.fit("y ~ x + (1|a)", data, residual_groups="g", weights="w", method=method)
    vc = _vc(res)
    np.testing.assert_allclose([vc["a"]] + [vc[f"Residual:{c}"] for c in CLASSES], est, rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(best, abs=1e-7 * abs(best))
    assert -2 * res.loglik == pytest.approx(
        dense_parts(y, X, Z, G, vc["a"], [vc[f"Residual:{c}"] for c in CLASSES], w, reml)[0], rel=1e-11)
    # standard errors of every component exist; the reference class is the first one
    assert res.variance_components["std_error"].notna().all()
    assert res.residual_variance == pytest.approx(vc["Residual:A"], rel=1e-12)


def test_known_class_variances_blup_equals_dense(data, dense):
    y, X, Z, G, levels = dense
    w = data["w"].to_numpy()
    rvars = {"A": 0.6, "B": 1.8, "C": 3.5}
    res = mb.fit("y ~ x + (1|a)", data, residual_groups="g", weights="w",
                 variances={"a": 1.3, "residual": rvars})
    assert res.variances_known and res.optimizer is None
    m2ll, beta, u, XtViX = dense_parts(y, X, Z, G, 1.3, [rvars[c] for c in CLASSES], w, True)
    assert -2 * res.loglik == pytest.approx(m2ll, rel=1e-11)
    np.testing.assert_allclose(res.fixed_effects["estimate"].to_numpy(), beta, rtol=1e-9)
    np.testing.assert_allclose(res.vcov_fixed.to_numpy(), np.linalg.inv(XtViX), rtol=1e-8)
    blup = res.random_effects("a").set_index("level")["estimate"]
    np.testing.assert_allclose(blup[levels].to_numpy(), u, rtol=1e-8, atol=1e-10)
    vc = _vc(res)
    assert [vc[f"Residual:{c}"] for c in CLASSES] == [rvars[c] for c in CLASSES]
    assert res.npar == 2 + 1 + 3


def test_one_class_held_others_estimated(data, dense):
    y, X, Z, G, _ = dense
    est, best = dense_fit(y, X, 2.0 * np.diag((G == 1).astype(float)),
                          [Z @ Z.T, np.diag((G == 0).astype(float)), np.diag((G == 2).astype(float))], True)
    res = mb.fit("y ~ x + (1|a)", data, residual_groups="g", fixed_variances={"residual": {"B": 2.0}})
    vc = _vc(res)
    assert vc["Residual:B"] == 2.0
    np.testing.assert_allclose([vc["a"], vc["Residual:A"], vc["Residual:C"]], est, rtol=2e-5)
    assert -2 * res.loglik == pytest.approx(best, abs=1e-7 * abs(best))
    assert res.optimizer.held == ("Residual:B",)
    se = res.variance_components.set_index(["group", "term1"])["std_error"]
    assert np.isnan(se[("Residual", "B")]) and se[("Residual", "A")] > 0


def test_summary_lists_one_residual_per_class(data):
    res = mb.fit("y ~ x + (1|a)", data, residual_groups="g")
    text = str(res.summary())
    vc = res.variance_components
    assert list(vc.loc[vc["group"] == "Residual", "term1"]) == CLASSES
    for c in CLASSES:
        assert f"{vc.loc[(vc['group'] == 'Residual') & (vc['term1'] == c), 'estimate'].iloc[0]:.4f}" in text


def test_errors(data):
    with pytest.raises(CovarianceError, match="dict class -> variance"):
        mb.fit("y ~ x + (1|a)", data, residual_groups="g", variances={"a": 1.0, "residual": 1.0})
    with pytest.raises(CovarianceError, match="'Z'"):
        mb.fit("y ~ x + (1|a)", data, residual_groups="g", variances={"residual": {"Z": 1.0}})
    with pytest.raises(CovarianceError, match="positive"):
        mb.fit("y ~ x + (1|a)", data, residual_groups="g", variances={"residual": {"A": 0.0}})
    with pytest.raises(CovarianceError, match=r"missing \['residual\[C\]'\].*fixed_variances="):
        mb.fit("y ~ x + (1|a)", data, residual_groups="g", variances={"a": 1.0, "residual": {"A": 1.0, "B": 1.0}})
    with pytest.raises(mb.errors.FormulaError, match="nope"):
        mb.fit("y ~ x + (1|a)", data, residual_groups="nope")


def test_summary_heritability_per_residual_class():
    pop = mb.datasets.simulate(600, n_generations=4, recorded_fraction=0.8, seed=3)
    rec = pop.records.assign(cls=lambda d: np.where(np.arange(len(d)) % 2 == 0, "A", "B"))
    ped = mb.Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
    res = mb.fit("y ~ 1 + (1|id)", rec, cov={"id": ped}, residual_groups="cls")
    h2 = next(t for _, t in res.summary().tables if "id (residual A)" in t.index)
    for c in ("A", "B"):
        expect = res.heritability("id", residual_class=c)
        assert h2.loc[f"id (residual {c})", "estimate"] == pytest.approx(expect["estimate"], rel=1e-12)
