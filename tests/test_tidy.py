"""broom.mixed vocabulary: tidy, glance, augment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from tests.conftest import lme4_reference


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def res(sleep):
    return mb.fit("Reaction ~ Days + (Days|Subject)", sleep)


def test_tidy_fixed_and_ran_pars(res):
    t = res.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std_error", "statistic", "df", "p_value"]
    assert isinstance(t.index, pd.RangeIndex)
    assert list(t["effect"]) == ["fixed", "fixed", "ran_pars", "ran_pars", "ran_pars", "ran_pars"]
    assert list(t["term"]) == ["(Intercept)", "Days", "sd__(Intercept)", "sd__Days", "cor__(Intercept).Days",
                               "sd__Observation"]
    assert list(t["group"].iloc[2:]) == ["Subject"] * 3 + ["Residual"]
    fe = res.fixed_effects
    np.testing.assert_allclose(t["p_value"].iloc[:2], fe["p_value"])
    ref = pd.DataFrame(lme4_reference("sleepstudy_slopes_reml")["varcorr"])
    np.testing.assert_allclose(t["estimate"].iloc[2:], ref["sdcor"], rtol=2e-3)
    for c in ("estimate", "std_error", "statistic", "df", "p_value"):
        assert t[c].dtype == float


def test_tidy_vcov_scale_and_intervals(res):
    t = res.tidy("ran_pars", scales="vcov", conf_int=True)
    vc = res.variance_components
    np.testing.assert_allclose(t["estimate"], vc["estimate"])
    np.testing.assert_allclose(t["std_error"], vc["std_error"])
    assert list(t["term"]) == ["var__(Intercept)", "var__Days", "cov__(Intercept).Days", "var__Observation"]
    var = t["term"].str.startswith("var__")
    assert (t.loc[var, "conf_low"] >= 0).all()
    assert (t["conf_low"] <= t["estimate"]).all() and (t["estimate"] <= t["conf_high"]).all()


def test_tidy_sd_standard_errors_by_delta_method(res):
    sd = res.tidy("ran_pars")
    var = res.tidy("ran_pars", scales="vcov")
    # d sd / d var = 1 / (2 sd)
    np.testing.assert_allclose(sd["std_error"].iloc[[0, 1, 3]],
                               var["std_error"].iloc[[0, 1, 3]] / (2 * sd["estimate"].iloc[[0, 1, 3]]))
    assert np.isfinite(sd["std_error"].iloc[2])  # correlation SE from the joint covariance


def test_tidy_ran_vals(res):
    t = res.tidy("ran_vals", conf_int=True)
    assert list(t.columns) == ["effect", "group", "level", "term", "estimate", "std_error", "conf_low", "conf_high"]
    re = res.random_effects()
    np.testing.assert_allclose(t["estimate"], re["estimate"])
    np.testing.assert_allclose(t["std_error"], re["std_error"])
    assert len(res.tidy(["fixed", "ran_pars", "ran_vals"])) == 2 + 4 + 36


def test_tidy_rejects_unknown_effects(res):
    with pytest.raises(ValueError, match="effects"):
        res.tidy("random")


def test_glance_one_row_matches_lme4(res):
    g = res.glance()
    ref = lme4_reference("sleepstudy_slopes_reml")
    assert len(g) == 1
    row = g.iloc[0]
    assert row["nobs"] == 180 and row["npar"] == 6
    assert row["logLik"] == pytest.approx(ref["loglik"], rel=1e-6)
    assert row["AIC"] == pytest.approx(ref["AIC"], rel=1e-6)
    assert row["BIC"] == pytest.approx(ref["BIC"], rel=1e-6)
    assert row["REMLcrit"] == pytest.approx(ref["deviance_or_remlcrit"], rel=1e-6)
    assert row["sigma"] == pytest.approx(ref["sigma"], rel=1e-4)
    assert row["df_residual"] == 174


def test_glance_ml_reports_deviance(sleep):
    g = mb.fit("Reaction ~ Days + (1|Subject)", sleep, method="ML").glance()
    assert "deviance" in g.columns and "REMLcrit" not in g.columns


def test_augment_indexed_like_input_rows(sleep, res):
    shuffled = sleep.sample(frac=1.0, random_state=3)
    shuffled.index = [f"r{i}" for i in shuffled.index]
    holes = shuffled.assign(Reaction=shuffled["Reaction"].where(np.arange(180) % 17 != 0))
    with pytest.warns(mb.RowsDroppedWarning):
        fit = mb.fit("Reaction ~ Days + (Days|Subject)", holes)
    a = fit.augment()
    assert a.index.equals(fit.fitted.index)
    assert not a.index.isin(fit.dropped_rows).any()
    np.testing.assert_allclose(a[".fitted"], fit.fitted)
    np.testing.assert_allclose(a[".resid"], fit.residuals)
    np.testing.assert_allclose(a[".fitted"] + a[".resid"], fit._design.y)
    b = fit.augment(holes.assign(extra=1))
    assert "extra" in b.columns and b.index.equals(fit.fitted.index)
    fixed = b[".fixed"].to_numpy()
    np.testing.assert_allclose(fixed, fit.predict(holes.loc[b.index], include_random=False))
    with pytest.raises(mb.DataError, match="lacks"):
        fit.augment(holes.iloc[:10])
