"""Textbook values: the course notes' pig example and Mrode (2005) Example 3.1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb

# Course notes (Steibel & Putz, AN S 562A), "Variance ratio and solutions to MME":
# lambda, sexF, sexM, dam474, dam475 to 4 decimals.
LAMBDA_TABLE = [
    (1e-4, 1.7183, 1.4683, 0.0017, -0.0017),
    (0.05, 1.7184, 1.4683, 0.0016, -0.0016),
    (0.1, 1.7184, 1.4683, 0.0016, -0.0016),
    (0.3, 1.7185, 1.4683, 0.0015, -0.0015),
    (0.5, 1.7186, 1.4683, 0.0014, -0.0014),
    (0.75, 1.7187, 1.4683, 0.0013, -0.0013),
    (1, 1.7188, 1.4682, 0.0012, -0.0012),
    (5, 1.7195, 1.4681, 0.0005, -0.0005),
    (10, 1.7197, 1.4681, 0.0003, -0.0003),
    (20, 1.7198, 1.4680, 0.0002, -0.0002),
]


@pytest.mark.parametrize("lam, sex_f, sex_m, d474, d475", LAMBDA_TABLE)
def test_pig_lambda_table(pigs, lam, sex_f, sex_m, d474, d475):
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.08 / lam, "residual": 0.08})
    assert res.fixed_effects["estimate"].round(4).tolist() == [sex_f, sex_m]
    assert res.random_effects("dam")["estimate"].round(4).tolist() == [d474, d475]


def test_pig_mme_matches_notes(pigs):
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    lhs, rhs = res.mme.scaled()
    np.testing.assert_allclose(lhs.to_numpy(), [[1, 0, 1, 0], [0, 5, 2, 3], [1, 2, 8, 0], [0, 3, 0, 8]])
    np.testing.assert_allclose(rhs.to_numpy(), [1.72, 7.34, 4.66, 4.40])
    assert list(lhs.index) == ["sex[F]", "sex[M]", "dam[474]", "dam[475]"]
    blocks = res.mme.blocks()
    np.testing.assert_allclose(blocks["C22"].to_numpy() * 0.08, [[8, 0], [0, 8]])


def test_pig_gls_equivalence_and_standard_errors(pigs):
    """X'V^-1X, X'V^-1y and (X'V^-1X)^-1 as printed in the notes; var(beta) = C11 exactly."""
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    X = np.array([[1, 0]] + [[0, 1]] * 5, dtype=float)
    Z = np.array([[1, 0]] * 3 + [[0, 1]] * 3, dtype=float)
    V = Z @ Z.T * 0.016 + np.eye(6) * 0.08
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    np.testing.assert_allclose(XtViX, [[10.9375, -3.125], [-3.125, 42.1875]], rtol=1e-12)
    np.testing.assert_allclose(np.round(X.T @ Vi @ pigs["weight"].to_numpy(), 2), [14.22, 56.56])
    cov = np.linalg.inv(XtViX)
    np.testing.assert_allclose(np.round(cov, 4), [[0.0934, 0.0069], [0.0069, 0.0242]])
    np.testing.assert_allclose(res.vcov_fixed.to_numpy(), cov, rtol=1e-12)
    np.testing.assert_allclose(res.fixed_effects["std_error"], np.sqrt(np.diag(cov)), rtol=1e-12)
    np.testing.assert_allclose(res.mme.inverse().iloc[:2, :2].to_numpy(), cov, rtol=1e-10)


def test_pig_pev_and_var_uhat(pigs):
    """PEV = C22 and var(u_hat) = G - C22 (course notes, 'Variance of predictors')."""
    res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs, variances={"dam": 0.016, "residual": 0.08})
    c22 = res.mme.inverse().iloc[2:, 2:].to_numpy()
    table = res.random_effects("dam")
    np.testing.assert_allclose(table["pev"], np.diag(c22), rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], np.sqrt(np.diag(c22)), rtol=1e-12)
    np.testing.assert_allclose(table["reliability"], 1 - np.diag(c22) / 0.016, rtol=1e-12)
    # var(u_hat) = G - C22 equals the direct covariance of u_hat = G Z' P y
    X = np.array([[1, 0]] + [[0, 1]] * 5, dtype=float)
    Z = np.array([[1, 0]] * 3 + [[0, 1]] * 3, dtype=float)
    V = Z @ Z.T * 0.016 + np.eye(6) * 0.08
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.inv(X.T @ Vi @ X) @ X.T @ Vi
    var_uhat = 0.016 * Z.T @ P @ Z * 0.016
    np.testing.assert_allclose(0.016 * np.eye(2) - c22, var_uhat, atol=1e-14)
    np.testing.assert_allclose(table["var_blup"], np.diag(var_uhat), atol=1e-14)


# Mrode (2005), Example 3.1: sigma2_a = 20, sigma2_e = 40.  Published solutions (p. 43).
MRODE_SEX = {"sex[F]": 3.404, "sex[M]": 4.359}
MRODE_EBV = {"1": 0.098, "2": -0.019, "3": -0.041, "4": -0.009, "5": -0.186, "6": 0.177,
             "7": -0.249, "8": 0.183}


def test_mrode_3_1_animal_model_published_blups():
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    data = mb.datasets.load("mrode_3_1")
    res = mb.fit("wwg ~ 0 + sex + (1|calf)", data, cov={"calf": ped},
                 variances={"calf": 20.0, "residual": 40.0})
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_SEX.items():
        assert round(fe[name], 3) == value
    ebv = res.random_effects("calf").set_index("level")
    assert set(ebv.index) == set(MRODE_EBV), "animals without records (1-3) get EBVs"
    for animal, value in MRODE_EBV.items():
        assert round(ebv.loc[animal, "estimate"], 3) == value
    assert not ebv.loc[["1", "2", "3"], "has_records"].any()
    assert (ebv["reliability"].between(0, 1)).all()
