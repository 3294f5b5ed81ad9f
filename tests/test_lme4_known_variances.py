"""Known-variance path pinned to lme4: plugging lme4's estimates in must reproduce lme4.

At lme4's variance estimates the BLUE, its covariance, the conditional modes, their
conditional SDs, the fitted values and the log-likelihood are deterministic
functions of the data, so they must agree with lme4 to near machine precision
(limited by the 15 digits the JSON files carry).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from tests.conftest import lme4_reference

CASES = {
    "sleepstudy_slopes_reml": ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    "sleepstudy_slopes_ml": ("sleepstudy", "Reaction ~ Days + (Days|Subject)"),
    "sleepstudy_uncorr_reml": ("sleepstudy", "Reaction ~ Days + (Days||Subject)"),
    "sleepstudy_intercept_reml": ("sleepstudy", "Reaction ~ Days + (1|Subject)"),
    "dyestuff_reml": ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    "dyestuff_ml": ("dyestuff", "Yield ~ 1 + (1|Batch)"),
    "penicillin_crossed_reml": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)"),
    "pastes_nested_reml": ("pastes", "strength ~ 1 + (1|batch/cask)"),
}


def lme4_variances(ref: dict, res_terms: list[tuple[str, tuple[str, ...]]]) -> dict:
    """Translate lme4's VarCorr table into ``variances=`` (lme4 names ``||`` terms g, g.1 ...)."""
    vc = pd.DataFrame(ref["varcorr"])
    out: dict = {"residual": float(vc.loc[vc.grp == "Residual", "vcov"].iloc[0])}
    for name, columns in res_terms:
        k = len(columns)
        sigma = np.zeros((k, k))
        for _, row in vc.iterrows():
            if re.sub(r"\.\d+$", "", row.grp) != name:
                continue
            i = columns.index(row.var1)
            j = i if pd.isna(row.var2) else columns.index(row.var2)
            sigma[i, j] = sigma[j, i] = row.vcov
        out[name] = sigma
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_known_variances_reproduce_lme4(case):
    ref = lme4_reference(case)
    dataset, formula = CASES[case]
    data = mb.datasets.load(dataset)
    method = "REML" if ref["REML"] else "ML"
    # first a fit to learn the term layout, then the real one at lme4's variances
    spec = mb.parse_formula(formula, data.columns)
    from mixedblup.design import build_design

    design = build_design(spec, data)
    variances = lme4_variances(ref, [(t.name, t.columns) for t in design.terms])
    res = mb.fit(formula, data, variances=variances, method=method)

    fe = res.fixed_effects
    np.testing.assert_allclose(fe["estimate"], np.atleast_1d(ref["fixef"]["estimate"]), rtol=1e-7)
    np.testing.assert_allclose(fe["std_error"], np.atleast_1d(ref["fixef"]["se"]), rtol=1e-6)
    np.testing.assert_allclose(res.vcov_fixed.to_numpy(), np.atleast_2d(ref["vcov_beta"]), rtol=1e-6)
    assert res.loglik == pytest.approx(ref["loglik"], rel=1e-9)
    assert res.aic == pytest.approx(ref["AIC"], rel=1e-9)
    assert res.bic == pytest.approx(ref["BIC"], rel=1e-9)
    assert res.nobs == ref["nobs"]
    np.testing.assert_allclose(res.fitted.iloc[:10], ref["fitted_head"], rtol=1e-8)
    np.testing.assert_allclose(res.residuals.iloc[:10], ref["resid_head"], rtol=1e-6, atol=1e-8)

    ranef = pd.DataFrame(ref["ranef"])
    ours = res.random_effects()
    ours = ours.assign(grpvar=ours["group"].str.replace(r"\.\d+$", "", regex=True))
    merged = ranef.merge(ours, left_on=["grpvar", "grp", "term"], right_on=["grpvar", "level", "term"],
                         how="left", validate="one_to_one")
    assert merged["estimate"].notna().all(), "every lme4 conditional mode has a match"
    np.testing.assert_allclose(merged["estimate"], merged["condval"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(merged["cond_sd"], merged["condsd"], rtol=1e-6)
