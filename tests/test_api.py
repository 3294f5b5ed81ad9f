"""fit(): composition of the stages, invariances and the results object."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixedblup as mb

V_SLEEP = {"Subject": np.array([[612.1, 9.6], [9.6, 35.07]]), "residual": 654.94}


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return mb.fit("Reaction ~ Days + (Days|Subject)", sleep, variances=V_SLEEP)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_row_order_invariance(sleep, sleep_fit, seed):
    shuffled = sleep.sample(frac=1.0, random_state=seed % 2**32)
    res = mb.fit("Reaction ~ Days + (Days|Subject)", shuffled, variances=V_SLEEP)
    pd.testing.assert_frame_equal(res.fixed_effects, sleep_fit.fixed_effects, rtol=1e-9)
    a = res.random_effects().set_index(["level", "term"]).sort_index()
    b = sleep_fit.random_effects().set_index(["level", "term"]).sort_index()
    pd.testing.assert_frame_equal(a, b, rtol=1e-8, atol=1e-10)
    pd.testing.assert_series_equal(res.fitted.sort_index(), sleep_fit.fitted.sort_index(), rtol=1e-9)
    assert res.loglik == pytest.approx(sleep_fit.loglik, rel=1e-11)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(st.permutations(list(range(18))), st.sampled_from(["int", "str", "category"]))
def test_relabelling_levels(sleep, sleep_fit, perm, kind):
    old = sorted(sleep["Subject"].unique())
    new = {o: f"S{p:02d}" for o, p in zip(old, perm)}
    if kind == "int":
        new = {o: 1000 + p for o, p in zip(old, perm)}
    relabelled = sleep.assign(Subject=sleep["Subject"].map(new))
    if kind == "category":
        relabelled["Subject"] = relabelled["Subject"].astype("category")
    res = mb.fit("Reaction ~ Days + (Days|Subject)", relabelled, variances=V_SLEEP)
    back = {str(v): k for k, v in new.items()}
    ours = res.random_effects().assign(level=lambda t: t["level"].map(back))
    a = ours.set_index(["level", "term"]).sort_index()
    b = sleep_fit.random_effects().set_index(["level", "term"]).sort_index()
    pd.testing.assert_frame_equal(a, b, rtol=1e-8, atol=1e-10)


def test_large_lambda_shrinks_blups_to_zero(pigs):
    for lam, bound in [(1e3, 1e-4), (1e6, 1e-7), (1e9, 1e-10)]:
        res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.08 / lam, "residual": 0.08})
        assert np.abs(res.random_effects()["estimate"]).max() < bound
    # and the fixed effects approach OLS on sex alone
    ols = pigs.groupby("sex")["weight"].mean()
    np.testing.assert_allclose(res.fixed_effects["estimate"], ols[["F", "M"]], rtol=1e-8)


def test_results_are_frozen_and_indexed_like_input(pigs):
    data = pigs.set_index(pd.Index([f"r{i}" for i in range(6)]))
    res = mb.fit("weight ~ 0 + sex + (1|dam)", data, variances={"dam": 0.016, "residual": 0.08})
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.loglik = 0.0
    assert list(res.fitted.index) == list(data.index) == list(res.residuals.index)
    np.testing.assert_allclose(res.fitted + res.residuals, data["weight"])
    assert res.nobs == 6 and len(res.dropped_rows) == 0


def test_dropped_rows_listed_on_result(pigs):
    data = pigs.copy()
    data.loc[2, "weight"] = np.nan
    with pytest.warns(mb.RowsDroppedWarning, match="1 of 6 rows"):
        res = mb.fit("weight ~ 0 + sex + (1|dam)", data, variances={"dam": 0.016, "residual": 0.08})
    assert list(res.dropped_rows) == [2]
    assert 2 not in res.fitted.index and res.nobs == 5


def test_tables_have_the_documented_columns(sleep_fit):
    fe = sleep_fit.fixed_effects
    assert list(fe.index) == ["(Intercept)", "Days"]
    assert {"estimate", "std_error", "statistic", "p_value", "dropped"} <= set(fe.columns)
    re = sleep_fit.random_effects()
    assert {"group", "level", "term", "estimate", "std_error", "pev", "reliability"} <= set(re.columns)
    assert all(isinstance(level, str) for level in re["level"])
    assert len(sleep_fit.random_effects("Subject")) == 36
    with pytest.raises(KeyError, match="Subject"):
        sleep_fit.random_effects("nope")
    vc = sleep_fit.variance_components
    assert list(vc.columns[:5]) == ["group", "term1", "term2", "estimate", "std_error"]
    assert list(vc["group"]) == ["Subject", "Subject", "Subject", "Residual"]
    assert list(vc["term2"]) == ["", "", "Days", ""]
    np.testing.assert_allclose(vc["estimate"], [612.1, 35.07, 9.6, 654.94])
    assert pd.api.types.is_float_dtype(vc["estimate"]) and pd.api.types.is_float_dtype(fe["estimate"])


def test_summary_text_and_html(sleep_fit):
    text = str(sleep_fit.summary())
    for needle in ["Linear mixed model", "Fixed effects", "Variance components", "(Intercept)",
                   "Days", "Residual", "Log-likelihood", "AIC", "BIC", "No. observations"]:
        assert needle in text
    html = sleep_fit._repr_html_()
    assert html.count("<table") >= 3 and "Subject" in html
    assert sleep_fit.summary().tables[0][1]["estimate"].dtype == float  # numeric until rendered


def test_library_prints_nothing(pigs, capsys):
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    res.summary()
    _ = res.mme
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_formula_without_random_terms(pigs):
    with pytest.raises(mb.FormulaError, match="not a mixed model"):
        mb.fit("weight ~ sex", pigs, variances={"residual": 1.0})


@pytest.mark.parametrize("variances, message", [
    ({"dam": 0.016}, "missing.*residual"),
    ({"residual": 0.08}, r"missing \['dam'\]"),
    ({"dam": 0.016, "sire": 1.0, "residual": 0.08}, "sire"),
    ({"dam": -0.016, "residual": 0.08}, "positive semi-definite"),
    ({"dam": 0.016, "residual": 0.0}, "positive"),
    ({"dam": [[1, 0], [0, 1]], "residual": 0.08}, "shape"),
])
def test_bad_variances(pigs, variances, message):
    with pytest.raises(mb.CovarianceError, match=message):
        mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances=variances)


def test_variances_accept_dataframe_and_uncorrelated_vector(sleep):
    cols = ["(Intercept)", "Days"]
    frame = pd.DataFrame(V_SLEEP["Subject"], index=cols, columns=cols).loc[["Days", "(Intercept)"],
                                                                           ["Days", "(Intercept)"]]
    a = mb.fit("Reaction ~ Days + (Days|Subject)", sleep, variances={"Subject": frame, "residual": 654.94})
    b = mb.fit("Reaction ~ Days + (Days|Subject)", sleep, variances=V_SLEEP)
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"])
    c = mb.fit("Reaction ~ Days + (Days||Subject)", sleep, variances={"Subject": [600.0, 35.0], "residual": 650})
    assert list(c.variance_components["term1"]) == ["(Intercept)", "Days", ""]
    with pytest.raises(mb.CovarianceError, match="uncorrelated"):
        mb.fit("Reaction ~ Days + (Days||Subject)", sleep,
               variances={"Subject": [[600.0, 5], [5, 35.0]], "residual": 650})


def test_zero_variance_is_allowed_and_gives_zero_blups(pigs):
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.0, "residual": 0.08})
    assert (res.random_effects()["estimate"] == 0).all()
    assert (res.random_effects()["pev"] == 0).all()


def test_fixed_and_random_same_factor_warns(pigs):
    with pytest.warns(mb.DataWarning, match="both a fixed effect and a grouping factor"):
        mb.fit("weight ~ dam + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
