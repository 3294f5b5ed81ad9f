"""Genomic relationships (VanRaden G, blending, tuning), GBLUP and single-step H.

Every number is checked against an independent dense computation built in the test
(the formulas of VanRaden 2008, Yang et al. 2010, Aguilar et al. 2010 and
Christensen & Lund 2010 written out with numpy), never against mixedblup itself.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixedblup as mb
from mixedblup.covariance import CovarianceStructure, as_covariance
from mixedblup.genomic import _PedigreeOps, _times_a

# ----------------------------------------------------------------------------- fixtures


def _pedigree(n: int = 40, founders: int = 8, seed: int = 1) -> mb.Pedigree:
    """A random pedigree with unknown parents, inbreeding and half-sib structure."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if i < founders:
            rows.append((f"a{i}", "0", "0"))
            continue
        s, d = rng.integers(0, i, size=2)
        rows.append((f"a{i}", f"a{s}" if rng.random() < 0.9 else "0", f"a{d}" if rng.random() < 0.8 else "0"))
    frame = pd.DataFrame(rows, columns=["id", "sire", "dam"])
    return mb.Pedigree.from_frame(frame, id="id", sire="sire", dam="dam", allow_selfing=True)


@pytest.fixture(scope="module")
def ped() -> mb.Pedigree:
    return _pedigree()


@pytest.fixture(scope="module")
def genotyped(ped: mb.Pedigree) -> list[str]:
    rng = np.random.default_rng(2)
    return [ped.ids[i] for i in sorted(rng.choice(len(ped), 15, replace=False))]


@pytest.fixture(scope="module")
def markers(genotyped: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    M = rng.binomial(2, rng.uniform(0.1, 0.9, size=120), size=(len(genotyped), 120))
    return pd.DataFrame(M, index=genotyped, columns=[f"snp{j}" for j in range(120)])


def _records(levels: list[str], n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.choice(levels, size=n)
    return pd.DataFrame({
        "y": rng.normal(10, 2, size=n),
        "sex": rng.choice(["F", "M"], size=n),
        "id": ids,
    })


def _dense_blup(data: pd.DataFrame, K: np.ndarray, labels: list[str], sg: float, se: float,
                fixed: str = "sex") -> tuple[np.ndarray, np.ndarray, float]:
    """BLUE, BLUP and REML -2logL from V = Z K Z' sg + I se, built directly."""
    X = pd.get_dummies(data[fixed], dtype=float).to_numpy()
    Z = (data["id"].to_numpy()[:, None] == np.asarray(labels)[None, :]).astype(float)
    y = data["y"].to_numpy()
    V = Z @ K @ Z.T * sg + np.eye(len(y)) * se
    Vi = np.linalg.inv(V)
    XVX = X.T @ Vi @ X
    beta = np.linalg.solve(XVX, X.T @ Vi @ y)
    r = y - X @ beta
    u = sg * K @ Z.T @ Vi @ r
    n, p = X.shape
    m2ll = (n - p) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + np.linalg.slogdet(XVX)[1] + r @ Vi @ r
    return beta, u, float(m2ll)


def _dense_h(ped: mb.Pedigree, G: pd.DataFrame) -> np.ndarray:
    """H = A + A12 A22^-1 (G - A22) A22^-1 A21 (full form), pedigree order, dense."""
    A = ped.a_matrix().to_numpy()
    pos = ped.positions(G.index)
    A22 = A[np.ix_(pos, pos)]
    P = A[:, pos] @ np.linalg.inv(A22)
    return A + P @ (G.to_numpy() - A22) @ P.T


# ----------------------------------------------------------------------------- G from markers


def test_vanraden1_matches_formula(markers: pd.DataFrame) -> None:
    M = markers.to_numpy(float)
    p = M.mean(axis=0) / 2
    Z = M - 2 * p
    expected = Z @ Z.T / (2 * (p * (1 - p)).sum())
    grm = mb.genomic_relationship(markers)
    np.testing.assert_allclose(grm.G.to_numpy(), expected, rtol=0, atol=1e-12)
    assert list(grm.G.index) == list(markers.index) == list(grm.G.columns)
    assert grm.adjustments == () and grm.method == "vanraden1"
    np.testing.assert_allclose(grm.frequencies.to_numpy(), p)
    # centred Z: G is singular (rank <= n - 1), and nothing was done about it
    assert not grm.positive_definite
    assert grm.eigenvalues[0] < 1e-10


def test_vanraden2_and_yang_match_formulas(markers: pd.DataFrame) -> None:
    M = markers.to_numpy(float)
    p = M.mean(axis=0) / 2
    het = 2 * p * (1 - p)
    Zs = (M - 2 * p) / np.sqrt(het)
    G2 = Zs @ Zs.T / M.shape[1]
    np.testing.assert_allclose(mb.genomic_relationship(markers, method="vanraden2").G, G2, atol=1e-12)
    Gy = G2.copy()
    np.fill_diagonal(Gy, 1 + ((M**2 - (1 + 2 * p) * M + 2 * p**2) / het).mean(axis=1))
    np.testing.assert_allclose(mb.genomic_relationship(markers, method="yang").G, Gy, atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        mb.genomic_relationship(markers, method="vanraden3")


def test_array_input_needs_labels_and_normalises_them() -> None:
    M = np.array([[0, 1, 2], [1, 1, 0], [2, 0, 1]])
    with pytest.raises(mb.DataError, match="labels="):
        mb.genomic_relationship(M)
    grm = mb.genomic_relationship(M, labels=[12, 13.0, "14 "])
    assert list(grm.G.index) == ["12", "13", "14"]
    with pytest.raises(mb.DataError, match="duplicated animal labels"):
        mb.genomic_relationship(M, labels=["a", "b", "a"])


@pytest.mark.parametrize("bad, fragment", [(1.5, "not allele counts"), (3, "not allele counts"),
                                           (-1, "not allele counts"), ("AA", "not numbers")])
def test_invalid_genotypes_name_animal_and_marker(markers: pd.DataFrame, bad: object, fragment: str) -> None:
    m = markers.astype(object)
    m.iloc[4, 7] = bad
    with pytest.raises(mb.DataError, match=fragment) as err:
        mb.genomic_relationship(m)
    assert markers.index[4] in str(err.value) and "snp7" in str(err.value)
    assert err.value.problems[["animal", "marker"]].values.tolist() == [[markers.index[4], "snp7"]]


def test_missing_genotypes_mean_imputed_with_warning(markers: pd.DataFrame) -> None:
    m = markers.astype(float)
    m.iloc[0, 0] = np.nan
    m.iloc[0, 5] = np.nan
    m.iloc[3, 5] = np.nan
    with pytest.warns(mb.GenotypeWarning, match="3 missing genotype") as rec:
        grm = mb.genomic_relationship(m)
    assert issubclass(rec[0].category, mb.DataWarning)
    assert grm.missing.to_dict() == {markers.index[0]: 2, markers.index[3]: 1}
    # documented rule: p from observed genotypes, missing cells replaced by 2p (Z = 0)
    M = m.to_numpy()
    p = np.nanmean(M, axis=0) / 2
    Z = np.where(np.isnan(M), 0.0, M - 2 * p)
    np.testing.assert_allclose(grm.G, Z @ Z.T / (2 * (p * (1 - p)).sum()), atol=1e-12)
    with pytest.raises(mb.DataError, match="3 genotype.s. are missing"):
        mb.genomic_relationship(m, missing="raise")


def test_nullable_integer_missing_values(markers: pd.DataFrame) -> None:
    m = markers.astype("Int64")
    m.iloc[1, 2] = pd.NA
    with pytest.warns(mb.GenotypeWarning, match="1 missing"):
        grm = mb.genomic_relationship(m)
    assert grm.missing.to_dict() == {markers.index[1]: 1}


def test_missing_code(markers: pd.DataFrame) -> None:
    m = markers.copy()
    m.iloc[2, 3] = 5
    with pytest.raises(mb.DataError, match="missing_code"):
        mb.genomic_relationship(m)
    with pytest.warns(mb.GenotypeWarning, match="1 missing"):
        grm = mb.genomic_relationship(m, missing_code=5)
    assert grm.missing.to_dict() == {markers.index[2]: 1}


def test_monomorphic_and_low_maf_markers_dropped_and_reported(markers: pd.DataFrame) -> None:
    m = markers.copy()
    m["mono0"] = 0
    m["mono2"] = 2
    m["rare"] = 0
    m.iloc[0, m.columns.get_loc("rare")] = 1  # maf = 1 / 30
    p = markers.mean(axis=0) / 2
    low = list(markers.columns[np.minimum(p, 1 - p) < 0.05])  # already rare in the fixture
    with pytest.warns(mb.GenotypeWarning, match=f"{len(low) + 3} marker.s. were dropped"):
        grm = mb.genomic_relationship(m, min_maf=0.05)
    reasons = grm.dropped_markers.set_index("marker")["reason"].to_dict()
    assert reasons == {"mono0": "monomorphic", "mono2": "monomorphic", "rare": "maf < 0.05",
                       **{k: "maf < 0.05" for k in low}}
    assert grm.n_markers == markers.shape[1] - len(low)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        base = mb.genomic_relationship(markers.drop(columns=low))
        assert not len(base.dropped_markers)
    np.testing.assert_allclose(grm.G, base.G, atol=1e-12)
    # monomorphic markers contribute nothing to the VanRaden G: dropping them changes nothing
    with pytest.warns(mb.GenotypeWarning, match="2 marker.s. were dropped .monomorphic: 2"):
        mono = mb.genomic_relationship(m.drop(columns=["rare"]))
    np.testing.assert_allclose(mono.G, mb.genomic_relationship(markers).G, atol=1e-12)


def test_animal_without_genotypes_is_an_error(markers: pd.DataFrame) -> None:
    m = markers.astype(float)
    m.iloc[1, :] = np.nan
    with pytest.raises(mb.DataError, match=f"no genotype.*{markers.index[1]}"):
        mb.genomic_relationship(m)


def test_given_allele_frequencies(markers: pd.DataFrame) -> None:
    half = pd.Series(0.5, index=markers.columns[::-1])  # matched by name, not position
    grm = mb.genomic_relationship(markers, allele_frequencies=half)
    Z = markers.to_numpy(float) - 1.0
    np.testing.assert_allclose(grm.G, Z @ Z.T / (0.5 * markers.shape[1]), atol=1e-12)
    with pytest.raises(mb.DataError, match="no value for 1 marker"):
        mb.genomic_relationship(markers, allele_frequencies=half.iloc[1:])
    with pytest.raises(mb.DataError, match=r"in \[0, 1\]"):
        mb.genomic_relationship(markers, allele_frequencies=np.full(markers.shape[1], 1.2))


# ----------------------------------------------------------------------------- blending and tuning


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_blend_is_exactly_the_stated_combination(alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    M = rng.integers(0, 3, size=(6, 10))
    M[:, 0] = [0, 1, 2, 0, 1, 2]  # at least one polymorphic marker
    labels = [f"g{i}" for i in range(6)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mb.GenotypeWarning)
        raw = mb.genomic_relationship(M, labels=labels)
        same = mb.genomic_relationship(M, labels=labels, blend=(1.0, "I"))
        K = rng.normal(size=(6, 6))
        target = pd.DataFrame(K + K.T, index=labels, columns=labels).iloc[::-1, ::-1]  # by label
        mixed = mb.genomic_relationship(M, labels=labels, blend=(alpha, target))
    assert np.array_equal(same.G.to_numpy(), raw.G.to_numpy())  # invariant 21: identity operation
    expected = alpha * raw.G.to_numpy() + (1 - alpha) * target.loc[labels, labels].to_numpy()
    assert np.array_equal(mixed.G.to_numpy(), expected)
    assert [a.kind for a in mixed.adjustments] == ["blend"]
    assert mixed.adjustments[0].parameters["alpha"] == alpha


def test_blend_with_a22_and_identity(ped: mb.Pedigree, markers: pd.DataFrame) -> None:
    raw = mb.genomic_relationship(markers)
    A22 = ped.a_matrix(markers.index).to_numpy()
    by_ped = mb.genomic_relationship(markers, blend=(0.95, ped))
    by_name = mb.genomic_relationship(markers, blend=(0.95, "A22"), a22=ped)
    np.testing.assert_allclose(by_ped.G, 0.95 * raw.G.to_numpy() + 0.05 * A22, atol=1e-14)
    np.testing.assert_array_equal(by_ped.G, by_name.G)
    assert by_name.adjustments[0].description == "G <- 0.95 G + 0.05 A22"
    by_i = mb.genomic_relationship(markers, blend=(0.9, "I"))
    assert np.array_equal(by_i.G.to_numpy(), 0.9 * raw.G.to_numpy() + (1 - 0.9) * np.eye(len(raw.G)))
    assert by_i.positive_definite and not raw.positive_definite
    with pytest.raises(ValueError, match="a22="):
        mb.genomic_relationship(markers, blend=(0.9, "A22"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mb.genomic_relationship(markers, blend=(1.5, "I"))
    with pytest.raises(ValueError, match="pair"):
        mb.genomic_relationship(markers, blend=0.95)


def test_tune_matches_a22_means_then_blend(ped: mb.Pedigree, markers: pd.DataFrame) -> None:
    raw = mb.genomic_relationship(markers).G.to_numpy()
    A22 = ped.a_matrix(markers.index).to_numpy()
    off = ~np.eye(len(A22), dtype=bool)
    tuned = mb.genomic_relationship(markers, tune="A22", a22=ped)
    G = tuned.G.to_numpy()
    assert np.diag(G).mean() == pytest.approx(np.diag(A22).mean(), abs=1e-12)
    assert G[off].mean() == pytest.approx(A22[off].mean(), abs=1e-12)
    a, b = tuned.adjustments[0].parameters["a"], tuned.adjustments[0].parameters["b"]
    np.testing.assert_allclose(G, a + b * raw, atol=1e-14)
    both = mb.genomic_relationship(markers, tune="A22", blend=(0.8, "A22"), a22=ped)
    assert [x.kind for x in both.adjustments] == ["tune", "blend"]
    np.testing.assert_allclose(both.G, 0.8 * G + 0.2 * A22, atol=1e-14)
    with pytest.raises(ValueError, match="a22="):
        mb.genomic_relationship(markers, tune="A22")


def test_adjust_relationship_on_a_user_matrix() -> None:
    G = pd.DataFrame(np.ones((3, 3)), index=[1, 2, 3], columns=[1, 2, 3])
    out = mb.adjust_relationship(G, blend=(0.5, "I"))
    assert out.method == "user" and list(out.G.index) == ["1", "2", "3"]
    np.testing.assert_array_equal(out.G, 0.5 * np.ones((3, 3)) + 0.5 * np.eye(3))
    again = mb.adjust_relationship(out, blend=(0.5, "I"))
    assert len(again.adjustments) == 2


def test_pedigree_ops_a22_equals_tabular(ped: mb.Pedigree, genotyped: list[str]) -> None:
    ops = _PedigreeOps(ped)
    np.testing.assert_allclose(ops.a22(ped.positions(genotyped)), ped.a_matrix(genotyped), atol=1e-13)
    B = np.random.default_rng(0).normal(size=(len(ped), 3))
    A = ped.a_matrix().to_numpy()
    np.testing.assert_allclose(ops.times(B), A @ B, atol=1e-12)
    pure = getattr(_times_a, "py_func", _times_a)  # the kernel as plain Python (small pedigrees)
    Y = B.copy()
    pure(ops._sire, ops._dam, ops.d, Y)
    np.testing.assert_allclose(Y, A @ B, atol=1e-12)


@pytest.mark.slow
def test_compiled_kernel_equals_plain_python(ped: mb.Pedigree) -> None:
    """Pedigrees of 2000+ animals use the numba-compiled kernel (compiling takes seconds)."""
    ops = _PedigreeOps(ped)
    B = np.random.default_rng(1).normal(size=(len(ped), 4))
    Y = B.copy()
    _times_a(ops._sire, ops._dam, ops.d, Y)
    np.testing.assert_allclose(Y, ped.a_matrix().to_numpy() @ B, atol=1e-12)


# ----------------------------------------------------------------------------- GBLUP


def test_gblup_equals_dense_v_blup(markers: pd.DataFrame) -> None:
    grm = mb.genomic_relationship(markers, blend=(0.95, "I"))
    labels = list(markers.index)
    data = _records(labels[:-3], 40, seed=5)  # three genotyped animals without records
    sg, se = 1.5, 2.5
    res = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": mb.Relationship(grm.G)},
                 variances={"id": sg, "residual": se})
    beta, u, m2ll = _dense_blup(data, grm.G.to_numpy(), labels, sg, se)
    blup = res.random_effects("id").set_index("level")["estimate"]
    np.testing.assert_allclose(blup.loc[labels].to_numpy(), u, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.fixed_effects["estimate"].to_numpy(), beta, atol=1e-8)
    assert -2 * res.loglik == pytest.approx(m2ll, abs=1e-8)
    # the result object's convenience gives the same structure
    res2 = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": grm.relationship()},
                  variances={"id": sg, "residual": se})
    np.testing.assert_allclose(res2.random_effects("id")["estimate"], res.random_effects("id")["estimate"])


def test_singular_g_refused_with_blending_advice_and_blending_fixes_it(markers: pd.DataFrame) -> None:
    few = markers.iloc[:, :8]  # 15 animals, 8 markers: rank <= 8
    data = _records(list(markers.index), 30, seed=6)
    raw = mb.genomic_relationship(few)
    with pytest.raises(mb.CovarianceError, match="not positive definite.*blend"):
        mb.fit("y ~ 1 + (1|id)", data, cov={"id": mb.Relationship(raw.G)},
               variances={"id": 1.0, "residual": 1.0})
    # centring alone (more markers than animals) also makes G singular (rank n - 1); a plain
    # Cholesky may pass it through rounding, so the check is on the smallest pivot
    centred = mb.genomic_relationship(markers)
    assert not centred.positive_definite and abs(centred.eigenvalues[0]) < 1e-10
    with pytest.raises(mb.CovarianceError, match="G is not positive definite.*blend"):
        mb.SingleStep(mb.Pedigree.from_frame(
            pd.DataFrame({"id": list(markers.index), "s": "0", "d": "0"}), id="id", sire="s", dam="d"),
            centred).logdet()
    fixed = mb.genomic_relationship(few, blend=(0.99, "I"))
    res = mb.fit("y ~ 1 + (1|id)", data, cov={"id": mb.Relationship(fixed.G)},
                 variances={"id": 1.0, "residual": 1.0})
    assert np.isfinite(res.loglik)


# ----------------------------------------------------------------------------- single step


@pytest.fixture(scope="module")
def blended(ped: mb.Pedigree, markers: pd.DataFrame) -> mb.GenomicRelationship:
    return mb.genomic_relationship(markers, blend=(0.9, "A22"), a22=ped)


def test_h_inverse_times_dense_h_is_identity(ped: mb.Pedigree, blended: mb.GenomicRelationship) -> None:
    ss = mb.SingleStep(ped, blended)
    H = _dense_h(ped, blended.G)
    Hinv = ss.h_inverse()
    assert Hinv.shape == (len(ped), len(ped))
    np.testing.assert_allclose(Hinv.toarray() @ H, np.eye(len(ped)), atol=1e-10)
    np.testing.assert_allclose(mb.h_inverse(ped, blended.G).toarray(), Hinv.toarray(), atol=0)
    # log|H| = log|A| - log|A22| + log|G|, against the dense H
    assert ss.logdet() == pytest.approx(np.linalg.slogdet(H)[1], abs=1e-10)
    np.testing.assert_allclose(ss.diagonal().to_numpy(), np.diag(H), atol=1e-12)
    assert ss.diagonal().index.equals(ped.ids)
    # sparse outside the genotyped block: non-genotyped rows keep A^-1's pattern
    Ainv = ped.a_inverse()
    others = np.setdiff1d(np.arange(len(ped)), ped.positions(blended.G.index))
    np.testing.assert_array_equal(Hinv[others].toarray(), Ainv[others].toarray())


def test_tau_omega(ped: mb.Pedigree, blended: mb.GenomicRelationship) -> None:
    ss = mb.SingleStep(ped, blended, tau=1.2, omega=0.6)
    A = ped.a_matrix().to_numpy()
    pos = ped.positions(blended.G.index)
    expected = np.linalg.inv(A)
    delta = 1.2 * np.linalg.inv(blended.G.to_numpy()) - 0.6 * np.linalg.inv(A[np.ix_(pos, pos)])
    expected[np.ix_(pos, pos)] += delta
    np.testing.assert_allclose(ss.h_inverse().toarray(), expected, atol=1e-9)
    H = np.linalg.inv(expected)
    assert ss.logdet() == pytest.approx(np.linalg.slogdet(H)[1], abs=1e-9)
    np.testing.assert_allclose(ss.diagonal().to_numpy(), np.diag(H), atol=1e-10)
    with pytest.raises(mb.CovarianceError, match="tau and omega"):
        mb.SingleStep(ped, blended, tau=0.05, omega=3.0).logdet()


def test_g_equal_a22_gives_pedigree_blup(ped: mb.Pedigree, genotyped: list[str]) -> None:
    """Invariant 20: G = A22 gives H = A, so ssBLUP equals pedigree BLUP."""
    A22 = ped.a_matrix(genotyped)
    ss = mb.SingleStep(ped, A22)
    np.testing.assert_allclose(ss.h_inverse().toarray(), ped.a_inverse().toarray(), atol=1e-9)
    assert ss.logdet() == pytest.approx(ped.logdet_a(), abs=1e-9)
    np.testing.assert_allclose(ss.diagonal(), 1 + ped.inbreeding(), atol=1e-12)
    data = _records(list(ped.ids[10:]), 50, seed=7)
    known = {"id": 2.0, "residual": 3.0}
    a = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": ped}, variances=known)
    h = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": ss}, variances=known)
    ra, rh = a.random_effects("id"), h.random_effects("id")
    assert list(ra["level"]) == list(rh["level"]) == list(ped.ids)
    np.testing.assert_allclose(rh["estimate"], ra["estimate"], atol=1e-8)
    np.testing.assert_allclose(rh["reliability"], ra["reliability"], atol=1e-8)
    assert h.loglik == pytest.approx(a.loglik, abs=1e-8)


def test_ssgblup_fit_equals_dense_h_blup(ped: mb.Pedigree, blended: mb.GenomicRelationship) -> None:
    ss = mb.SingleStep(ped, blended)
    assert isinstance(ss, CovarianceStructure) and as_covariance(ss, "id") is ss
    data = _records(list(ped.ids[5:]), 60, seed=8)
    sg, se = 1.0, 2.0
    res = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": ss}, variances={"id": sg, "residual": se})
    H = _dense_h(ped, blended.G)
    beta, u, m2ll = _dense_blup(data, H, list(ped.ids), sg, se)
    np.testing.assert_allclose(res.random_effects("id")["estimate"], u, atol=1e-8)
    np.testing.assert_allclose(res.fixed_effects["estimate"], beta, atol=1e-8)
    assert -2 * res.loglik == pytest.approx(m2ll, abs=1e-8)
    # reliabilities use diag(H)
    rel = res.random_effects("id")
    np.testing.assert_allclose(rel["reliability"], 1 - rel["pev"] / (sg * np.diag(H)), atol=1e-8)
    # REML through the structure equals REML through the dense H^-1 as a Relationship
    rng = np.random.default_rng(9)
    u_true = np.linalg.cholesky(H) @ rng.normal(size=len(H)) * 2.0
    data = data.assign(y=10 + u_true[ped.positions(data["id"])] + rng.normal(size=len(data)))
    est = mb.fit("y ~ 0 + sex + (1|id)", data, cov={"id": ss})
    dense = mb.fit("y ~ 0 + sex + (1|id)", data,
                   cov={"id": mb.Relationship(ss.h_inverse().toarray(), labels=ped.ids, inverse=True)})
    assert est.loglik == pytest.approx(dense.loglik, abs=1e-6)
    np.testing.assert_allclose(est.variance_components["estimate"], dense.variance_components["estimate"],
                               rtol=1e-4)


def test_genotyped_animals_not_in_pedigree_are_named(ped: mb.Pedigree, blended: mb.GenomicRelationship) -> None:
    G = blended.G.to_numpy()
    labels = list(blended.G.index[:-2]) + ["ghost1", "ghost2"]
    with pytest.raises(mb.PedigreeError, match="2 of the genotyped animals are not in the pedigree.*ghost1") as err:
        mb.SingleStep(ped, G, genotyped=labels)
    assert set(err.value.problems["id"]) == {"ghost1", "ghost2"}
    with pytest.raises(mb.PedigreeError, match="ghost1"):
        mb.genomic_relationship(
            pd.DataFrame(np.eye(3, dtype=int) + 0, index=["a0", "a1", "ghost1"]), blend=(0.9, ped))


def test_single_step_singular_g_points_to_blending(ped: mb.Pedigree, markers: pd.DataFrame) -> None:
    raw = mb.genomic_relationship(markers)
    with pytest.raises(mb.CovarianceError, match="G is not positive definite.*blend"):
        mb.SingleStep(ped, raw).h_inverse()


def test_single_step_genotyped_subset_and_order(ped: mb.Pedigree, blended: mb.GenomicRelationship) -> None:
    order = list(blended.G.index[::-1])
    ss = mb.SingleStep(ped, blended.G, genotyped=order)
    assert list(ss.genotyped) == order
    np.testing.assert_allclose(ss.h_inverse().toarray(), mb.h_inverse(ped, blended).toarray(), atol=1e-12)
    with pytest.raises(mb.CovarianceError, match="not labels of G"):
        mb.SingleStep(ped, blended.G, genotyped=["a0", "nobody"])
    with pytest.raises(mb.CovarianceError, match="labels="):
        mb.SingleStep(ped, blended.G.to_numpy())
    as_list = mb.SingleStep(ped, blended.G.to_numpy().tolist(), genotyped=list(blended.G.index))
    np.testing.assert_allclose(as_list.h_inverse().toarray(), mb.h_inverse(ped, blended).toarray(), atol=0)
