"""Sire and maternal-grandsire pedigrees: A^-1 against a dense tabular A written here,
Mrode's printed examples, and a sire model against a dense V-based BLUP.

Textbook references: R. A. Mrode (2014), *Linear Models for the Prediction of Animal
Breeding Values*, 3rd ed., CABI -- Section 2.6 (p. 32: a three-sire pedigree and its A)
and Example 13.2 (p. 235: a six-bull sire-MGS pedigree and its A^-1, printed to 3 decimals).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.errors import PedigreeError, PedigreeFixWarning


def tabular_sire_mgs_a(sire: list[int], mgs: list[int]) -> np.ndarray:
    """Dense A among males in the given (ancestors-first) order, -1 = unknown.

    Independent of the package: a_ij = a_i,s/2 + a_i,k/4 (i older than j) and
    a_jj = 1 + F_j with F_j = a_sk/4 (the dam is the MGS's daughter).
    """
    n = len(sire)
    A = np.zeros((n, n))
    for j in range(n):
        for i in range(j):
            v = 0.0
            if sire[j] >= 0:
                v += 0.5 * A[i, sire[j]]
            if mgs[j] >= 0:
                v += 0.25 * A[i, mgs[j]]
            A[i, j] = A[j, i] = v
        A[j, j] = 1.0 + (0.25 * A[sire[j], mgs[j]] if sire[j] >= 0 and mgs[j] >= 0 else 0.0)
    return A


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["bull", "sire", "mgs"])


def build(rows: list[tuple[str, str, str]]) -> mb.SireMGSPedigree:
    return mb.SireMGSPedigree.from_frame(frame(rows), id="bull", sire="sire", mgs="mgs")


# every combination of known / unknown sire and MGS, and inbreeding (bulls 7, 9, 10)
MIXED = [
    ("1", "0", "0"), ("2", "0", "0"), ("3", "1", "0"), ("4", "0", "2"), ("5", "3", "2"),
    ("6", "1", "4"), ("7", "5", "3"), ("8", "6", "0"), ("9", "7", "5"), ("10", "9", "7"),
]


def positions(smgs: mb.SireMGSPedigree) -> tuple[list[int], list[int]]:
    return [int(x) for x in smgs.sire_index], [int(x) for x in smgs.mgs_index]


def test_inverse_times_tabular_a_is_identity():
    smgs = build(MIXED)
    s, k = positions(smgs)
    A = tabular_sire_mgs_a(s, k)
    Ainv = smgs.a_inverse()
    assert Ainv.shape == (10, 10)
    np.testing.assert_allclose(Ainv.toarray() @ A, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(smgs.a_matrix().to_numpy(), A, atol=1e-15)
    np.testing.assert_allclose(smgs.inbreeding().to_numpy(), np.diag(A) - 1, atol=1e-15)
    assert smgs.inbreeding().gt(0).sum() >= 3, "the pedigree exercises inbred sires and MGS"
    assert smgs.logdet_a() == pytest.approx(np.linalg.slogdet(A)[1], abs=1e-12)


def test_order_of_rows_and_added_founders():
    rows = MIXED[::-1]  # descendants listed first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smgs = build(rows)
    assert sorted(smgs.ids) == sorted(r[0] for r in MIXED)
    me = np.arange(len(smgs))
    assert (smgs.sire_index < me).all() and (smgs.mgs_index < me).all(), "ancestors first"
    by_id = smgs.a_matrix()
    ordered = build(MIXED).a_matrix()
    pd.testing.assert_frame_equal(by_id.loc[ordered.index, ordered.columns], ordered)
    with pytest.warns(PedigreeFixWarning, match="added as founders"):
        partial = build([("3", "1", "0"), ("5", "3", "2")])
    assert partial.added_founders == ("1", "2")
    assert list(partial.ids) == ["1", "2", "3", "5"]


def test_bad_pedigrees_are_errors():
    with pytest.raises(PedigreeError, match="own sire or maternal grandsire"):
        build([("1", "0", "1")])
    with pytest.raises(PedigreeError, match="loop"):
        build([("1", "2", "0"), ("2", "0", "1")])
    with pytest.raises(PedigreeError, match="more than once"):
        build([("1", "0", "0"), ("1", "0", "0")])


def test_mrode_section_2_6_three_sires():
    """Mrode (2014) Section 2.6, p. 32: sires 1, 4 (sire 1) and 5 (sire 4, MGS 1) of
    Table 2.1; A = [[1, .5, .5], [.5, 1, .625], [.5, .625, 1.125]], the same as the
    relationships among these sires in the full animal pedigree (checked here with the
    bundled Table 2.1 pedigree)."""
    smgs = build([("1", "0", "0"), ("4", "1", "0"), ("5", "4", "1")])
    printed = np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.625], [0.5, 0.625, 1.125]])
    np.testing.assert_allclose(smgs.a_matrix().to_numpy(), printed, atol=1e-15)
    np.testing.assert_allclose(smgs.a_inverse().toarray() @ printed, np.eye(3), atol=1e-12)
    full = mb.Pedigree.from_frame(mb.datasets.load("mrode_2_1_pedigree"), id="animal", sire="sire", dam="dam")
    np.testing.assert_allclose(full.a_matrix(["1", "4", "5"]).to_numpy(), printed, atol=1e-15)
    # the same sire-MGS pedigree read off the animal pedigree of Table 2.1 (bull 5 and his ancestors)
    derived = mb.SireMGSPedigree.from_animal_pedigree(mb.datasets.load("mrode_2_1_pedigree"), ["5"],
                                                      id="animal", sire="sire", dam="dam")
    assert list(derived.ids) == ["1", "4", "5"]
    np.testing.assert_allclose(derived.a_matrix().to_numpy(), printed, atol=1e-15)


def test_mrode_example_13_2_printed_inverse():
    """Mrode (2014) Example 13.2, p. 235: A^-1 of the six-bull sire-MGS pedigree (rules of
    Section 2.5).  The first three rows are printed legibly in our copy; they are pinned to
    the printed 3 decimals, and the whole matrix is checked against the tabular A."""
    smgs = build([("1", "0", "0"), ("2", "0", "0"), ("3", "1", "0"), ("4", "2", "1"),
                  ("5", "3", "2"), ("6", "2", "3")])
    printed_rows = [
        [1.424, 0.182, -0.667, -0.364, 0.000, 0.000],
        [0.182, 1.818, 0.364, -0.727, -0.364, -0.727],
        [-0.667, 0.364, 1.788, 0.000, -0.727, -0.364],
    ]
    Ainv = smgs.a_inverse().toarray()
    np.testing.assert_array_equal(np.round(Ainv[:3], 3), printed_rows)
    s, k = positions(smgs)
    np.testing.assert_allclose(Ainv @ tabular_sire_mgs_a(s, k), np.eye(6), atol=1e-12)


def test_sire_model_with_sire_mgs_matches_dense_blup():
    """A sire model y = Xb + Zs + e with var(s) = A_smgs * 5, var(e) = I * 55: BLUE and BLUP
    from fit equal the GLS/BLUP computed here from V = Z A Z' 5 + I 55."""
    smgs = build(MIXED)
    rng = np.random.default_rng(3)
    sires = rng.choice(list(smgs.ids[2:]), size=40)
    herd = rng.choice(["a", "b", "c"], size=40)
    y = rng.normal(10, 2, size=40)
    data = pd.DataFrame({"y": y, "herd": herd, "sire": sires})
    res = mb.fit("y ~ 0 + herd + (1|sire)", data, cov={"sire": smgs}, variances={"sire": 5.0, "residual": 55.0})
    s, k = positions(smgs)
    A = tabular_sire_mgs_a(s, k)
    ids = list(smgs.ids)
    Z = np.zeros((40, len(ids)))
    Z[np.arange(40), [ids.index(x) for x in sires]] = 1
    X = pd.get_dummies(pd.Series(herd)).to_numpy(dtype=float)
    V = Z @ A @ Z.T * 5.0 + np.eye(40) * 55.0
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    u = 5.0 * A @ Z.T @ Vi @ (y - X @ beta)
    np.testing.assert_allclose(res.fixed_effects["estimate"].to_numpy(), beta, rtol=1e-10)
    blup = res.random_effects("sire").set_index("level")["estimate"]
    np.testing.assert_allclose(blup.loc[ids].to_numpy(), u, atol=1e-10)
    assert set(blup.index) == set(ids), "sires without progeny (1, 2) get BLUPs"
    assert res.terms.loc["sire", "covariance"] == "relationship"
