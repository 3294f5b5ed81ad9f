"""The results object: lme4's logLik/AIC/BIC/fitted/residuals, the report, breeding outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from tests.conftest import lme4_reference, maternal_toy
from tests.test_lme4_known_variances import CASES


@pytest.fixture(scope="module", params=sorted(CASES))
def fitted(request):
    case = request.param
    ref = lme4_reference(case)
    dataset, formula = CASES[case]
    res = mb.fit(formula, mb.datasets.load(dataset), method="REML" if ref["REML"] else "ML")
    return case, ref, res


@pytest.fixture(scope="module")
def animal():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    res = mb.fit("wwg ~ 0 + sex + (1|calf)", mb.datasets.load("mrode_3_1"), cov={"calf": ped},
                 variances={"calf": 20, "residual": 40})
    return ped, res


def test_loglik_aic_bic_fitted_residuals_match_lme4(fitted):
    _, ref, res = fitted
    # our optimum is at least as good as lme4's, which stops about 1e-6 short of it
    assert res.loglik == pytest.approx(ref["loglik"], rel=1e-6)
    assert res.aic == pytest.approx(ref["AIC"], rel=1e-6)
    assert res.bic == pytest.approx(ref["BIC"], rel=1e-6)
    assert res.npar == round((ref["AIC"] + 2 * ref["loglik"]) / 2)
    scale = np.abs(ref["resid_head"]).max()
    np.testing.assert_allclose(res.fitted.iloc[:10], ref["fitted_head"], rtol=1e-4)
    np.testing.assert_allclose(res.residuals.iloc[:10], ref["resid_head"], atol=1e-3 * scale)
    assert np.isfinite([res.aic, res.bic]).all()


def test_summary_report_contents(fitted):
    _, _, res = fitted
    s = res.summary()
    text = str(s)
    for needle in ["Fixed effects", "Variance components", "Log-likelihood", "AIC", "BIC", "Converged",
                   "Iterations / evals", "Boundary terms", "Groups:", "No. observations"]:
        assert needle in text
    assert ("REML criterion" if res.method == "REML" else "Deviance") in text
    fe = s.table("Fixed effects")
    assert {"estimate", "std_error", "df", "t", "p_value", "ci_lower", "ci_upper"} <= set(fe.columns)
    assert fe["df"].dtype == float and fe["p_value"].dtype == float
    assert "Satterthwaite" in text


def test_summary_renderers(animal):
    _, res = animal
    s = res.summary()
    assert "Heritability" in str(s)
    h2 = s.table("Heritability (share of the total variance)")
    assert h2.loc["calf", "estimate"] == pytest.approx(20 / 60)
    latex = s.as_latex()
    assert latex.count(r"\begin{tabular}") == 4 and r"\toprule" in latex and "sex[F]" in latex
    md = s.as_markdown()
    assert "| sex[F] |" in md and md.count("\n|---") == 4
    assert "<table" in s.as_html() and s._repr_markdown_() == md
    assert "z" in s.table("Fixed effects").columns  # known variances: z tests


def test_latex_escapes_special_characters():
    from mixedblup.summary import Summary

    s = Summary("t", info=[("a_b", "x & y %")], tables=[("T", pd.DataFrame({"c_1": [1.0]}, index=["r#"]))])
    out = s.as_latex()
    assert r"a\_b" in out and r"x \& y \%" in out and r"c\_1" in out and r"r\#" in out


def test_breeding_values_table(animal):
    _, res = animal
    bv = res.breeding_values()
    assert list(bv.columns) == ["blup", "pev", "sep", "reliability", "accuracy", "has_records"]
    assert list(bv.index) == [str(i) for i in range(1, 9)]
    # Mrode (2005) Example 3.1 solutions for animals 1..8
    np.testing.assert_allclose(bv["blup"], [0.098, -0.019, -0.041, -0.009, -0.186, 0.177, -0.249, 0.183],
                               atol=6e-4)
    np.testing.assert_allclose(bv["sep"], np.sqrt(bv["pev"]))
    np.testing.assert_allclose(bv["reliability"], 1 - bv["pev"] / 20 / np.ones(8), rtol=1e-10)
    np.testing.assert_allclose(bv["accuracy"], np.sqrt(bv["reliability"]))
    assert list(bv["has_records"]) == [False] * 3 + [True] * 5


def test_ebv_decomposition_adds_up(animal):
    ped, res = animal
    dec = res.ebv_decomposition(pedigree=ped)
    recon = (dec["w_pa"] * dec["parent_average"] + dec["w_yd"] * dec["yield_deviation"].fillna(0)
             + dec["w_pc"] * dec["progeny_contribution"].fillna(0))
    np.testing.assert_allclose(recon, dec["ebv"], atol=1e-12)
    np.testing.assert_allclose(dec[["w_pa", "w_yd", "w_pc"]].sum(axis=1), 1.0)
    ebv = dec["ebv"]
    # animal 7 (sire 4, dam 5) has no progeny; its parent average is the mean of its parents' EBVs
    assert dec.loc["7", "parent_average"] == pytest.approx((ebv["4"] + ebv["5"]) / 2)
    assert dec.loc["7", "w_pc"] == 0 and dec.loc["1", "w_yd"] == 0
    # Mrode (2005) section 3.5: animal 4 (sire 1, dam unknown, one record, one progeny 7)
    alpha = 2.0
    d4 = 0.75
    D = 1 + alpha / d4 + alpha * (1 / (4 * 0.5))
    assert dec.loc["4", "w_pa"] == pytest.approx(alpha / d4 / D)
    assert dec.loc["4", "progeny_contribution"] == pytest.approx(2 * ebv["7"] - ebv["5"])


def test_ebv_decomposition_needs_a_pedigree(animal, pigs):
    _, res = animal
    # fit() keeps the pedigree, so no pedigree= is needed
    pd.testing.assert_frame_equal(res.ebv_decomposition(), res.ebv_decomposition(pedigree=res._structures[0]))
    fit = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    with pytest.raises(mb.MixedBlupError, match="no pedigree"):
        fit.ebv_decomposition("dam")


def test_summary_heritability_rows_for_a_joint_pedigree_term():
    """Direct-maternal (joint) term: one heritability row per column, share of every variance."""
    ped, data = maternal_toy()
    res = mb.fit("y ~ 1 + (1|animal) + (1|dam)", data, cov={("animal", "dam"): ped},
                 variances={("animal", "dam"): np.array([[0.6, -0.1], [-0.1, 0.3]]), "residual": 1.0})
    h2 = res.summary().table("Heritability (share of the total variance)")
    assert list(h2.index) == ["animal,dam:animal", "animal,dam:dam"]
    np.testing.assert_allclose(h2["estimate"], [0.6 / 1.9, 0.3 / 1.9])
