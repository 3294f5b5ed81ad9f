"""Textbook values: the course notes' pig example and Mrode's worked examples.

Mrode, R. A. *Linear Models for the Prediction of Animal Breeding Values*, CABI:
2nd ed. (2005) Example 3.1, and 3rd ed. (2014) Examples 3.2 (sire model), 4.1
(repeatability model) and 7.1 (direct and maternal genetic effects).  The 3rd-edition
examples carry the 2nd edition's data and solutions; page numbers below are the 3rd
edition's.  Published solutions are printed to 3 decimals.
"""

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


def published(value: float, printed: float, ulp: float = 0.0005) -> bool:
    """``value`` rounds to the printed 3-decimal ``printed`` (half a unit of the last digit,
    plus a hair for the representation of halves)."""
    return abs(value - printed) <= ulp + 1e-9


# Mrode (2014) Example 3.2, Section 3.4.1 (pp. 46-48): sire model on the data of Example 3.1,
# sigma2_s = 20 / 4 = 5, sigma2_e = 60 - 5 = 55 (alpha = 11); sire 4 is a son of sire 1,
# the dams are unknown.  Published solutions (p. 48): males 4.336, females 3.382,
# sires 1, 3, 4: 0.022, 0.014, -0.043.
MRODE_3_2_SEX = {"sex[M]": 4.336, "sex[F]": 3.382}
MRODE_3_2_SIRE = {"1": 0.022, "3": 0.014, "4": -0.043}


@pytest.mark.parametrize("kind", ["pedigree", "sire-mgs"])
def test_mrode_3_2_sire_model(kind):
    """The sires' relationships as an animal pedigree of the sires and as a sire-MGS
    pedigree (sire 4: sire 1, MGS unknown) give the published solutions."""
    if kind == "pedigree":
        sires = pd.DataFrame({"sire": ["1", "3", "4"], "father": ["0", "0", "1"], "mother": ["0", "0", "0"]})
        structure = mb.Pedigree.from_frame(sires, id="sire", sire="father", dam="mother")
    else:
        sires = pd.DataFrame({"sire": ["1", "3", "4"], "father": ["0", "0", "1"], "mgs": ["0", "0", "0"]})
        structure = mb.SireMGSPedigree.from_frame(sires, id="sire", sire="father", mgs="mgs")
    res = mb.fit("wwg ~ 0 + sex + (1|sire)", mb.datasets.load("mrode_3_1"), cov={"sire": structure},
                 variances={"sire": 5.0, "residual": 55.0})
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_3_2_SEX.items():
        assert published(fe[name], value), (name, fe[name])
    blup = res.random_effects("sire").set_index("level")["estimate"]
    for sire, value in MRODE_3_2_SIRE.items():
        assert published(blup[sire], value), (sire, blup[sire])
    # sire equations (p. 47): Z'Z + 11 A^-1 with A^-1 = [[4/3, 0, -2/3], [0, 1, 0], [-2/3, 0, 4/3]]
    lhs, _ = res.mme.scaled()
    block = lhs.loc[["sire[1]", "sire[3]", "sire[4]"], ["sire[1]", "sire[3]", "sire[4]"]].to_numpy()
    np.testing.assert_allclose(block, [[2 + 44 / 3, 0, -22 / 3], [0, 2 + 11, 0], [-22 / 3, 0, 1 + 44 / 3]],
                               rtol=1e-12)


# Mrode (2014) Example 4.1, Section 4.2.2 (pp. 62-64): repeatability model for fat yield,
# sigma2_a = 20, sigma2_pe = 12, sigma2_e = 28 (Table 4.1 data, pedigree of cows 4-8).
# Solutions with HYS 1 and 3 set to zero (p. 64).
MRODE_4_1_FIXED = {"hys2": 44.065, "hys4": 0.013, "parity[1]": 175.472, "parity[2]": 241.893}
MRODE_4_1_ANIMAL = {"1": 10.148, "2": -3.084, "3": -7.063, "4": 13.581, "5": -18.207, "6": -18.387,
                    "7": 9.328, "8": 24.194}
MRODE_4_1_PE = {"4": 8.417, "5": -7.146, "6": -17.229, "7": -1.390, "8": 17.347}


def test_mrode_4_1_repeatability_model():
    """BLUE, animal BLUPs and permanent-environment BLUPs as published.

    The book's constraint (HYS 1 = HYS 3 = 0; HYS 1, 2 are parity-1 classes, HYS 3, 4
    parity-2 classes) is written as ``parity + hys2 + hys4`` with indicators of HYS 2 and
    4.  Every value rounds to the printed one except the PE of cow 6: -17.2285 here, printed
    -17.229 (the last digit of a half), so all are checked to within 0.001.
    """
    data = mb.datasets.load("mrode_4_1")
    data["hys2"] = (data["hys"] == "2").astype(float)
    data["hys4"] = (data["hys"] == "4").astype(float)
    data["pe"] = data["cow"]
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_4_1_pedigree"), id="animal", sire="sire", dam="dam")
    res = mb.fit("fat ~ 0 + parity + hys2 + hys4 + (1|cow) + (1|pe)", data, cov={"cow": ped},
                 variances={"cow": 20.0, "pe": 12.0, "residual": 28.0})
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_4_1_FIXED.items():
        assert published(fe[name], value), (name, fe[name])
    animal = res.random_effects("cow").set_index("level")["estimate"]
    assert set(animal.index) == set(MRODE_4_1_ANIMAL), "ancestors 1-3 get EBVs"
    for key, value in MRODE_4_1_ANIMAL.items():
        assert published(animal[key], value), (key, animal[key])
    pe = res.random_effects("pe").set_index("level")["estimate"]
    assert set(pe.index) == set(MRODE_4_1_PE)
    for key, value in MRODE_4_1_PE.items():
        assert published(pe[key], value, ulp=0.001), (key, pe[key])


# Mrode (2014) Example 7.1, Section 7.2.1 (pp. 110-113): birth weight of beef calves,
# Table 7.1; g11 = 150, g12 = -40, g22 = 90 (direct, maternal), sigma2_pe = 40 (maternal
# permanent environment of the dam), sigma2_e = 350.  Herd 1 set to zero.  Fixed effects
# as printed on p. 112; the animal and PE solutions (p. 113) as transcribed in
# JuliaBnG/Mrode-4ed-examples.jl (src/chapter-08/ex-1.jl, the same example in the 4th
# edition, Mrode & Pocrnic 2023, Example 8.1), which checks them against its own solution.
MRODE_7_1_FIXED = {"herd[T.2]": 3.386, "herd[T.3]": 1.434, "pen[1]": 34.540, "pen[2]": 27.691}
MRODE_7_1_DIRECT = [0.564, -1.244, 1.165, -0.484, 0.630, -0.859, -1.156, 1.917, -0.553, -1.055,
                    0.385, 0.863, -2.980, 1.751]
MRODE_7_1_MATERNAL = [0.262, -1.583, 0.736, 0.586, -0.507, 0.841, 1.299, -0.158, 0.660, -0.153,
                      0.916, 0.442, 0.093, 0.362]
MRODE_7_1_PE = {"2": -1.701, "5": 0.415, "6": 0.825, "7": 0.461}


def test_mrode_7_1_maternal_model():
    """Direct and maternal genetic effects sharing A with a 2 x 2 covariance, plus the dam's
    permanent environment: BLUE and BLUPs of all 14 animals round to the published ones."""
    data = mb.datasets.load("mrode_7_1")
    data["mpe"] = data["dam"]
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_7_1_pedigree"), id="animal", sire="sire", dam="dam")
    G0 = np.array([[150.0, -40.0], [-40.0, 90.0]])
    res = mb.fit("bw ~ 0 + pen + herd + (1|calf) + (1|dam) + (1|mpe)", data, cov={("calf", "dam"): ped},
                 variances={("calf", "dam"): G0, "mpe": 40.0, "residual": 350.0})
    # the variance ratios printed on p. 111: sigma2_e G0^-1 = [[2.647, 1.176], [1.176, 4.412]]
    np.testing.assert_array_equal(np.round(350.0 * np.linalg.inv(G0), 3), [[2.647, 1.176], [1.176, 4.412]])
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_7_1_FIXED.items():
        assert published(fe[name], value), (name, fe[name])
    table = res.random_effects("calf,dam").pivot(index="level", columns="term", values="estimate")
    animals = [str(i) for i in range(1, 15)]
    assert set(table.index) == set(animals), "dams and sires without records are in the pedigree"
    for col, values in (("calf", MRODE_7_1_DIRECT), ("dam", MRODE_7_1_MATERNAL)):
        for animal, value in zip(animals, values):
            assert published(table.loc[animal, col], value), (col, animal, table.loc[animal, col])
    pe = res.random_effects("mpe").set_index("level")["estimate"]
    assert set(pe.index) == set(MRODE_7_1_PE)
    for dam, value in MRODE_7_1_PE.items():
        assert published(pe[dam], value), (dam, pe[dam])


# Mrode (2014) Example 4.2, Section 4.3.2 (pp. 67-69): weaning weight of ten piglets with a
# common (litter) environment; sigma2_a = 20, sigma2_c = 15, sigma2_e = 65.  Data (Table 4.2)
# as transcribed in JuliaBnG/Mrode-4ed-examples.jl (src/chapter-05/ex-2.jl; the 4th edition's
# Example 5.2); solutions for animals 7-15 and the three litters as printed on p. 69 of the
# 3rd edition, the others (sexes, animals 1-6) from the same transcription.
MRODE_4_2_PED = {"6": ("1", "2"), "7": ("1", "2"), "8": ("1", "2"), "9": ("3", "4"), "10": ("3", "4"),
                 "11": ("3", "4"), "12": ("3", "4"), "13": ("1", "5"), "14": ("1", "5"), "15": ("1", "5")}
MRODE_4_2_DATA = {"sex": list("MFFFMFFMFM"), "ww": [90.0, 70.0, 65.0, 98.0, 106.0, 60.0, 80.0, 100.0, 85.0, 68.0]}
MRODE_4_2_SEX = {"sex[M]": 91.493, "sex[F]": 75.764}
MRODE_4_2_ANIMAL = [-1.441, -1.175, 1.441, 1.441, -0.266, -1.098, -1.667, -2.334, 3.925, 2.895, -1.141, 1.525,
                    0.448, 0.545, -3.819]
MRODE_4_2_LITTER = {"2": -1.762, "4": 2.161, "5": -0.399}


def test_mrode_4_2_common_environment():
    ped = mb.Pedigree.from_frame(
        pd.DataFrame([(str(i), "0", "0") for i in range(1, 6)] + [(k, s, d) for k, (s, d) in MRODE_4_2_PED.items()],
                     columns=["animal", "sire", "dam"]),
        id="animal", sire="sire", dam="dam")
    data = pd.DataFrame({"piglet": list(MRODE_4_2_PED), "litter": [d for _, d in MRODE_4_2_PED.values()],
                         **MRODE_4_2_DATA})
    res = mb.fit("ww ~ 0 + sex + (1|piglet) + (1|litter)", data, cov={"piglet": ped},
                 variances={"piglet": 20.0, "litter": 15.0, "residual": 65.0})
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_4_2_SEX.items():
        assert published(fe[name], value), (name, fe[name])
    animal = res.random_effects("piglet").set_index("level")["estimate"]
    for i, value in enumerate(MRODE_4_2_ANIMAL, start=1):
        assert published(animal[str(i)], value), (i, animal[str(i)])
    litter = res.random_effects("litter").set_index("level")["estimate"]
    for dam, value in MRODE_4_2_LITTER.items():
        assert published(litter[dam], value), (dam, litter[dam])


# Mrode & Pocrnic (2023), 4th ed., Example 9.1 (Chapter 9, social interaction; Chapter 8 of
# the 3rd edition): growth rate of nine pigs in three pens of three, direct and associative
# genetic effects G0 = [[25.70, 2.25], [2.25, 3.60]], litter 12.5, pen (group) variance
# rho * sigma2_e = 0.2 * 60.6 = 12.12 and residual 60.6 - 12.12 = 48.48.  Data and published
# solutions as transcribed in JuliaBnG/Mrode-4ed-examples.jl (src/chapter-09/ex-1.jl): we
# could not read the book's page ourselves, so the solutions are also checked against an
# independent dense BLUP built here.
MRODE_SOCIAL_SIRE = [0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 3, 2, 3, 3]
MRODE_SOCIAL_DAM = [0, 0, 0, 0, 0, 0, 4, 4, 5, 4, 5, 6, 5, 6, 6]
MRODE_SOCIAL_DATA = {"pig": [str(i) for i in range(7, 16)], "pen": list("111222333"), "sex": list("MFFMFFMFM"),
                     "litter": list("112123233"), "gr": [5.50, 9.80, 4.90, 8.23, 7.50, 10.0, 4.50, 8.40, 6.40]}
MRODE_SOCIAL_SEX = {"sex[M]": 6.004, "sex[F]": 8.243}
MRODE_SOCIAL_DIRECT = [0.296, -0.483, 0.188, 0.296, -0.483, 0.188, 0.125, 0.522, -0.874, 0.536, -0.488, 0.399,
                       -0.572, 0.153, 0.199]
MRODE_SOCIAL_ASSOC = [-0.044, 0.028, 0.017, -0.044, 0.028, 0.017, -0.076, -0.099, 0.009, -0.003, 0.083, 0.060,
                      0.019, 0.005, 0.002]
MRODE_SOCIAL_PEN = [-0.269, 0.359, -0.090]
MRODE_SOCIAL_LITTER = [0.333, -0.515, 0.183]


def test_mrode_social_interaction_model():
    ids = [str(i) for i in range(1, 16)]
    ped = mb.Pedigree.from_frame(pd.DataFrame({"pig": ids, "sire": [str(s) for s in MRODE_SOCIAL_SIRE],
                                               "dam": [str(d) for d in MRODE_SOCIAL_DAM]}),
                                 id="pig", sire="sire", dam="dam")
    data = pd.DataFrame(MRODE_SOCIAL_DATA)
    G0 = np.array([[25.70, 2.25], [2.25, 3.60]])
    res = mb.fit("gr ~ 0 + sex + (1|pig) + (1|mates(pig, pen)) + (1|pen) + (1|litter)", data,
                 cov={("pig", "mates(pig, pen)"): ped},
                 variances={("pig", "mates(pig,pen)"): G0, "pen": 12.12, "litter": 12.5, "residual": 48.48})
    fe = res.fixed_effects["estimate"]
    for name, value in MRODE_SOCIAL_SEX.items():
        assert published(fe[name], value), (name, fe[name])
    table = res.random_effects("pig,mates(pig,pen)").pivot(index="level", columns="term", values="estimate")
    for col, values in (("pig", MRODE_SOCIAL_DIRECT), ("mates(pig,pen)", MRODE_SOCIAL_ASSOC)):
        for animal, value in zip(ids, values):
            assert published(table.loc[animal, col], value), (col, animal, table.loc[animal, col])
    for term, values in (("pen", MRODE_SOCIAL_PEN), ("litter", MRODE_SOCIAL_LITTER)):
        got = res.random_effects(term)["estimate"].to_numpy()
        assert all(published(g, v) for g, v in zip(got, values)), (term, got)

    # independent dense BLUP: V = Z (G0 x A) Z' + pen + litter + residual
    A = ped.a_matrix(ids).to_numpy()
    n = len(data)
    Zd, Zs = np.zeros((n, 15)), np.zeros((n, 15))
    for i, row in data.iterrows():
        Zd[i, ids.index(row.pig)] = 1
        for mate in data.loc[(data.pen == row.pen) & (data.pig != row.pig), "pig"]:
            Zs[i, ids.index(mate)] = 1
    Zp = pd.get_dummies(data["pen"]).to_numpy(dtype=float)
    Zl = pd.get_dummies(data["litter"]).to_numpy(dtype=float)
    Z = np.hstack([Zd, Zs])
    G = np.kron(G0, A)
    V = Z @ G @ Z.T + 12.12 * Zp @ Zp.T + 12.5 * Zl @ Zl.T + 48.48 * np.eye(n)
    Vi = np.linalg.inv(V)
    X = pd.get_dummies(data["sex"]).to_numpy(dtype=float)  # F, M
    y = data["gr"].to_numpy()
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    u = G @ Z.T @ Vi @ (y - X @ beta)
    np.testing.assert_allclose([fe["sex[F]"], fe["sex[M]"]], beta, rtol=1e-10)
    np.testing.assert_allclose(table.loc[ids, "pig"].to_numpy(), u[:15], atol=1e-10)
    np.testing.assert_allclose(table.loc[ids, "mates(pig,pen)"].to_numpy(), u[15:], atol=1e-10)
