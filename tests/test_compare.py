"""compare(): likelihood ratio tests with boundary-corrected p-values and REML refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import mixedblup as mb
from mixedblup.compare import chibar_pvalue


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def fits(sleep):
    return {
        "int": mb.fit("Reaction ~ Days + (1|Subject)", sleep),
        "uncorr": mb.fit("Reaction ~ Days + (Days||Subject)", sleep),
        "corr": mb.fit("Reaction ~ Days + (Days|Subject)", sleep),
    }


def test_chibar_mixture_tail():
    assert chibar_pvalue(0.0, [0.5, 0.5], [0, 1]) == pytest.approx(1.0)
    assert chibar_pvalue(2.7, [0.5, 0.5], [0, 1]) == pytest.approx(0.5 * stats.chi2.sf(2.7, 1))
    assert chibar_pvalue(5.0, [0.5, 0.5], [1, 2]) == pytest.approx(
        0.5 * stats.chi2.sf(5.0, 1) + 0.5 * stats.chi2.sf(5.0, 2))


def test_adding_one_variance_halves_the_p_value(fits):
    out = mb.compare(fits["uncorr"], fits["int"])
    assert list(out["formula"]) == [fits["int"].formula, fits["uncorr"].formula]  # sorted by npar
    row = out.iloc[1]
    stat = 2 * (fits["uncorr"].loglik - fits["int"].loglik)
    assert row["statistic"] == pytest.approx(stat) and row["df"] == 1
    assert row["p_value_naive"] == pytest.approx(stats.chi2.sf(stat, 1))
    assert row["p_value"] == pytest.approx(0.5 * stats.chi2.sf(stat, 1))
    assert "chi-bar" in row["reference"]


def test_random_slope_with_covariance_uses_stram_lee(fits):
    row = mb.compare(fits["int"], fits["corr"]).iloc[1]
    stat = row["statistic"]
    assert row["df"] == 2
    assert row["p_value"] == pytest.approx(0.5 * stats.chi2.sf(stat, 1) + 0.5 * stats.chi2.sf(stat, 2))


def test_covariance_only_is_plain_chi2(fits):
    out = mb.compare(fits["int"], fits["uncorr"], fits["corr"])
    row = out.iloc[2]
    assert row["df"] == 1 and row["reference"] == "chi2(1)"
    assert row["p_value"] == pytest.approx(row["p_value_naive"])
    assert out["AIC"].notna().all() and out["BIC"].notna().all()


def test_reml_with_different_fixed_effects_is_refused(sleep, fits):
    other = mb.fit("Reaction ~ 1 + (1|Subject)", sleep)
    with pytest.raises(mb.MixedBlupError, match="REML.*different fixed effects.*method='ML'"):
        mb.compare(other, fits["int"])


def test_ml_fixed_effect_comparison(sleep):
    a = mb.fit("Reaction ~ 1 + (1|Subject)", sleep, method="ML")
    b = mb.fit("Reaction ~ Days + (1|Subject)", sleep, method="ML")
    row = mb.compare(a, b).iloc[1]
    assert row["df"] == 1
    assert row["p_value"] == pytest.approx(stats.chi2.sf(row["statistic"], 1))


def test_same_fixed_effects_with_other_coding_is_allowed_under_reml(sleep):
    a = mb.fit("Reaction ~ Days + (1|Subject)", sleep)
    b = mb.fit("Reaction ~ I(Days + 1) + (Days||Subject)", sleep)
    out = mb.compare(a, b)
    assert np.isfinite(out["p_value"].iloc[1])


def test_refusals(sleep, pigs, fits):
    with pytest.raises(mb.MixedBlupError, match="at least two"):
        mb.compare(fits["int"])
    ml = mb.fit("Reaction ~ Days + (1|Subject)", sleep, method="ML")
    with pytest.raises(mb.MixedBlupError, match="different likelihoods"):
        mb.compare(ml, fits["corr"])
    fewer = mb.fit("Reaction ~ Days + (1|Subject)", sleep.iloc[:150])
    with pytest.raises(mb.MixedBlupError, match="different rows"):
        mb.compare(fewer, fits["corr"])
    known = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    with pytest.raises(mb.MixedBlupError, match="given variances"):
        mb.compare(known, known)
