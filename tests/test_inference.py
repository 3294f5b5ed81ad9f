"""Satterthwaite t tests pinned to lmerTest, F tests, Kenward-Roger, intervals and ratios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mixedblup as mb
from tests.conftest import lme4_reference
from tests.test_lme4_known_variances import CASES


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    case = request.param
    ref = lme4_reference(case)
    dataset, formula = CASES[case]
    res = mb.fit(formula, mb.datasets.load(dataset), method="REML" if ref["REML"] else "ML")
    return case, ref, res


@pytest.fixture(scope="module")
def sleep():
    return mb.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return mb.fit("Reaction ~ Days + (Days|Subject)", sleep)


def test_satterthwaite_df_and_p_match_lmertest(fitted):
    """End to end: our REML/ML optimum is at least as good as lme4's but not identical (about
    1e-4 relative in SEs), which moves the tiny p-values of strong effects (1e-18) by up to a few
    1e-3 relative; the df agree to 1e-3 and the p-values to 1e-3 on the log scale."""
    _, ref, res = fitted
    fe = res.fixed_effects
    np.testing.assert_allclose(fe["df"], np.atleast_1d(ref["fixef"]["df_satterthwaite"]), rtol=1e-3)
    np.testing.assert_allclose(np.log(fe["p_value"]), np.log(np.atleast_1d(ref["fixef"]["p_satterthwaite"])),
                               rtol=1e-3)
    np.testing.assert_allclose(fe["statistic"], np.atleast_1d(ref["fixef"]["t"]), rtol=1e-3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_satterthwaite_at_lme4_estimates_matches_lmertest_closely(case):
    """At lme4's own variance estimates the Satterthwaite df and p equal lmerTest's to 1e-4."""
    from mixedblup.design import build_design
    from mixedblup.inference import satterthwaite_df, theta_from_sigmas, varpar_info
    from tests.test_lme4_known_variances import lme4_variances

    ref = lme4_reference(case)
    dataset, formula = CASES[case]
    data = mb.datasets.load(dataset)
    design = build_design(mb.parse_formula(formula, data.columns), data)
    variances = lme4_variances(ref, [(t.name, t.columns) for t in design.terms])
    res = mb.fit(formula, data, variances=variances, method="REML" if ref["REML"] else "ML")
    theta = theta_from_sigmas(res._design, res._sigmas, res.residual_variance)
    info = varpar_info(res._cp, res._design, theta, res.residual_variance, bool(ref["REML"]))
    C = res.vcov_fixed.to_numpy()
    df = satterthwaite_df(info, C, np.eye(len(C)))
    t = res.fixed_effects["statistic"].to_numpy()
    np.testing.assert_allclose(df, np.atleast_1d(ref["fixef"]["df_satterthwaite"]), rtol=1e-4)
    np.testing.assert_allclose(2 * stats.t.sf(np.abs(t), df), np.atleast_1d(ref["fixef"]["p_satterthwaite"]),
                               rtol=1e-4)


def test_t_interval_uses_satterthwaite_df(fitted):
    _, _, res = fitted
    fe = res.fixed_effects
    crit = stats.t.ppf(0.975, fe["df"])
    np.testing.assert_allclose(fe["ci_upper"], fe["estimate"] + crit * fe["std_error"], rtol=1e-12)
    np.testing.assert_allclose(fe["ci_lower"], fe["estimate"] - crit * fe["std_error"], rtol=1e-12)


def test_known_variances_give_z_tests(pigs):
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    fe = res.fixed_effects
    assert np.isinf(fe["df"]).all()
    z = fe["estimate"] / fe["std_error"]
    np.testing.assert_allclose(fe["p_value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    table = res.anova()
    assert np.isinf(table["den_df"]).all()


def test_anova_single_df_term_is_squared_t(sleep_fit):
    table = sleep_fit.anova()
    fe = sleep_fit.fixed_effects
    assert list(table.index) == ["Days"]
    assert table.loc["Days", "statistic"] == pytest.approx(fe.loc["Days", "statistic"] ** 2, rel=1e-10)
    assert table.loc["Days", "den_df"] == pytest.approx(fe.loc["Days", "df"], rel=1e-10)
    assert table.loc["Days", "p_value"] == pytest.approx(fe.loc["Days", "p_value"], rel=1e-8)
    assert table.loc["Days", "mean_sq"] == pytest.approx(table.loc["Days", "statistic"] * sleep_fit.residual_variance)


def _split_plot(seed: int = 1) -> pd.DataFrame:
    """Balanced split plot: treatment on whole plots (blocks), time within."""
    rng = np.random.default_rng(seed)
    rows = []
    for plot in range(12):
        trt = "abc"[plot % 3]
        u = rng.normal(0, 2)
        for time in range(4):
            rows.append({"plot": f"p{plot}", "trt": trt, "time": f"t{time}",
                         "y": {"a": 0, "b": 1, "c": 3}[trt] + 0.5 * time + u + rng.normal()})
    return pd.DataFrame(rows)


def test_multi_df_f_test_has_exact_df_in_a_balanced_split_plot():
    data = _split_plot()
    res = mb.fit("y ~ trt + time + (1|plot)", data)
    table = res.anova()
    # whole-plot factor: 12 plots - 3 treatments = 9 df; within plots: 48 - 12 - 3 = 33
    assert table.loc["trt", "num_df"] == 2
    assert table.loc["trt", "den_df"] == pytest.approx(9.0, rel=1e-3)
    assert table.loc["time", "num_df"] == 3
    assert table.loc["time", "den_df"] == pytest.approx(33.0, rel=1e-3)
    kr = res.anova(ddf="Kenward-Roger")
    np.testing.assert_allclose(kr["den_df"], [9.0, 33.0], rtol=1e-6)
    np.testing.assert_allclose(kr["statistic"], table["statistic"], rtol=1e-5)
    # the F statistic of the balanced design equals the classical split-plot ANOVA F
    plot_means = data.groupby("plot").agg(y=("y", "mean"), trt=("trt", "first"))
    ss_trt = 4 * ((plot_means.groupby("trt")["y"].mean() - data["y"].mean()) ** 2).sum() * 4
    ss_plots = 4 * ((plot_means["y"] - plot_means.groupby("trt")["y"].transform("mean")) ** 2).sum()
    f_classic = (ss_trt / 2) / (ss_plots / 9)
    assert table.loc["trt", "statistic"] == pytest.approx(f_classic, rel=1e-4)


def test_anova_type_one_and_chi2(sleep):
    res = mb.fit("Reaction ~ Days + I(Days ** 2) + (1|Subject)", sleep)
    t1 = res.anova(type="I")
    t3 = res.anova(type="III")
    assert list(t1.index) == list(t3.index) == ["Days", "I(Days ** 2)"]
    # the last term is tested the same way by both types
    assert t1.iloc[-1]["statistic"] == pytest.approx(t3.iloc[-1]["statistic"], rel=1e-8)
    chi = res.anova(ddf="none")
    assert np.isinf(chi["den_df"]).all()
    np.testing.assert_allclose(chi["p_value"], stats.chi2.sf(chi["statistic"] * chi["num_df"], chi["num_df"]))


def test_type_three_refuses_contained_terms():
    data = _split_plot()
    res = mb.fit("y ~ trt * time + (1|plot)", data)
    with pytest.raises(mb.MixedBlupError, match="contained"):
        res.anova(type="III")
    assert len(res.anova(type="marginal")) == 3
    assert len(res.anova(type="I")) == 3


def test_contrast_matches_coefficient_test(sleep_fit):
    fe = sleep_fit.fixed_effects
    one = sleep_fit.contrast(pd.Series({"Days": 1.0}))
    assert one["t"] == pytest.approx(fe.loc["Days", "statistic"], rel=1e-12)
    assert one["den_df"] == pytest.approx(fe.loc["Days", "df"], rel=1e-10)
    two = sleep_fit.contrast(np.eye(2))
    assert two["num_df"] == 2
    with pytest.raises(ValueError, match="columns"):
        sleep_fit.contrast(np.eye(3))


def test_kenward_roger_exact_on_balanced_data(sleep_fit):
    kr = sleep_fit.contrast([[0, 1]], ddf="Kenward-Roger")
    assert kr["den_df"] == pytest.approx(17.0, rel=1e-8)
    assert kr["statistic"] == pytest.approx(sleep_fit.fixed_effects.loc["Days", "statistic"] ** 2, rel=1e-6)


def test_wald_confint(sleep_fit):
    ci = sleep_fit.confint()
    fe = sleep_fit.fixed_effects
    np.testing.assert_allclose(ci.loc[["(Intercept)", "Days"], "lower"], fe["ci_lower"])
    vc = sleep_fit.variance_components
    z = stats.norm.ppf(0.975)
    assert ci.loc["var(Residual)", "upper"] == pytest.approx(vc["estimate"].iloc[-1] + z * vc["std_error"].iloc[-1])
    assert (ci.loc[[i for i in ci.index if i.startswith("var(")], "lower"] >= 0).all()
    assert list(sleep_fit.confint(parm=["Days"]).index) == ["Days"]


def test_profile_interval_is_where_deviance_rises_by_chi2_quantile():
    from mixedblup.inference import _profile_setup, _profiled_deviance

    res = mb.fit("Yield ~ 1 + (1|Batch)", mb.datasets.load("dyestuff"), method="ML")
    ci = res.confint(method="profile")
    cut = stats.chi2.ppf(0.95, 1)
    for what, label in [("Batch", "var(Batch)"), ("residual", "var(Residual)")]:
        prof, embed, fixed, _, _ = _profile_setup(res, what)
        d_hat = prof.deviance(prof.pack())
        for bound in ("lower", "upper"):
            v = ci.loc[label, bound]
            assert _profiled_deviance(prof, embed, fixed, v, prof.pack()) - d_hat == pytest.approx(cut, abs=2e-3)
        assert ci.loc[label, "lower"] < ci.loc[label, "estimate"] < ci.loc[label, "upper"]
    # lme4's profile interval for the ML fit (confint(fm1ML)): sigma in [38.23, 67.66]
    lo, hi = np.sqrt(ci.loc["var(Residual)", ["lower", "upper"]])
    assert lo == pytest.approx(38.23, abs=0.01) and hi == pytest.approx(67.66, abs=0.01)


def test_profile_table_has_zero_at_estimate():
    res = mb.fit("Yield ~ 1 + (1|Batch)", mb.datasets.load("dyestuff"))
    prof = res.profile("Batch", n=7)
    at = prof.loc[prof["zeta"].abs().idxmin()]
    assert at["zeta"] == 0 and at["value"] == pytest.approx(res.variance_components["estimate"].iloc[0])
    assert (np.diff(prof["zeta"]) > 0).all()


def test_ratio_delta_method_by_finite_differences(sleep):
    res = mb.fit("Reaction ~ Days + (1|Subject)", sleep)
    r = res.ratio("Subject")
    vc = res.variance_components["estimate"].to_numpy()
    V = res.vcov_variance_components.to_numpy()
    assert r["estimate"] == pytest.approx(vc[0] / vc.sum())
    f = lambda x: x[0] / x.sum()
    g = np.array([(f(vc + h) - f(vc - h)) / (2 * h[i]) for i, h in enumerate(np.diag(vc * 1e-6))])
    assert r["std_error"] == pytest.approx(np.sqrt(g @ V @ g), rel=1e-5)
    h2 = res.heritability("Subject")
    assert h2["estimate"] == pytest.approx(r["estimate"]) and h2.name == "h2(Subject)"
    only = res.ratio("Subject", over=["Subject"])
    assert only["estimate"] == 1.0
    with pytest.raises(KeyError):
        res.ratio("nope")


def test_heritability_profile_interval_brackets_estimate():
    res = mb.fit("Yield ~ 1 + (1|Batch)", mb.datasets.load("dyestuff"))
    h2 = res.heritability("Batch", method="profile")
    assert 0 <= h2["ci_lower"] < h2["estimate"] < h2["ci_upper"] <= 1
