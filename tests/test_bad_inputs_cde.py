"""Bad inputs of the catalogue (``BAD_INPUTS.md``), sections C (pedigree), D (user
covariance matrices) and E (numerical and estimation faults).

One test per row, named after it (``test_C1_...``).  Each checks the exception or
warning *type* and that the message names the offending ID / row / label / term and
says what to do.  Rows already covered exactly by another test are listed in
``docs/robustness.md`` with that test instead of being repeated here.
"""

from __future__ import annotations

import functools
import itertools
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup import estimate as est
from mixedblup.errors import (
    ConvergenceWarning,
    CovarianceError,
    CovarianceWarning,
    DataError,
    EstimationError,
    PedigreeError,
    PedigreeFixWarning,
    SingularFitWarning,
)


def frame(ids, sires, dams, **extra) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "sire": sires, "dam": dams, **extra})


def build(df: pd.DataFrame, **kw) -> mb.Pedigree:
    return mb.Pedigree.from_frame(df, id="id", sire="sire", dam="dam", **kw)


def one_way(n_groups: int = 8, per: int = 6, sd_u: float = 1.0, seed: int = 0, scale: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(n_groups)], per)
    u = rng.normal(scale=sd_u, size=n_groups)
    y = 10 + np.repeat(u, per) + rng.normal(size=n_groups * per)
    return pd.DataFrame({"y": y * scale, "x": rng.normal(size=n_groups * per), "g": g})


# =============================================================================== C: pedigree


def test_C2_unlisted_parents_added_as_founders_and_recorded():
    df = frame(["x", "y", "z"], ["s1", "s1", "s2"], ["d1", "0", "d1"])
    with pytest.warns(PedigreeFixWarning) as rec:
        ped = build(df)
    msg = " ".join(str(w.message) for w in rec)
    assert "3 parent(s) are not listed as animals and were added as founders" in msg
    assert "'s1', 'd1', 's2'" in msg and "see Pedigree.added_founders" in msg
    assert ped.added_founders == ("s1", "d1", "s2")


def test_C3_exact_duplicates_dropped_counted_and_recorded():
    df = frame(["a", "b", "c", "b", "b"], ["0", "0", "a", "0", "0"], ["0", "0", "b", "0", "0"])
    with pytest.warns(PedigreeFixWarning) as rec:
        ped = build(df)
    msg = " ".join(str(w.message) for w in rec)
    assert "2 exact duplicate pedigree row(s) dropped (IDs 'b', 'b'; rows 3, 4)" in msg
    assert "see Pedigree.dropped_duplicates" in msg
    assert len(ped) == 3 and ped.dropped_duplicates == ("b", "b")


def test_C5_own_parent_names_id_row_and_fix():
    df = frame(["a", "b"], ["0", "b"], ["0", "a"])
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "'b' is its own sire (row 1)" in msg and "correct the parents of these rows" in msg
    assert err.value.problems.to_dict("records") == [{"id": "b", "role": "sire", "row": 1}]


def test_C6_loop_path_rows_and_fix():
    df = frame(["A1", "B7", "C3"], ["C3", "A1", "B7"], ["0", "0", "0"])
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "1 pedigree loop(s)" in msg and "A1 -> B7 -> C3 -> A1 (rows 0, 1, 2)" in msg
    assert "correct the parents of these animals" in msg


def test_C7_unsorted_pedigree_is_sorted_internally_results_keyed_by_id():
    # offspring listed before their parents: accepted, no warning, same A as the sorted order
    unsorted = frame(["c", "d", "a", "b"], ["a", "c", "0", "0"], ["b", "b", "0", "0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ped = build(unsorted)
    ref = build(unsorted.iloc[[2, 3, 0, 1]])
    ids = ["a", "b", "c", "d"]
    pd.testing.assert_frame_equal(ped.a_matrix(ids), ref.a_matrix(ids))
    assert ped.inbreeding()["d"] == pytest.approx(0.25)
    assert ped.relationship("c", "d") == pytest.approx(0.75)


def test_C9_selfing_needs_allow_selfing_and_says_so():
    with pytest.raises(PedigreeError) as err:
        build(frame(["p", "s"], ["0", "p"], ["0", "p"]))
    msg = str(err.value)
    assert "'p'" in msg and "selfing" in msg and "allow_selfing=True" in msg


def test_C10_sex_mismatch_names_animal_and_switch():
    df = frame(["m", "f", "x"], ["0", "0", "f"], ["0", "0", "m"], sex=["M", "F", "M"])
    with pytest.raises(PedigreeError) as err:
        build(df, sex="sex", allow_selfing=True)
    msg = str(err.value)
    assert "'f' (sex 'F', row 1) is sire of 'x'" in msg
    assert "correct the sex or the parents" in msg and "sex_check='warn'" in msg
    with pytest.warns(PedigreeFixWarning, match="'f' \\(sex 'F'"):
        build(df, sex="sex", sex_check="warn", allow_selfing=True)


def test_C11_parent_born_after_offspring_names_both_and_column():
    df = frame(["a", "b", "c"], ["0", "0", "a"], ["0", "0", "b"], year=[2003, 2000, 2002])
    with pytest.raises(PedigreeError) as err:
        build(df, birth="year")
    msg = str(err.value)
    assert "'c' (born 2002, row 2) has sire 'a' born 2003" in msg
    assert "check the parents or the birth column 'year'" in msg


def test_C12_leading_zeros_and_float_ids():
    # "0012" among the animals and "12" as a parent: one animal written two ways
    df = frame(["0012", "0013", "0014"], ["0", "12", "0012"], ["0", "0", "0"])
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "'0012' (column 'id', row 0) and '12' (column 'sire', row 1)" in msg
    assert "dtype=str" in msg and "leading_zeros='ignore'" in msg
    assert set(err.value.problems["id"]) == {"0012", "12"}
    # really two animals: the switch
    with pytest.warns(PedigreeFixWarning, match="'12'"):
        ped = build(df, leading_zeros="ignore")
    assert ped.added_founders == ("12",)
    with pytest.raises(DataError, match="leading_zeros"):
        build(df, leading_zeros="warn")
    # parents read as floats (blanks in the column): converted, with a warning naming the column
    floats = pd.DataFrame({"id": [1, 2, 3], "sire": [np.nan, np.nan, 1.0], "dam": [np.nan, np.nan, 2.0]})
    with pytest.warns(PedigreeFixWarning, match=r"sire column 'sire'.*12\.0 -> '12'.*dtype=str"):
        ped = build(floats)
    assert ped.relationship("3", "1") == 0.5
    # fractional IDs are refused
    with pytest.raises(DataError, match="fractional"):
        build(frame([1.5, 2.0], [0, 0], [0, 0]))


def test_C13_unknown_parent_groups_faults_named():
    df = frame(["a", "b", "c"], ["0", "0", "a"], ["0", "0", "0"], grp=["G", None, "G"])
    with pytest.raises(PedigreeError) as err:
        build(df, upg="grp", min_group_size=1)
    msg = str(err.value)
    assert "every unknown parent needs a group" in msg and "'b'" in msg and "row 1" in msg
    with pytest.raises(PedigreeError, match=r"'a' are also animal IDs.*prefix them"):
        build(df.assign(grp=["a", "G", "G"]), upg="grp", min_group_size=1)
    with pytest.warns(PedigreeFixWarning, match=r"fewer than 5.*'H' \(2\).*consider merging"):
        build(df.assign(grp=["G", "H", "G"]), upg="grp")


def test_C14_one_known_parent_native_no_dummy_animals():
    df = frame(["s", "x", "y"], ["0", "s", "0"], ["0", "0", "s"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ped = build(df, allow_selfing=True)
    assert len(ped) == 3 and ped.added_founders == ()
    d = pd.Series(ped.mendelian_variances(), index=ped.ids)
    assert d["x"] == pytest.approx(0.75) and d["y"] == pytest.approx(0.75)
    A = ped.a_matrix().to_numpy()
    np.testing.assert_allclose(ped.a_inverse().toarray() @ A, np.eye(3), atol=1e-12)


def test_C15_founders_only_allowed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ped = build(frame(["a", "b", "c"], ["0", "0", "0"], ["0", "0", "0"]))
    np.testing.assert_array_equal(ped.a_matrix().to_numpy(), np.eye(3))


def test_C16_no_depth_limit_and_exact_pruning_reports_counts():
    # a 30-generation line: the last animal's inbreeding needs every ancestor (no depth limit)
    ids = ["f0", "m0"] + [f"a{i}" for i in range(30)]
    sires = ["0", "0", "f0"] + [f"a{i}" for i in range(29)]
    dams = ["0", "0", "m0"] + ["m0"] * 29
    ped = build(frame(ids, sires, dams), allow_selfing=True)
    assert len(ped) == 32
    small = ped.prune(["a29"])
    assert small.prune_report["n_before"] == 32 and small.prune_report["n_after"] <= 32
    assert small.inbreeding()["a29"] == pytest.approx(ped.inbreeding()["a29"], abs=1e-15)


def test_C17_missing_id_names_rows_and_fix():
    with pytest.raises(PedigreeError) as err:
        build(frame(["a", None], ["0", "a"], ["0", "0"]))
    msg = str(err.value)
    assert "1 row(s) have no animal ID in column 'id' (row 1)" in msg
    assert "fill in or remove these rows" in msg and "keep_default_na=False" in msg


def test_C18_column_names_are_keyword_only():
    df = frame(["a"], ["0"], ["0"])
    with pytest.raises(TypeError):
        mb.Pedigree.from_frame(df, "id", "sire", "dam")  # type: ignore[misc]
    with pytest.raises(DataError, match="sire column 'father' is not in the pedigree frame; columns are"):
        mb.Pedigree.from_frame(df, id="id", sire="father", dam="dam")


def test_C19_deep_pedigree_iterative_and_dense_a_guarded():
    n = 3000  # far beyond Python's recursion limit
    ids = [f"a{i}" for i in range(n)]
    ped = build(frame(ids, ["0"] + ids[:-1], ["0"] * n))
    assert ped.inbreeding().max() == 0.0
    assert ped.a_inverse().shape == (n, n)
    with pytest.raises(PedigreeError, match=r"needs .* GB, more than max_size=1e-06 GB"):
        ped.a_matrix(max_size=1e-6)


def test_C20_id_equal_to_unknown_code_names_row_and_fix():
    with pytest.raises(PedigreeError) as err:
        build(frame(["a", "0"], ["0", "a"], ["0", "0"]))
    msg = str(err.value)
    assert "'0'" in msg and "row 1" in msg
    assert "rename these animals or remove the code from unknown=" in msg


def test_C21_phenotyped_animals_not_in_pedigree_named():
    ped = build(frame(["a", "b", "c"], ["0", "0", "a"], ["0", "0", "b"]))
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "id": ["a", "c", "0013", "zz"]})
    with pytest.raises(CovarianceError) as err:  # fit: the B6 machinery
        mb.fit("y ~ 1 + (1|id)", data, cov={"id": ped}, variances={"id": 1.0, "residual": 1.0})
    msg = str(err.value)
    assert "2 level(s) of 'id' in the data are not in its relationship structure" in msg
    assert "'0013', 'zz'" in msg and "read them as strings" in msg and "add the animals to the pedigree" in msg
    assert list(err.value.problems["level"]) == ["0013", "zz"]
    # single step: genotyped animals missing from the pedigree
    G = pd.DataFrame(np.eye(2), index=["a", "ghost"], columns=["a", "ghost"])
    with pytest.raises(PedigreeError) as err:
        mb.SingleStep(ped, G)
    msg = str(err.value)
    assert "'ghost'" in msg and "not in the pedigree" in msg and "add them to the pedigree" in msg


# ====================================================================== D: user covariance


@pytest.fixture
def grm() -> pd.DataFrame:
    ids = [f"a{i}" for i in range(6)]
    G = 0.5 * np.eye(6) + 0.5 * np.full((6, 6), 0.2)
    G[np.diag_indices(6)] = 1.0
    return pd.DataFrame(G, index=ids, columns=ids)


@pytest.fixture
def records() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    ids = [f"a{i}" for i in range(6)]
    return pd.DataFrame({"y": rng.normal(size=18), "id": np.repeat(ids, 3)})


def test_D1_asymmetry_named_and_rounding_symmetrised(grm, records):
    G = grm.to_numpy().copy()
    G[0, 3] += 0.05
    with pytest.raises(CovarianceError) as err:
        mb.Relationship(G, labels=grm.index)
    msg = str(err.value)
    assert "not symmetric: max |G - G'| = 0.05 at ('a0', 'a3')" in msg and "(G + G.T) / 2" in msg
    # asymmetry at rounding level is not a fault: symmetrised, same fit as the exact matrix
    H = grm.to_numpy().copy()
    H[0, 3] += 1e-14
    a = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(H, labels=grm.index)},
               variances={"id": 1.0, "residual": 1.0})
    b = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(grm)},
               variances={"id": 1.0, "residual": 1.0})
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], atol=1e-12)


def test_D2_non_finite_entries_named_by_labels(grm):
    G = grm.to_numpy().copy()
    G[1, 2] = G[2, 1] = np.nan
    with pytest.raises(CovarianceError) as err:
        mb.Relationship(G, labels=grm.index)
    msg = str(err.value)
    assert "2 non-finite entries" in msg and "('a1', 'a2')" in msg and "replace them" in msg
    assert set(map(tuple, err.value.problems[["row", "column"]].to_numpy())) == {("a1", "a2"), ("a2", "a1")}


def test_D3_singular_g_refused_explicit_fixes_recorded(records):
    rng = np.random.default_rng(0)
    M = rng.binomial(2, 0.5, size=(6, 4)).astype(float)  # 6 animals, 4 markers: rank <= 4
    Z = M - M.mean(axis=0)
    ids = [f"a{i}" for i in range(6)]
    G = pd.DataFrame(Z @ Z.T / (2 * 0.25 * 4), index=ids, columns=ids)
    with pytest.raises(CovarianceError) as err:
        mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(G)},
               variances={"id": 1.0, "residual": 1.0})
    msg = str(err.value)
    assert re.search(r"G is not positive definite \(smallest eigenvalue .*numerical rank [1-5] of 6\)", msg)
    assert "blend=(0.95, 'A22')" in msg and "nearest_pd=True" in msg and "recorded" in msg
    blended = mb.adjust_relationship(G, blend=(0.95, "I"))
    assert [a.kind for a in blended.adjustments] == ["blend"]
    res = mb.fit("y ~ 1 + (1|id)", records, cov={"id": blended.relationship()},
                 variances={"id": 1.0, "residual": 1.0})
    notes = res.diagnostics[res.diagnostics["check"] == "covariance_adjustment"]
    assert len(notes) == 1 and "G <- 0.95 G + 0.05 I" in notes["message"].iloc[0]
    assert "'id'" in notes["message"].iloc[0]


def test_D4_indefinite_g_refused_nearest_pd_opt_in_recorded(grm, records):
    G = grm.to_numpy().copy()
    G[0, 1] = G[1, 0] = 0.99
    G[0, 2] = G[2, 0] = 0.99
    G[1, 2] = G[2, 1] = -0.9  # pairwise estimates that no covariance matrix can have
    G = pd.DataFrame(G, index=grm.index, columns=grm.index)
    assert np.linalg.eigvalsh(G.to_numpy()).min() < -0.1
    with pytest.raises(CovarianceError, match=r"not positive definite \(smallest eigenvalue -"):
        mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(G)},
               variances={"id": 1.0, "residual": 1.0})
    fixed = mb.adjust_relationship(G, nearest_pd=True)
    (adj,) = fixed.adjustments
    assert adj.kind == "nearest_pd" and adj.parameters["n_raised"] >= 1
    assert adj.parameters["frobenius_change"] == pytest.approx(
        np.linalg.norm(fixed.G.to_numpy() - G.to_numpy()), rel=1e-10)
    assert "Frobenius change" in adj.description
    assert np.linalg.eigvalsh(fixed.G.to_numpy()).min() > 0
    res = mb.fit("y ~ 1 + (1|id)", records, cov={"id": fixed.relationship()},
                 variances={"id": 1.0, "residual": 1.0})
    assert "nearest positive definite" in " ".join(res.diagnostics["message"])
    # a PD matrix is left as it is (nothing recorded)
    assert mb.adjust_relationship(grm, nearest_pd=True).adjustments == ()
    with pytest.raises(ValueError, match="nearest_pd"):
        mb.adjust_relationship(grm, nearest_pd=-1.0)


def test_D5_implausible_diagonal_warns_with_scale_advice(grm):
    kinship = grm * 0.5  # a coancestry matrix: diagonal 0.5
    with pytest.warns(CovarianceWarning) as rec:
        mb.Relationship(kinship)
    msg = " ".join(str(w.message) for w in rec)
    assert "mean diagonal 0.5" in msg and "on this matrix's scale" in msg and "tune='A22'" in msg
    odd = grm.copy()
    odd.loc["a4", "a4"] = 9.0
    with pytest.warns(CovarianceWarning, match=r"outside \[0.5, 2.5\] \(e.g. at 'a4'\)"):
        mb.Relationship(odd)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mb.Relationship(grm)  # a plausible G: silent
    with pytest.raises(CovarianceError, match="non-positive diagonal entries at 'a4'"):
        mb.Relationship(odd.assign(a4=odd["a4"].where(odd.index != "a4", 0.0)))


def test_D6_labels_aligned_by_name_missing_and_duplicates_named(grm, records):
    shuffled = grm.iloc[::-1, ::-1]
    a = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(shuffled)},
               variances={"id": 1.0, "residual": 1.0})
    b = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(grm)},
               variances={"id": 1.0, "residual": 1.0})
    pd.testing.assert_series_equal(a.random_effects().set_index("level")["estimate"].sort_index(),
                                   b.random_effects().set_index("level")["estimate"].sort_index(), atol=1e-12)
    extra = pd.concat([records, pd.DataFrame({"y": [0.3], "id": ["zz"]})], ignore_index=True)
    with pytest.raises(CovarianceError) as err:
        mb.fit("y ~ 1 + (1|id)", extra, cov={"id": mb.Relationship(grm)}, variances={"id": 1, "residual": 1})
    msg = str(err.value)
    assert "'zz'" in msg and "not in its relationship structure" in msg and "read them as strings" in msg
    # binding a structure directly to levels it lacks says the same
    with pytest.raises(CovarianceError, match=r"'zz'.*needs a row and column of the matrix"):
        mb.Relationship(grm).bind(pd.Index(["a0", "zz"]))
    with pytest.raises(CovarianceError, match="duplicated: 'a'; each label must appear once"):
        mb.Relationship(np.eye(2), labels=["a", "a"])
    with pytest.raises(CovarianceError, match="matched to the data by label, never by position"):
        mb.Relationship(np.eye(2))


def test_D7_inverse_keyword_and_inverse_looking_warning(grm, records):
    Ginv = pd.DataFrame(np.linalg.inv(grm.to_numpy()), index=grm.index, columns=grm.index)
    a = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(Ginv, inverse=True)},
               variances={"id": 1.0, "residual": 1.0})
    b = mb.fit("y ~ 1 + (1|id)", records, cov={"id": mb.Relationship(grm)},
               variances={"id": 1.0, "residual": 1.0})
    np.testing.assert_allclose(a.random_effects()["estimate"], b.random_effects()["estimate"], atol=1e-10)
    sibs = pd.DataFrame(np.linalg.inv(0.5 * (np.eye(5) + np.ones((5, 5)))), index=list("abcde"),
                        columns=list("abcde"))
    with pytest.warns(CovarianceWarning, match="looks like an inverse; pass inverse=True"):
        mb.Relationship(sibs)


def test_D8_dense_matrix_too_big_refused_with_override(monkeypatch, grm):
    import mixedblup.covariance as cov

    monkeypatch.setattr(cov, "_DENSE_LIMIT", 25)
    with pytest.raises(mb.MixedBlupError, match=r"6 x 6 .*allow_large=True"):
        mb.Relationship(grm)
    assert len(mb.Relationship(grm, allow_large=True).labels) == 6


# ==================================================================== E: numerical faults


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_E1_boundary_fit_relative_tolerance_warning_and_record(scale):
    rng = np.random.default_rng(7)
    groups = np.repeat(list("abcdef"), 5)
    noise = rng.normal(size=30)
    noise -= pd.Series(noise).groupby(groups).transform("mean").to_numpy() * 0.9
    data = pd.DataFrame({"y": (10 + noise) * scale, "g": groups})
    with pytest.warns(SingularFitWarning) as rec:
        res = mb.fit("y ~ 1 + (1|g)", data)
    msg = " ".join(str(w.message) for w in rec)
    assert "term 'g' is estimated as exactly zero" in msg and "method='profile'" in msg
    assert res.variance_components.set_index("group").loc["g", "estimate"] == 0.0
    assert res.optimizer.boundary == ("g",)
    row = res.diagnostics[res.diagnostics["check"] == "singular_fit"]
    assert len(row) == 1 and "'g'" in row["message"].iloc[0]


def test_E2_zero_start_recovers_interior_optimum():
    data = mb.datasets.load("dyestuff")
    ref = mb.fit("Yield ~ 1 + (1|Batch)", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularFitWarning)
        res = mb.fit("Yield ~ 1 + (1|Batch)", data, start={"Batch": 0.0, "residual": 1.0})
    assert res.variance_components["estimate"].to_numpy() == pytest.approx(
        ref.variance_components["estimate"].to_numpy(), rel=1e-5)
    assert res.variance_components.set_index("group").loc["Batch", "estimate"] == pytest.approx(1764.05, rel=1e-5)


def test_E3_never_negative_even_when_msb_below_msw():
    for seed in range(5):
        data = one_way(sd_u=0.0, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            res = mb.fit("y ~ 1 + (1|g)", data)
        assert (res.variance_components["estimate"] >= 0).all()


def test_E4_accepted_ai_reml_steps_never_increase_criterion(caplog):
    import logging

    from mixedblup.ai_reml import ai_reml

    data = mb.datasets.load("sleepstudy")
    res = mb.fit("Reaction ~ Days + (Days|Subject)", data)
    tmap = est.ThetaMap.for_design(res._design)
    seen = []
    with caplog.at_level(logging.INFO, logger="mixedblup"):
        out = ai_reml(res._cp, tmap, tmap.start.copy() * 3.0, backend="dense",
                      record=lambda theta, value: seen.append(np.asarray(theta).copy()))
    values = [float(m) for m in re.findall(r"AI-REML iteration \d+: -2logL = ([-\d.e+]+)", caplog.text)]
    assert len(values) >= 2
    assert all(b <= a + 1e-9 * abs(a) for a, b in itertools.pairwise(values))
    assert all((t[tmap.diagonal()] >= 0).all() for t in seen)  # never outside the space
    assert out.value <= values[0]
    assert out.value == pytest.approx(-2 * res.loglik, rel=1e-6)


def test_E5_iteration_cap_warns_records_and_advises(monkeypatch):
    data = mb.datasets.load("sleepstudy")
    capped = functools.partial(est.estimate_variances, max_evaluations=4)
    monkeypatch.setattr(est, "estimate_variances", capped)
    with pytest.warns(ConvergenceWarning) as rec:
        res = mb.fit("Reaction ~ Days + (Days|Subject)", data)
    msg = " ".join(str(w.message) for w in rec)
    assert "did not converge" in msg and "max |gradient|" in msg and "start=" in msg
    assert res.optimizer.converged is False
    row = res.diagnostics[res.diagnostics["check"] == "convergence"]
    assert len(row) == 1 and "did not converge" in row["message"].iloc[0]


def test_E6_non_pd_hessian_gives_nan_se_and_names_parameters():
    from types import SimpleNamespace

    from mixedblup.inference import results_varpar, variance_component_vcov

    data = one_way(seed=3)
    res = mb.fit("y ~ 1 + (1|g)", data)
    # far above the optimum the criterion is concave in the residual variance: the
    # information there is not positive definite (a stand-in for a degenerate optimum)
    fake = SimpleNamespace(variances_known=False, _design=res._design, optimizer=res.optimizer,
                           _sigmas=res._sigmas, _residual=res._residual * 50.0, method="REML",
                           _cp=res._cp, _backend="auto")
    with pytest.warns(ConvergenceWarning) as rec:
        info, notes = results_varpar(fake)
    msg = " ".join(str(w.message) for w in rec)
    assert "not positive definite" in msg and "parameters involved" in msg and "NaN" in msg
    assert "profile" in msg
    assert not info.positive_definite and notes
    assert np.isnan(variance_component_vcov(res._design, info)).all()
    # at the real optimum: no warning, finite standard errors
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert np.isfinite(res.variance_components["std_error"]).all()


@pytest.mark.parametrize("backend", ["dense", "ldl", "splu", "schur"])
def test_E7_singular_equations_name_blocks(backend):
    data = one_way(n_groups=70, per=3, seed=1)
    with pytest.raises(EstimationError) as err:
        mb.fit("y ~ x + (1|g)", data, variances={"g": 1e16, "residual": 1.0}, backend=backend)
    msg = str(err.value)
    assert "singular to working precision" in msg
    assert "'(Intercept)'" in msg and "'g'" in msg and "variance ratio" in msg
    assert "Remove a fixed effect that is confounded" in msg
    assert {"(Intercept)", "g"} <= set(err.value.blocks)


def test_E7_optimum_beyond_double_precision_is_not_reported_as_converged():
    # sigma_u / sigma_e ~ 1e7: the REML optimum lies where the equations keep almost no
    # significant digits, so whatever optimiser stops there must say so
    rng = np.random.default_rng(13)
    g = np.repeat(np.arange(20), 4)
    y = rng.normal(scale=1e4, size=20)[g] + rng.normal(scale=1e-3, size=80)
    data = pd.DataFrame({"y": y, "g": [f"g{i}" for i in g]})
    with pytest.warns(ConvergenceWarning, match="singular to within rounding"):
        res = mb.fit("y ~ 1 + (1|g)", data)
    assert not res.optimizer.converged
    assert "rounding" in res.optimizer.message
    assert "convergence" in set(res.diagnostics["check"])


def test_E7_moderately_ill_conditioned_equations_still_solved():
    data = one_way(n_groups=70, per=3, seed=1)
    ref = mb.fit("y ~ x + (1|g)", data, variances={"g": 1e6, "residual": 1.0}, backend="dense")
    for backend in ("ldl", "splu", "schur"):
        res = mb.fit("y ~ x + (1|g)", data, variances={"g": 1e6, "residual": 1.0}, backend=backend)
        # the estimable functions (slope, fitted values) agree across back ends
        assert res.fixed_effects.loc["x", "estimate"] == pytest.approx(ref.fixed_effects.loc["x", "estimate"],
                                                                       rel=1e-6)
        np.testing.assert_allclose(res.fitted, ref.fitted, rtol=1e-6)


@pytest.mark.parametrize("backend", ["dense", "ldl", "splu", "schur"])
def test_E7_conditioning_noted_in_diagnostics(backend):
    data = one_way(n_groups=70, per=3, seed=1)
    res = mb.fit("y ~ x + (1|g)", data, variances={"g": 1e10, "residual": 1.0}, backend=backend)
    row = res.diagnostics[res.diagnostics["check"] == "conditioning"]
    assert len(row) == 1 and row["level"].iloc[0] == "note"
    msg = row["message"].iloc[0]
    assert "ill-conditioned: smallest relative pivot" in msg and "significant digits" in msg
    assert "'(Intercept)'" in msg or "of term 'g'" in msg
    assert "conditioning" not in set(mb.fit("y ~ x + (1|g)", data, variances={"g": 1.0, "residual": 1.0},
                                            backend=backend).diagnostics["check"])


def test_E8_initial_evaluation_failure_retried_then_explained(monkeypatch):
    import mixedblup.ai_reml as ai
    import mixedblup.mme as mme

    data = one_way(seed=2)
    real = mme.factorize
    calls = {"n": 0}

    def first_two_fail(*args, **kwargs):
        # AI-REML's first factorisation and the criterion at the start both fail
        calls["n"] += 1
        if calls["n"] <= 2:
            raise EstimationError("simulated failure")
        return real(*args, **kwargs)

    for module in (mme, ai):
        monkeypatch.setattr(module, "factorize", first_two_fail)
    res = mb.fit("y ~ 1 + (1|g)", data)  # one rescaled retry
    assert res.optimizer.converged and res.optimizer.theta_start[0] == pytest.approx(0.1)
    ref = mb.fit("y ~ 1 + (1|g)", data, backend="dense")
    assert res.optimizer.criterion == pytest.approx(ref.optimizer.criterion, abs=1e-8)

    def always(*args, **kwargs):
        raise EstimationError("always")

    for module in (mme, ai):
        monkeypatch.setattr(module, "factorize", always)
    with pytest.raises(EstimationError, match="cannot be evaluated at the starting values.*rescaling"):
        mb.fit("y ~ 1 + (1|g)", data)


def test_E9_failures_during_optimisation_are_infeasible_steps(monkeypatch):
    data = one_way(seed=5)
    ref = mb.fit("y ~ 1 + (1|g)", data)
    theta_hat = float(ref.optimizer.theta[0])
    real = est.profiled_criterion

    def fails_far_out(cp, tmap, theta, *args, **kwargs):
        if theta[0] > 3.0 * theta_hat + 1.0:
            raise EstimationError("simulated Cholesky failure")
        return real(cp, tmap, theta, *args, **kwargs)

    monkeypatch.setattr(est, "profiled_criterion", fails_far_out)
    res = mb.fit("y ~ 1 + (1|g)", data, start={"g": 4.0 * (3 * theta_hat + 1) ** 2, "residual": 1.0})
    assert res.variance_components["estimate"].to_numpy() == pytest.approx(
        ref.variance_components["estimate"].to_numpy(), rel=1e-4)


@pytest.mark.parametrize("k", [1e-8, 1e8])
def test_E10_huge_and_tiny_magnitudes_scale_equivariant(k):
    data = one_way(seed=6)
    ref = mb.fit("y ~ x + (1|g)", data)
    res = mb.fit("y ~ x + (1|g)", data.assign(y=data.y * k))
    np.testing.assert_allclose(res.variance_components["estimate"], ref.variance_components["estimate"] * k**2,
                               rtol=1e-5)
    np.testing.assert_allclose(res.fixed_effects["estimate"], ref.fixed_effects["estimate"] * k, rtol=1e-6)


def test_E11_test_log_names_versions_and_blas():
    import conftest

    header = conftest.pytest_report_header(None)
    assert "numpy" in header and "scipy" in header and "BLAS" in header


def test_E12_loglik_convention_is_lme4s():
    from conftest import lme4_reference

    data = mb.datasets.load("dyestuff")
    for method, name in (("REML", "dyestuff_reml"), ("ML", "dyestuff_ml")):
        ref = lme4_reference(name)
        res = mb.fit("Yield ~ 1 + (1|Batch)", data, method=method)
        assert -2 * res.loglik == pytest.approx(ref["deviance_or_remlcrit"], rel=1e-8)
        assert res.loglik == pytest.approx(ref["loglik"], rel=1e-8)
        assert res.aic == pytest.approx(ref["AIC"], rel=1e-8)
    assert -2 * mb.fit("Yield ~ 1 + (1|Batch)", data).loglik == pytest.approx(319.654276842342, rel=1e-9)


def test_E13_heritability_on_boundary_flagged():
    rng = np.random.default_rng(7)
    groups = np.repeat(list("abcdef"), 5)
    noise = rng.normal(size=30)
    noise -= pd.Series(noise).groupby(groups).transform("mean").to_numpy() * 0.9
    data = pd.DataFrame({"y": 10 + noise, "g": groups})
    with pytest.warns(SingularFitWarning, match=r"heritability.*method='profile'"):
        res = mb.fit("y ~ 1 + (1|g)", data)
    h2 = res.heritability("g")
    assert h2["estimate"] == 0.0
    assert res.optimizer.boundary == ("g",)
    assert "singular_fit" in set(res.diagnostics["check"])
