"""REML/ML estimation pinned to lme4 and to closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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


def test_criterion_no_worse_than_lme4(fitted):
    _, ref, res = fitted
    assert -2 * res.loglik <= ref["deviance_or_remlcrit"] * (1 + 1e-6)
    assert res.optimizer.converged


def test_variance_components_match_lme4(fitted):
    _, ref, res = fitted
    vc = pd.DataFrame(ref["varcorr"])
    ours = res.variance_components
    for _, row in vc.iterrows():
        group = row.grp.split(".")[0] if row.grp != "Residual" else "Residual"
        if pd.isna(row.var2):
            sel = ours[(ours.group == group) & (ours.term1 == (row.var1 if group != "Residual" else ""))
                       & (ours.term2 == "")]
        else:
            sel = ours[(ours.group == group) & (ours.term1 == row.var1) & (ours.term2 == row.var2)]
        assert len(sel) == 1
        assert sel["estimate"].iloc[0] == pytest.approx(row.vcov, rel=1e-3)


def test_fixed_effects_and_random_effects_match_lme4(fitted):
    _, ref, res = fitted
    fe = res.fixed_effects
    np.testing.assert_allclose(fe["estimate"], np.atleast_1d(ref["fixef"]["estimate"]), rtol=1e-4)
    np.testing.assert_allclose(fe["std_error"], np.atleast_1d(ref["fixef"]["se"]), rtol=1e-3)
    ranef = pd.DataFrame(ref["ranef"])
    ours = res.random_effects()
    ours = ours.assign(grpvar=ours["group"].str.replace(r"\.\d+$", "", regex=True))
    merged = ranef.merge(ours, left_on=["grpvar", "grp", "term"], right_on=["grpvar", "level", "term"])
    assert len(merged) == len(ranef)
    np.testing.assert_allclose(merged["cond_sd"], merged["condsd"], rtol=1e-3)
    scale = np.abs(merged["condval"]).max()
    np.testing.assert_allclose(merged["estimate"], merged["condval"], rtol=1e-3, atol=1e-3 * scale)


def test_variances_never_negative(fitted):
    _, _, res = fitted
    vc = res.variance_components
    assert (vc.loc[vc.term2 == "", "estimate"] >= 0).all()


def test_balanced_one_way_reml_equals_anova():
    """Dyestuff: the REML batch variance is exactly the ANOVA estimate (MSB - MSW) / 5 = 1764.05."""
    data = mb.datasets.load("dyestuff")
    res = mb.fit("Yield ~ 1 + (1|Batch)", data)
    groups = data.groupby("Batch")["Yield"]
    k, a = 5, groups.ngroups
    msw = ((data["Yield"] - groups.transform("mean")) ** 2).sum() / (a * (k - 1))
    msb = k * ((groups.mean() - data["Yield"].mean()) ** 2).sum() / (a - 1)
    vc = res.variance_components.set_index("group")["estimate"]
    assert (msb - msw) / k == pytest.approx(1764.05, rel=1e-12)
    assert vc["Batch"] == pytest.approx((msb - msw) / k, rel=1e-6)
    assert vc["Residual"] == pytest.approx(msw, rel=1e-6)


def test_msb_below_msw_gives_exact_zero_and_singular_warning():
    """A balanced one-way layout whose between mean square is below the within one."""
    rng = np.random.default_rng(7)
    groups = np.repeat(list("abcdef"), 5)
    noise = rng.normal(size=30)
    noise -= pd.Series(noise).groupby(groups).transform("mean").to_numpy() * 0.9  # shrink group means
    data = pd.DataFrame({"y": 10 + noise, "g": groups})
    grp = data.groupby("g")["y"]
    msw = ((data.y - grp.transform("mean")) ** 2).sum() / 24
    msb = 5 * ((grp.mean() - data.y.mean()) ** 2).sum() / 5
    assert msb < msw
    with pytest.warns(mb.SingularFitWarning, match="'g'"):
        res = mb.fit("y ~ 1 + (1|g)", data)
    vc = res.variance_components.set_index("group")["estimate"]
    assert vc["g"] == 0.0
    assert res.optimizer.boundary == ("g",)
    assert vc["Residual"] == pytest.approx(data.y.var(ddof=1), rel=1e-6)
