"""Tests for :mod:`mixedblup.pedigree`.

Reference values come from two independent sources: the published A-inverse of
Mrode (2005, Example 3.1) and a deliberately naive dense tabular method written in this
file (:func:`tabular_a`), against which the vectorised inbreeding, A-inverse, dense A,
log-determinant and relationships are checked on random pedigrees (hypothesis).
Every pedigree fault of BAD_INPUTS.md section C that the pedigree handles is checked
for its exception or warning type and for naming the IDs involved.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedblup as mb
from mixedblup import _pedigree_kernels as K
from mixedblup.errors import (
    DataError,
    PedigreeError,
    PedigreeFixWarning,
)
from mixedblup.genetic_groups import GroupedPedigree
from mixedblup.pedigree import (
    Pedigree,
    generations,
    inbreeding_kernel,
    inbreeding_vectorised,
)
from mixedblup.prune import prune_kernel

# --------------------------------------------------------------------------------------
# an independent reference: the tabular method with plain loops
# --------------------------------------------------------------------------------------


def tabular_a(sire: list[int] | np.ndarray, dam: list[int] | np.ndarray) -> np.ndarray:
    """Dense A by the textbook tabular method; animals in index order, parents first."""
    n = len(sire)
    A = np.zeros((n, n))
    for i in range(n):
        s, d = int(sire[i]), int(dam[i])
        for j in range(i):
            a = (A[j, s] if s >= 0 else 0.0) + (A[j, d] if d >= 0 else 0.0)
            A[i, j] = A[j, i] = 0.5 * a
        A[i, i] = 1.0 + (0.5 * A[s, d] if s >= 0 and d >= 0 else 0.0)
    return A


def frame(ids, sires, dams, **extra) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "sire": sires, "dam": dams, **extra})


def build(df: pd.DataFrame, **kw) -> Pedigree:
    return Pedigree.from_frame(df, id="id", sire="sire", dam="dam", **kw)


def build_generated(df: pd.DataFrame, **kw) -> Pedigree:
    """``build`` for generated frames, where integer IDs with missing parents come as
    floats (as pd.read_csv gives them): the conversion is announced by exactly that warning."""
    floats = [c for c in ("id", "sire", "dam") if pd.api.types.is_float_dtype(df[c]) and df[c].notna().any()]
    if not floats:
        return build(df, **kw)
    with pytest.warns(PedigreeFixWarning, match="floating-point numbers, converted") as record:
        ped = build(df, **kw)
    assert all(f"column {c!r}" in str(w.message) for c in floats for w in record
               if issubclass(w.category, PedigreeFixWarning))
    return ped


# --------------------------------------------------------------------------------------
# Mrode (2005) Example 3.1
# --------------------------------------------------------------------------------------

MRODE_3_1 = pd.DataFrame(
    {
        "animal": [1, 2, 3, 4, 5, 6, 7, 8],
        "sire": [0, 0, 0, 1, 3, 1, 4, 3],
        "dam": [0, 0, 0, 0, 2, 2, 5, 6],
    }
)

# The published A-inverse (Mrode 2005, Example 3.1; printed as 1.833 and -0.667).
MRODE_3_1_AINV = np.array(
    [
        [11 / 6, 0.5, 0.0, -2 / 3, 0.0, -1.0, 0.0, 0.0],
        [0.5, 2.0, 0.5, 0.0, -1.0, -1.0, 0.0, 0.0],
        [0.0, 0.5, 2.0, 0.0, -1.0, 0.5, 0.0, -1.0],
        [-2 / 3, 0.0, 0.0, 11 / 6, 0.5, 0.0, -1.0, 0.0],
        [0.0, -1.0, -1.0, 0.5, 2.5, 0.0, -1.0, 0.0],
        [-1.0, -1.0, 0.5, 0.0, 0.0, 2.5, 0.0, -1.0],
        [0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 0.0, 2.0],
    ]
)


def mrode() -> Pedigree:
    return Pedigree.from_frame(MRODE_3_1, id="animal", sire="sire", dam="dam")


def test_mrode_3_1_a_inverse_matches_published():
    ped = mrode()
    assert list(ped.ids) == [str(i) for i in range(1, 9)]
    ainv = ped.a_inverse()
    assert sp.issparse(ainv) and ainv.format == "csc"
    np.testing.assert_allclose(ainv.toarray(), MRODE_3_1_AINV, atol=1e-12)


def test_mrode_3_1_against_tabular():
    ped = mrode()
    A = tabular_a([-1, -1, -1, 0, 2, 0, 3, 2], [-1, -1, -1, -1, 1, 1, 4, 5])
    np.testing.assert_allclose(ped.a_inverse().toarray(), np.linalg.inv(A), atol=1e-12)
    np.testing.assert_allclose(ped.a_matrix().to_numpy(), A, atol=1e-15)
    assert (ped.inbreeding() == 0).all()
    # one known parent (animal 4): d = 3/4; both known: 1/2; founders: 1
    np.testing.assert_allclose(ped.mendelian_variances(), [1, 1, 1, 0.75, 0.5, 0.5, 0.5, 0.5])
    assert ped.logdet_a() == pytest.approx(np.linalg.slogdet(A)[1], abs=1e-12)
    assert ped.relationship(8, "5") == pytest.approx(A[7, 4])
    assert ped.relationship("7", 7.0) == pytest.approx(1.0)


def test_mrode_2_1_inbred_animal():
    # Mrode (2005) Example 2.1: animals 5 (sire 4, dam 3: half-sibs) and 6 (sire 5, dam 2)
    # both have F = 0.125
    df = frame([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 4, 5], [0, 0, 2, 0, 3, 2])
    ped = build(df)
    F = ped.inbreeding()
    np.testing.assert_allclose(F.to_numpy(), [0, 0, 0, 0, 0.125, 0.125], atol=1e-15)
    A = ped.a_matrix()
    assert A.loc["5", "6"] == pytest.approx(0.6875)
    assert A.loc["6", "6"] == pytest.approx(1.125)
    assert ped.relationship(5, 6) == pytest.approx(0.6875)


def test_to_frame_and_basics():
    ped = mrode()
    out = ped.to_frame()
    assert list(out.columns) == ["id", "sire", "dam", "F"]
    assert out.loc[3, "sire"] == "1" and out.loc[3, "dam"] is None
    assert len(ped) == 8 and "4" in ped and 4 in ped and 4.0 in ped and "9" not in ped
    assert not ped.sire_pos.flags.writeable and not ped.dam_pos.flags.writeable
    assert ped.sire_pos.dtype == np.int64
    assert "8 animals" in repr(ped)
    # returned arrays are copies: mutating them does not change the pedigree
    ped.mendelian_variances()[:] = 7
    F = ped.inbreeding()
    F[:] = 7
    assert (ped.inbreeding() == 0).all() and ped.mendelian_variances()[0] == 1


# --------------------------------------------------------------------------------------
# hypothesis: random pedigrees
# --------------------------------------------------------------------------------------

_LABEL_ALPHABET = "bcdfgXYZ_123"  # cannot spell an unknown-looking code such as 'na' or '0'


@st.composite
def pedigrees(draw, max_n: int = 22, selfing: bool = False):
    """A random DAG: animal i picks a sire and a dam among animals < i, or unknown.

    Without selfing, sexes are drawn first so no animal is both sire and dam.  With
    selfing, any earlier animal may be either parent and sire == dam is favoured.
    """
    n = draw(st.integers(1, max_n))
    male = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    sire, dam = [], []
    for i in range(n):
        if selfing:
            cand = list(range(i))
            s = draw(st.sampled_from([-1] + cand))
            if s >= 0 and draw(st.booleans()):
                d = s
            else:
                d = draw(st.sampled_from([-1] + cand))
        else:
            males = [j for j in range(i) if male[j]]
            females = [j for j in range(i) if not male[j]]
            # favour recent parents so that inbreeding is common
            s = draw(st.sampled_from([-1] + males[-4:] + males[:2]))
            d = draw(st.sampled_from([-1] + females[-4:] + females[:2]))
        sire.append(s)
        dam.append(d)
    return np.array(sire, dtype=np.int64), np.array(dam, dtype=np.int64)


@st.composite
def labelled(draw, max_n: int = 22, selfing: bool = False):
    """A random pedigree written as a shuffled frame with int, str or mixed labels."""
    sire, dam = draw(pedigrees(max_n=max_n, selfing=selfing))
    n = sire.size
    kind = draw(st.sampled_from(["int", "str", "mixed"]))
    if kind == "str":
        labels = draw(
            st.lists(
                st.text(alphabet=_LABEL_ALPHABET, min_size=1, max_size=5),
                min_size=n, max_size=n, unique=True,
            )
        )
    else:
        labels = draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n, unique=True))
    order = draw(st.permutations(range(n)))
    ids = [labels[i] for i in order]
    sires = [labels[sire[i]] if sire[i] >= 0 else None for i in order]
    dams = [labels[dam[i]] if dam[i] >= 0 else None for i in order]
    if kind == "mixed":
        # as pd.read_csv gives them: ints for IDs, floats with NaN for a parent column,
        # strings with whitespace and the code "0" for the other
        df = pd.DataFrame(
            {
                "id": pd.Series(ids, dtype="int64"),
                "sire": pd.Series([np.nan if s is None else float(s) for s in sires]),
                "dam": pd.Series(["0" if d is None else f" {d} " for d in dams], dtype=object),
            }
        )
    else:
        df = frame(ids, sires, dams)
    return sire, dam, [str(x) for x in labels], df


def _reference_order(ped: Pedigree, labels: list[str]) -> np.ndarray:
    where = {lab: i for i, lab in enumerate(labels)}
    return np.array([where[i] for i in ped.ids])


def _check_against_tabular(sire, dam, labels, df, allow_selfing):
    ped = build_generated(df, allow_selfing=allow_selfing)
    assert len(ped) == sire.size and ped.added_founders == ()
    idx = _reference_order(ped, labels)
    A = tabular_a(sire, dam)[np.ix_(idx, idx)]
    # parents before offspring
    me = np.arange(len(ped))
    assert (ped.sire_pos < me).all() and (ped.dam_pos < me).all()
    F = ped.inbreeding()
    assert list(F.index) == list(ped.ids)
    np.testing.assert_allclose(F.to_numpy(), np.diag(A) - 1.0, rtol=0, atol=1e-12)
    assert (F >= 0).all() and (F < 1).all()
    ainv = ped.a_inverse()
    np.testing.assert_allclose(ainv @ A, np.eye(len(ped)), rtol=0, atol=1e-10)
    np.testing.assert_allclose((ainv - ainv.T).toarray(), 0, atol=1e-12)
    sign, logdet = np.linalg.slogdet(A)
    assert sign == 1
    assert ped.logdet_a() == pytest.approx(logdet, abs=1e-9)
    np.testing.assert_allclose(ped.a_matrix().to_numpy(), A, rtol=0, atol=1e-12)
    return ped, A


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled())
def test_random_pedigrees_match_tabular(case):
    _check_against_tabular(*case, allow_selfing=False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled(max_n=14, selfing=True))
def test_random_selfing_pedigrees_match_tabular(case):
    # max_n is kept small: after k generations of selfing d = 2^-(k+1) and A^-1 A = I
    # can only hold to about 2^k * 1e-16 in double precision
    _check_against_tabular(*case, allow_selfing=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled(), st.data())
def test_relationships_and_subsets_match_tabular(case, data):
    sire, dam, labels, df = case
    ped = build_generated(df)
    idx = _reference_order(ped, labels)
    A = pd.DataFrame(tabular_a(sire, dam)[np.ix_(idx, idx)], index=ped.ids, columns=ped.ids)
    ids = list(ped.ids)
    pair = st.tuples(st.sampled_from(ids), st.sampled_from(ids))
    pairs = data.draw(st.lists(pair, min_size=1, max_size=12))
    rel = ped.relationships(pairs)
    expected = [A.loc[a, b] for a, b in pairs]
    np.testing.assert_allclose(rel.to_numpy(), expected, rtol=0, atol=1e-12)
    assert list(rel.index) == pairs
    ped.inbreeding()  # with F cached the whole pedigree is traced (before: the ancestors only)
    as_frame = ped.relationships(pd.DataFrame(pairs, columns=["x", "y"]))
    np.testing.assert_allclose(as_frame.to_numpy(), expected, atol=1e-12)
    subset = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=6, unique=True))
    sub = ped.a_matrix(subset)
    assert list(sub.index) == subset and list(sub.columns) == subset
    np.testing.assert_allclose(sub.to_numpy(), A.loc[subset, subset].to_numpy(), atol=1e-12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pedigrees(), st.data())
def test_shuffling_and_relabelling_change_nothing(dag, data):
    sire, dam = dag
    n = sire.size
    results = []
    for _ in range(2):
        labels = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
        as_str = data.draw(st.booleans())
        order = data.draw(st.permutations(range(n)))
        lab = [f"a{x}" if as_str else x for x in labels]
        df = frame(
            [lab[i] for i in order],
            [lab[sire[i]] if sire[i] >= 0 else 0 for i in order],
            [lab[dam[i]] if dam[i] >= 0 else "." for i in order],
        )
        ped = build(df)
        idx = _reference_order(ped, [str(x) for x in lab])  # position -> DAG index
        results.append((ped, idx))
    (p1, i1), (p2, i2) = results
    # map pedigree 2 onto pedigree 1 through the DAG index
    pos2 = np.empty(n, dtype=np.int64)
    pos2[i2] = np.arange(n)
    perm = pos2[i1]  # position in p2 of each animal of p1
    np.testing.assert_allclose(
        p1.inbreeding().to_numpy(), p2.inbreeding().to_numpy()[perm], atol=1e-14
    )
    np.testing.assert_allclose(
        p1.a_inverse().toarray(), p2.a_inverse().toarray()[np.ix_(perm, perm)], atol=1e-12
    )
    np.testing.assert_allclose(
        p1.mendelian_variances(), p2.mendelian_variances()[perm], atol=1e-14
    )
    assert p1.logdet_a() == pytest.approx(p2.logdet_a(), abs=1e-10)
    # generation-then-input order: generations never decrease along ids
    assert (np.diff(p1.generation) >= 0).all()


def test_kernel_on_unsorted_topological_order_and_small_batches(monkeypatch):
    """The kernel works on any parents-first order, with tiny batches forcing the in-batch solve."""
    import mixedblup.pedigree as mod

    rng = np.random.default_rng(7)
    n = 150
    sire = np.array([rng.integers(-1, i) if i else -1 for i in range(n)])
    dam = np.array([rng.integers(-1, i) if i else -1 for i in range(n)])
    A = tabular_a(sire, dam)
    F_default = inbreeding_kernel(sire, dam)
    monkeypatch.setattr(mod, "_MEAN_ENTRIES", 5)
    monkeypatch.setattr(mod, "_PEAK_ENTRIES", 5)
    monkeypatch.setattr(mod, "_STORED_ENTRIES", 5)
    F_small = inbreeding_vectorised(sire, dam)
    np.testing.assert_allclose(F_default, np.diag(A) - 1, atol=1e-12)
    np.testing.assert_allclose(F_small, np.diag(A) - 1, atol=1e-12)
    assert F_default.max() > 0.2  # the test pedigree is really inbred


def test_selfing_line_closed_form():
    # k generations of selfing from a founder: F_k = 1 - 2^-k and d_k = 2^-k / 2
    k = 30
    ids = list(range(1, k + 2))
    df = frame(ids, [0] + ids[:-1], [0] + ids[:-1])
    ped = build(df, allow_selfing=True)
    F = ped.inbreeding().to_numpy()
    np.testing.assert_allclose(F, 1 - 0.5 ** np.arange(k + 1), rtol=0, atol=1e-14)
    small = build(df.iloc[:8], allow_selfing=True)
    A = tabular_a([-1] + list(range(7)), [-1] + list(range(7)))
    np.testing.assert_allclose(small.a_inverse() @ A, np.eye(8), atol=1e-10)


def test_fully_inbred_parents_refuse_a_inverse():
    # after ~55 generations of selfing F rounds to 1 and d to 0: A is numerically singular
    k = 60
    ids = list(range(1, k + 2))
    ped = build(frame(ids, [0] + ids[:-1], [0] + ids[:-1]), allow_selfing=True)
    assert ped.inbreeding().iloc[-1] == pytest.approx(1.0)
    with pytest.raises(PedigreeError, match="Mendelian sampling variance is zero"):
        ped.a_inverse()
    with pytest.raises(PedigreeError, match="fully"):
        ped.logdet_a()


def test_founders_only():
    ped = build(frame(["a", "b", "c"], [None, None, None], [None, None, None]))
    assert (ped.inbreeding() == 0).all()
    np.testing.assert_array_equal(ped.a_inverse().toarray(), np.eye(3))
    np.testing.assert_array_equal(ped.a_matrix().to_numpy(), np.eye(3))
    assert ped.logdet_a() == 0.0
    assert ped.relationship("a", "b") == 0.0


def test_one_known_parent_and_selfing_values():
    # one known parent: d = 3/4 - F_p/4;  selfing: F = (1 + F_p)/2, d = (1 - F_p)/2
    df = frame(["p", "q", "x", "y", "z"], [None, None, "p", "x", "x"], [None, None, "q", "x", None])
    ped = build(df, allow_selfing=True)
    F = ped.inbreeding()
    assert F["y"] == pytest.approx(0.5) and F["z"] == 0
    d = pd.Series(ped.mendelian_variances(), index=ped.ids)
    assert d["x"] == 0.5 and d["y"] == pytest.approx(0.5) and d["z"] == pytest.approx(0.75)
    A = ped.a_matrix()
    assert A.loc["y", "y"] == pytest.approx(1.5)
    np.testing.assert_allclose(ped.a_inverse() @ A.to_numpy(), np.eye(5), atol=1e-12)


# --------------------------------------------------------------------------------------
# deep and large pedigrees
# --------------------------------------------------------------------------------------


def test_5000_generation_chain_has_no_recursion():
    # each animal's sire is the previous animal, its dam a fresh founder; rows reversed
    k = 5000
    chain = [f"c{i}" for i in range(k)]
    dams = [f"d{i}" for i in range(k)]
    df = frame(chain[::-1], ([None] + chain[:-1])[::-1], dams[::-1])
    with pytest.warns(PedigreeFixWarning, match="5000 parent"):
        ped = build(df)
    assert len(ped) == 2 * k and len(ped.added_founders) == k
    assert int(ped.generation.max()) == k
    assert ped.ids[-1] == f"c{k - 1}"
    F = ped.inbreeding()
    assert (F == 0).all()
    ainv = ped.a_inverse()
    assert ainv.shape == (2 * k, 2 * k)
    # c_i and c_{i+3}: relationship 1/8 (direct line)
    assert ped.relationship("c100", "c103") == pytest.approx(0.125)
    assert ped.relationship("c4999", "c0") == 0.0  # 0.5**4999 underflows: exactly 0
    assert ped.logdet_a() == pytest.approx(np.log(0.5) * (k - 1) + np.log(0.75))


@pytest.mark.slow
def test_5000_generation_selfing_line():
    k = 5000
    ids = list(range(1, k + 1))
    ped = build(frame(ids, [0] + ids[:-1], [0] + ids[:-1]), allow_selfing=True)
    F = ped.inbreeding().to_numpy()
    assert F[0] == 0 and F[10] == pytest.approx(1 - 2.0**-10) and F[-1] == 1.0
    assert (np.diff(F) >= 0).all()


def _simulated_frame(n_gen: int, per_gen: int, n_sires: int, seed: int = 1) -> pd.DataFrame:
    """Discrete generations, few sires per generation, 5% unknown parents, shuffled rows."""
    rng = np.random.default_rng(seed)
    sire, dam = [np.full(per_gen, -1)], [np.full(per_gen, -1)]
    for g in range(1, n_gen):
        prev = np.arange((g - 1) * per_gen, g * per_gen)
        sires = rng.choice(prev[prev % 2 == 0], size=n_sires, replace=False)
        s = rng.choice(sires, size=per_gen)
        d = rng.choice(prev[prev % 2 == 1], size=per_gen)
        s[rng.random(per_gen) < 0.05] = -1
        d[rng.random(per_gen) < 0.05] = -1
        sire.append(s)
        dam.append(d)
    s, d = np.concatenate(sire), np.concatenate(dam)
    df = pd.DataFrame({"id": np.arange(1, s.size + 1), "sire": s + 1, "dam": d + 1})
    return df.sample(frac=1.0, random_state=seed)


def test_100k_animals_run_in_normal_test_time():
    """A smoke test at 100,000 animals (timings are printed, not asserted)."""
    df = _simulated_frame(10, 10_000, 100)
    t0 = time.perf_counter()
    ped = build(df)
    t1 = time.perf_counter()
    F = ped.inbreeding()
    t2 = time.perf_counter()
    ainv = ped.a_inverse()
    t3 = time.perf_counter()
    print(f"100k: from_frame {t1 - t0:.2f}s, inbreeding {t2 - t1:.2f}s, A-inverse {t3 - t2:.2f}s")
    assert len(ped) == 100_000 and ainv.nnz > 100_000
    assert 0 < F.mean() < 0.05 and F.max() < 1
    # spot check a few animals against relationships of their parents
    frame_ = ped.to_frame().set_index("id")
    kids = frame_.dropna(subset=["sire", "dam"]).index[-5:]
    rel = ped.relationships([(frame_.loc[k, "sire"], frame_.loc[k, "dam"]) for k in kids])
    np.testing.assert_allclose(F[kids].to_numpy(), 0.5 * rel.to_numpy(), atol=1e-12)


@pytest.mark.slow
def test_1m_animals():
    df = _simulated_frame(10, 100_000, 500)
    ped = build(df)
    F = ped.inbreeding()
    assert len(ped) == 1_000_000 and F.max() < 1
    assert ped.a_inverse().shape == (1_000_000, 1_000_000)


def test_constructor_from_sorted_arrays():
    # parents-first but not generation-sorted: reordered to generation, then input order
    ped = Pedigree(["a", "c", "b", "d"], [-1, -1, 0, 2], [-1, -1, 1, -1])
    assert list(ped.ids) == ["a", "c", "b", "d"]
    ped = Pedigree(["a", "b", "c", "d"], [-1, 0, -1, 1], [-1, -1, -1, 2])
    assert list(ped.ids) == ["a", "c", "b", "d"]
    assert ped.relationship("d", "b") == pytest.approx(0.5)
    with pytest.raises(PedigreeError, match="precede their offspring.*'a'"):
        Pedigree(["a", "b"], [1, -1], [-1, -1])
    with pytest.raises(PedigreeError, match="unique"):
        Pedigree(["a", "a"], [-1, -1], [-1, -1])


def test_generations_helper():
    gen = generations(np.array([-1, -1, 0, 2, -1]), np.array([-1, -1, 1, 1, 3]))
    np.testing.assert_array_equal(gen, [0, 0, 1, 2, 3])
    loop = generations(np.array([1, 0, 0]), np.array([-1, -1, -1]))
    np.testing.assert_array_equal(loop, [-1, -1, -1])


# --------------------------------------------------------------------------------------
# faults (BAD_INPUTS.md section C)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["00", "-", "*", "na", "NULL", "unknown", "000"])
def test_c1_unknown_looking_parent_code_is_an_error(code):
    df = frame(["a", "b", "c", "d"], [code, code, code, "a"], [None, None, None, "b"])
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert f"sire code '{code}' is used by 3 animal(s)" in msg
    assert "not an animal ID" in msg and "add it to unknown=" in msg
    prob = err.value.problems
    assert prob.loc[0, "code"] == code and prob.loc[0, "n_animals"] == 3
    # declared as unknown: fine
    ped = build(df, unknown=("0", "", code))
    assert ped.sire_pos[ped.positions(["b"])][0] == -1


def test_c1_code_that_is_a_real_animal_is_fine():
    df = frame(["00", "a"], [None, "00"], [None, None])
    ped = build(df)
    assert ped.relationship("00", "a") == 0.5


def test_c1_dam_codes_and_default_unknowns():
    # default unknown codes: "0", "", "NA", "." and missing values; " " strips to ""
    df = frame(["a", "b", "c", "d", "e"], ["0", "", "NA", ".", " "], [np.nan, None, "0", "-", "-"])
    with pytest.raises(PedigreeError, match=r"dam code '-' is used by 2 animal\(s\)"):
        build(df)
    ped = build(df.assign(dam=[np.nan, None, "0", ".", ""]))
    assert (ped.sire_pos == -1).all() and (ped.dam_pos == -1).all()


def test_c2_unlisted_parents_become_founders():
    df = frame(["x", "y", "z"], ["s1", "s1", "s2"], ["d1", None, "d1"])
    with pytest.warns(PedigreeFixWarning, match=r"3 parent\(s\).*'s1', 'd1', 's2'"):
        ped = build(df)
    assert ped.added_founders == ("s1", "d1", "s2")
    assert list(ped.ids[:3]) == ["s1", "d1", "s2"]
    assert ped.relationship("x", "z") == pytest.approx(0.25)
    out = ped.to_frame()
    assert out.loc[out["id"] == "s1", "sire"].iloc[0] is None


def test_c3_exact_duplicates_dropped_with_warning():
    df = frame(["a", "b", "c", "b"], [None, None, "a", None], [None, None, "b", None])
    with pytest.warns(PedigreeFixWarning, match=r"1 exact duplicate.*'b'"):
        ped = build(df)
    assert len(ped) == 3 and ped.dropped_duplicates == ("b",)


def test_c3_duplicates_after_normalisation():
    # 12, "12" and 12.0 are one animal: exact duplicates once normalised
    df = pd.DataFrame(
        {"id": [12, "12", 12.0, 5], "sire": [None, None, None, 12], "dam": [0, "0", 0.0, 0]}
    )
    with pytest.warns(PedigreeFixWarning, match="2 exact duplicate"), \
            pytest.warns(PedigreeFixWarning, match="floating-point numbers, converted"):
        ped = build(df)
    assert list(ped.ids) == ["12", "5"]


def test_c4_conflicting_duplicates():
    df = frame(["a", "b", "k", "c", "k"], [None, None, "a", "a", "c"], [None, None, "b", "b", "b"])
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "1 animal ID(s) appear on several rows with different parents" in msg
    assert "'k'" in msg and "row 2" in msg and "row 4" in msg
    assert "sire 'a'" in msg and "sire 'c'" in msg
    prob = err.value.problems
    assert list(prob["row"]) == [2, 4] and set(prob["id"]) == {"k"}


def test_c5_own_parent():
    df = frame(["a", "b", "c"], [None, "b", "a"], [None, None, "c"], extra=[0, 0, 0])
    df.index = [10, 11, 12]
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "'b' is its own sire (row 11)" in msg and "'c' is its own dam (row 12)" in msg
    assert list(err.value.problems["id"]) == ["b", "c"]


def test_c6_loops_are_listed_as_paths():
    # loop 1: A1 -> B7 -> C3 -> A1 (each is a parent of the next); loop 2: x <-> y;
    # "kid" descends from the first loop; "ok" is fine
    df = frame(
        ["ok", "A1", "B7", "C3", "x", "y", "kid"],
        [None, "C3", "A1", "B7", "y", "x", "C3"],
        [None, None, None, None, None, None, "ok"],
    )
    with pytest.raises(PedigreeError) as err:
        build(df, allow_selfing=True)
    msg = str(err.value)
    assert "2 pedigree loop(s)" in msg
    assert "A1 -> B7 -> C3 -> A1" in msg
    assert "x -> y -> x" in msg or "y -> x -> y" in msg
    assert "(rows 1, 2, 3)" in msg
    assert "1 further animal(s) descend" in msg
    prob = err.value.problems
    assert set(prob["id"]) == {"A1", "B7", "C3", "x", "y"}
    # each step of each reported path is a real parent -> offspring link
    parents = {r.id: {r.sire, r.dam} for r in df.itertuples()}
    for path in re.findall(r"((?:\w+ -> )+\w+) \(rows", msg):
        names = path.split(" -> ")
        assert names[0] == names[-1]
        for p, o in zip(names[:-1], names[1:]):
            assert p in parents[o]


def test_c6_long_loop_no_recursion():
    k = 3000
    ids = [f"a{i}" for i in range(k)]
    df = frame(ids, [ids[-1]] + ids[:-1], [None] * k)
    with pytest.raises(PedigreeError, match="1 pedigree loop") as err:
        build(df)
    assert len(err.value.problems) == k


def test_c8_animal_used_as_sire_and_dam():
    df = frame(
        ["m", "f", "o1", "o2", "o3"], [None, None, "m", "f", "m"], [None, None, "f", "m", "f"]
    )
    with pytest.raises(PedigreeError) as err:
        build(df)
    msg = str(err.value)
    assert "2 animal(s) are used both as sire and as dam" in msg
    assert "'m' (sire of 'o1' row 2, dam of 'o2' row 3" in msg
    assert "'f' (sire of 'o2' row 3, dam of 'o1' row 2" in msg
    assert "allow_selfing=True" in msg
    assert set(err.value.problems["id"]) == {"m", "f"}
    ped = build(df, allow_selfing=True)
    A = ped.a_matrix().to_numpy()
    np.testing.assert_allclose(ped.a_inverse() @ A, np.eye(5), atol=1e-12)


def test_c9_selfing_needs_allow_selfing():
    df = frame(["p", "s"], [None, "p"], [None, "p"])
    with pytest.raises(PedigreeError, match=r"'p' \(sire of 's' row 1, dam of 's' row 1.*selfing"):
        build(df)
    ped = build(df, allow_selfing=True)
    assert ped.inbreeding()["s"] == 0.5


def test_c11_birth_dates():
    df = frame(
        ["a", "b", "c", "d"], [None, None, "a", "c"], [None, None, "b", "b"],
        year=[2000, 2001, 2001, 2001],
    )
    with pytest.raises(PedigreeError) as err:
        build(df, birth="year")
    msg = str(err.value)
    assert "born on or after their offspring" in msg
    assert "'c' (born 2001, row 2) has dam 'b' born 2001" in msg
    assert "'d' (born 2001, row 3) has sire 'c' born 2001" in msg
    prob = err.value.problems
    assert len(prob) == 3 and set(prob["id"]) == {"c", "d"}
    assert {"id", "role", "parent", "birth", "parent_birth", "row"} <= set(prob.columns)
    good = df.assign(year=[2000, 2000, 2001, 2003])
    assert len(build(good, birth="year")) == 4
    # dates as strings; missing dates skip the check
    dates = df.assign(year=["2000-01-05", "2000-02-01", "2001-03-01", None])
    assert len(build(dates, birth="year")) == 4
    late = dates.assign(year=["2002-01-05", "2000-02-01", "2001-03-01", None])
    with pytest.raises(PedigreeError, match="'c' .* has sire 'a' born '2002-01-05'"):
        build(late, birth="year")
    with pytest.raises(DataError, match="neither numbers nor dates"):
        build(df.assign(year=["2000", "x", "2001", "2002"]), birth="year")


def test_c12_labels_of_mixed_types_match():
    a = frame([1, 2, 3], [0, 0, 1], [0, 0, 2])
    b = frame(["1", "2", " 3 "], ["0", "0", "1"], ["0", "0", "2 "])
    c = pd.DataFrame(
        {"id": [1.0, 2.0, 3.0], "sire": [np.nan, np.nan, 1.0], "dam": [np.nan, np.nan, 2.0]}
    )
    peds = [build_generated(x) for x in (a, b, c)]
    for p in peds:
        assert list(p.ids) == ["1", "2", "3"]
        np.testing.assert_array_equal(p.sire_pos, [-1, -1, 0])
    with pytest.raises(DataError, match="fractional"):
        build(frame([1.5, 2.0], [0, 0], [0, 0]))


def test_c17_missing_ids():
    df = frame(["a", None, "c", np.nan], [None, "a", "a", None], [None, None, None, None])
    with pytest.raises(PedigreeError) as err:
        build(df)
    assert "2 row(s) have no animal ID" in str(err.value) and "rows 1, 3" in str(err.value)
    assert list(err.value.problems["row"]) == [1, 3]


@pytest.mark.parametrize("bad_id", ["0", "NA", ".", ""])
def test_c20_id_equal_to_unknown_code(bad_id):
    df = frame(["a", bad_id, "c"], [None, None, "a"], [None, None, None])
    with pytest.raises(PedigreeError) as err:
        build(df)
    assert f"'{bad_id}'" in str(err.value) and "unknown-parent codes" in str(err.value)
    assert list(err.value.problems["row"]) == [1]


def test_c21_positions_name_every_missing_id():
    ped = mrode()
    np.testing.assert_array_equal(ped.positions([8, "1", 4.0]), [7, 0, 3])
    np.testing.assert_array_equal(ped.positions("5"), [4])
    missing = [f"z{i}" for i in range(15)]
    with pytest.raises(PedigreeError) as err:
        ped.positions(["1"] + missing + ["z0"], what="animals in the data")
    msg = str(err.value)
    assert "15 of the animals in the data are not in the pedigree" in msg
    assert "'z0'" in msg and "'z9'" in msg and "and 5 more" in msg and "'z10'" not in msg
    assert list(err.value.problems["id"]) == missing + ["z0"]
    with pytest.raises(PedigreeError, match="'99'"):
        ped.relationship(1, 99)
    with pytest.raises(PedigreeError, match="'99'"):
        ped.a_matrix([1, 99])


def test_a_matrix_size_guard():
    ped = mrode()
    with pytest.raises(PedigreeError, match=r"needs 5\.12e-07 GB, more than max_size=1e-07 GB"):
        ped.a_matrix(max_size=1e-7)
    assert ped.a_matrix(["7"], max_size=1e-6).shape == (1, 1)  # 7 and its ancestors: 6 animals


def test_bad_columns_and_frames():
    with pytest.raises(DataError, match="sire column 'father' is not in the pedigree frame"):
        Pedigree.from_frame(MRODE_3_1, id="animal", sire="father", dam="dam")
    with pytest.raises(DataError, match="DataFrame"):
        Pedigree.from_frame([[1, 0, 0]], id="animal", sire="sire", dam="dam")
    with pytest.raises(PedigreeError, match="no rows"):
        build(frame([], [], []))
    with pytest.raises(TypeError):
        Pedigree.from_frame(MRODE_3_1, "animal", "sire", "dam")  # names are keyword-only


def test_single_unknown_code_string_and_numeric_codes():
    df = frame(["a", "b"], [-998, "a"], [-998, -998])
    ped = build(df, unknown=-998)
    assert ped.sire_pos.tolist() == [-1, 0] and ped.dam_pos.tolist() == [-1, -1]
    ped2 = build(df.astype(str), unknown="-998")
    assert ped2.sire_pos.tolist() == [-1, 0]


# --------------------------------------------------------------------------------------
# issue 3: compiled kernel, reader, groups, pruning, remaining checks
# --------------------------------------------------------------------------------------

def _kernel_both_ways(sire, dam):
    """(compiled F, pure-Python F) of the indirect kernel on a parents-first pedigree."""
    sire = np.asarray(sire, dtype=np.int64)
    dam = np.asarray(dam, dtype=np.int64)
    gen = generations(sire, dam)
    order = np.argsort(gen, kind="stable").astype(np.int64)
    starts = np.searchsorted(gen[order], np.arange(gen.max() + 2)).astype(np.int64)
    out = []
    kernels = (K.inbreeding_indirect, K.inbreeding_indirect_packed)
    for f in kernels + tuple(getattr(k, "py_func", k) for k in kernels):
        F, d = f(sire.copy(), dam.copy(), gen.copy(), order.copy(), starts.copy())
        out.append((F, d))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pedigrees(max_n=18, selfing=True))
def test_indirect_kernel_compiled_and_python_match_tabular(dag):
    sire, dam = dag
    A = tabular_a(sire, dam)
    results = _kernel_both_ways(sire, dam)
    for F, d in results:
        np.testing.assert_allclose(F, np.diag(A) - 1, rtol=0, atol=1e-12)
        assert (F >= -1e-15).all() and (F < 1).all()
        np.testing.assert_allclose(d, results[0][1], atol=1e-15)


def test_kernels_agree_with_vectorised_reference():
    df = _simulated_frame(10, 2_000, 40, seed=3)
    ped = build(df)
    F = inbreeding_kernel(ped.sire_pos, ped.dam_pos, ped.generation)
    F_ref = inbreeding_vectorised(ped.sire_pos, ped.dam_pos, ped.generation)
    np.testing.assert_allclose(F, F_ref, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_pure_python_mode_without_numba():
    code = (
        "import numpy as np, mixedblup as mb, mixedblup._accel as a;"
        "assert not a.NUMBA;"
        "import pandas as pd;"
        "df=pd.DataFrame({'i':[1,2,3,4,5,6],'s':[0,0,1,1,4,5],'d':[0,0,2,0,3,2]});"
        "p=mb.Pedigree.from_frame(df,id='i',sire='s',dam='d');"
        "F=p.inbreeding().to_numpy();"
        "assert np.allclose(F,[0,0,0,0,0.125,0.125],atol=1e-15), F;"
        "q=p.prune(['6']); assert len(q)==6, q.ids;"
        "print('ok')"
    )
    env = dict(os.environ, MIXEDBLUP_NO_NUMBA="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout


# ---------------------------------------------------------------- reading


def test_read_pedigree_keeps_ids_as_text(tmp_path):
    text = "id,sire,dam\n0012,0,0\nNA,0,0\nNone,0,0\n013,0012,None\n12,013,NA\n"
    path = tmp_path / "ped.csv"
    path.write_text(text)
    for source in (path, str(path), io.StringIO(text), text):
        # "0012" and "12" are two animals here: leading_zeros="ignore" says so (C12)
        ped = mb.read_pedigree(source, id="id", sire="sire", dam="dam", unknown=["0"],
                               leading_zeros="ignore")
        assert list(ped.ids) == ["0012", "NA", "None", "013", "12"]
        assert ped.relationship("12", "0012") == pytest.approx(0.25)
        assert ped.relationship("12", "None") == pytest.approx(0.25)
    # with the default unknown codes an animal called "NA" is an error (C20), naming it
    with pytest.raises(PedigreeError, match="'NA'"):
        mb.read_pedigree(path, id="id", sire="sire", dam="dam")


def test_read_pedigree_whitespace_and_no_header(tmp_path):
    path = tmp_path / "ped.txt"
    path.write_text("1   0 0\n2\t0  0\n 3 1 2\n4 3 0\n")
    ped = mb.read_pedigree(path, id=0, sire=1, dam=2, header=None)
    assert list(ped.ids) == ["1", "2", "3", "4"]
    ped2 = mb.read_pedigree(path, id="a", sire="s", dam="d", header=None, names=["a", "s", "d"],
                            sep="whitespace")
    assert ped2.relationship("4", "1") == pytest.approx(0.25)
    semi = tmp_path / "ped.sc"
    semi.write_text("a;s;d;year\nx;0;0;2000\ny;x;0;2001\n")
    ped3 = mb.read_pedigree(semi, id="a", sire="s", dam="d", birth="year")
    assert list(ped3.ids) == ["x", "y"]


def test_from_frame_accepts_polars():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"a": ["1", "2", "3"], "s": ["0", None, "1"], "d": ["0", "0", "2"]})
    ped = Pedigree.from_frame(df, id="a", sire="s", dam="d")
    np.testing.assert_array_equal(ped.sire_pos, [-1, -1, 0])
    lazy = Pedigree.from_frame(df.lazy(), id="a", sire="s", dam="d")
    assert list(lazy.ids) == ["1", "2", "3"]


# ---------------------------------------------------------------- unknown parent groups


def _grouped_frame():
    # Mrode-style: groups for the unknown parents; one known parent; selfing below
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
            "sire": ["0", "0", "a", "a", "c", "0", "e", "e", "g"],
            "dam": ["0", "0", "b", "0", "d", "b", "f", "0", "g"],
            "sg": ["G1", "G1", None, None, None, "G2", None, None, None],
            "dg": ["G1", "G2", None, "G2", None, None, None, "G3", None],
        }
    )


def _dense_q(ped):
    n, g = len(ped), len(ped.groups)
    Q = np.zeros((n, g))
    for i in range(n):
        for par, grp in ((ped.sire_pos[i], ped.sire_group_pos[i]), (ped.dam_pos[i], ped.dam_group_pos[i])):
            if par >= 0:
                Q[i] += 0.5 * Q[par]
            else:
                Q[i, grp] += 0.5
    return Q


def test_upg_augmented_inverse_matches_dense_construction():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PedigreeFixWarning)
        ped = build(_grouped_frame(), upg=("sg", "dg"), allow_selfing=True)
    assert list(ped.groups) == ["G1", "G2", "G3"]
    A = ped.a_matrix().to_numpy()
    Ai = ped.a_inverse().toarray()
    np.testing.assert_allclose(Ai @ A, np.eye(len(ped)), atol=1e-10)
    np.testing.assert_allclose(ped.inbreeding().to_numpy(), np.diag(A) - 1, atol=1e-12)
    F = ped.inbreeding()
    assert F["g"] > 0 and F["i"] == pytest.approx(0.5 * (1 + F["g"]))  # selfing
    Q = _dense_q(ped)
    np.testing.assert_allclose(ped.group_contributions().to_numpy(), Q, atol=1e-15)
    np.testing.assert_allclose(Q.sum(axis=1), 1.0)
    aug = ped.a_inverse_groups().toarray()
    expected = np.block([[Ai, -Ai @ Q], [-Q.T @ Ai, Q.T @ Ai @ Q]])
    np.testing.assert_allclose(aug, expected, atol=1e-10)
    assert np.linalg.matrix_rank(aug) == len(ped)
    # random groups: the augmented matrix plus I/gamma is the inverse of Var(a*, g)
    gamma = 0.7
    V = np.block([[A + gamma * Q @ Q.T, gamma * Q], [gamma * Q.T, gamma * np.eye(3)]])
    cov = GroupedPedigree(ped, groups="random", group_variance=gamma)
    bound = cov.bind(cov.labels)
    np.testing.assert_allclose(bound.precision.toarray() @ V, np.eye(len(V)), atol=1e-10)
    assert bound.logdet == pytest.approx(np.linalg.slogdet(V)[1], abs=1e-10)
    np.testing.assert_allclose(bound.diagonal, np.diag(V), atol=1e-12)


def test_upg_single_column_and_faults():
    df = frame(["a", "b", "c"], ["0", "0", "a"], ["0", "0", "0"], grp=["G", "H", "G"])
    with pytest.warns(PedigreeFixWarning, match=r"'G' \(3\), 'H' \(2\)"):
        ped = build(df, upg="grp")
    np.testing.assert_array_equal(ped.sire_group_pos, [0, 1, -1])
    np.testing.assert_array_equal(ped.dam_group_pos, [0, 1, 0])
    # an unknown parent without a group, named
    bad = df.assign(grp=["G", None, "G"])
    with pytest.raises(PedigreeError, match=r"unknown parent but no group: 'b'") as err:
        build(bad, upg="grp", min_group_size=1)
    assert list(err.value.problems["id"]) == ["b"]
    # a group code equal to an animal ID
    with pytest.raises(PedigreeError, match=r"group code\(s\) 'a' are also animal IDs"):
        build(df.assign(grp=["a", "G", "G"]), upg="grp", min_group_size=1)
    # unlisted parents cannot carry a group
    with pytest.raises(PedigreeError, match="'zz'"):
        build(frame(["a", "b"], ["0", "zz"], ["0", "a"], grp=["G", "G"]), upg="grp", min_group_size=1)
    with pytest.raises(PedigreeError, match="no unknown parent groups"):
        mrode().a_inverse_groups()


def test_upg_fixed_groups_in_fit_recover_group_solutions():
    rng = np.random.default_rng(5)
    n = 400
    grp = np.where(np.arange(n) < 200, "old", "new")
    df = frame([f"x{i}" for i in range(n)], ["0"] * n, ["0"] * n, g=grp)
    ped = build(df, upg="g")
    y = np.where(grp == "new", 2.0, 0.0) + rng.normal(size=n)
    data = pd.DataFrame({"id": ped.ids, "y": y[[int(i[1:]) for i in ped.ids]]})
    res = mb.fit("y ~ 0 + (1|id)", data, cov={"id": GroupedPedigree(ped)},
                 variances={"id": 1.0, "residual": 1.0})
    blup = res.random_effects("id").set_index("level")["estimate"]
    assert blup["new"] - blup["old"] == pytest.approx(np.mean(y[grp == "new"]) - np.mean(y[grp == "old"]),
                                                      abs=1e-8)


# ---------------------------------------------------------------- pruning


def test_prune_report_and_rule():
    # f1 and f2 (founders, one offspring each) and leaf "z" go; m (two offspring) stays
    df = frame(["m", "f1", "f2", "a", "b", "z", "k"],
               ["0", "0", "0", "m", "m", "a", "a"], ["0", "0", "0", "f1", "f2", "0", "b"])
    ped = build(df, allow_selfing=False, max_unlisted=1.0)
    small = ped.prune(["k"])
    assert set(small.ids) == {"m", "a", "b", "k"}
    assert small.prune_report == {"n_before": 7, "n_after": 4, "n_keep": 1, "removed_leaves": 1,
                                  "removed_founders": 2}
    A, B = ped.a_matrix(["k", "a", "b"]), small.a_matrix(["k", "a", "b"])
    np.testing.assert_allclose(A.to_numpy(), B.to_numpy(), atol=1e-15)
    assert small.relationship("a", "m") == pytest.approx(0.5)
    with pytest.raises(PedigreeError, match="'nope'"):
        ped.prune(["nope"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled(max_n=20), st.data())
def test_pruning_keeps_relationships_of_kept_animals(case, data):
    df = case[3]
    ped = build_generated(df)
    keep = data.draw(st.lists(st.sampled_from(list(ped.ids)), min_size=1, max_size=6, unique=True))
    small = ped.prune(keep)
    assert set(keep) <= set(small.ids) and len(small) <= len(ped)
    np.testing.assert_allclose(small.a_matrix(keep).to_numpy(), ped.a_matrix(keep).to_numpy(), atol=1e-12)
    assert small.prune_report["n_after"] == len(small)
    # nothing else can go: every non-kept animal of the result is needed
    again = small.prune(keep)
    assert len(again) == len(small)


def test_pruning_keeps_blups_in_fit():
    pop = mb.datasets.simulate(1500, n_generations=6, recorded_fraction=0.3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ped = Pedigree.from_frame(pop.pedigree, id="id", sire="sire", dam="dam")
        rec = pop.records
        small = ped.prune(rec["id"].unique())
        assert len(small) < len(ped)
        v = {"id": 0.3, "residual": 0.5}
        full = mb.fit("y ~ 1 + (1|id)", rec, cov={"id": ped}, variances=v)
        cut = mb.fit("y ~ 1 + (1|id)", rec, cov={"id": small}, variances=v)
    a = full.random_effects("id").set_index("level")["estimate"]
    b = cut.random_effects("id").set_index("level")["estimate"]
    kept = rec["id"].unique()
    np.testing.assert_allclose(b[kept].to_numpy(), a[kept].to_numpy(), atol=1e-9)
    assert full.loglik == pytest.approx(cut.loglik, abs=1e-8)


def test_prune_kernel_both_ways():
    sire = np.array([-1, -1, -1, 0, 0, 3, 3], dtype=np.int64)
    dam = np.array([-1, -1, -1, 1, 2, -1, 4], dtype=np.int64)
    keep = np.zeros(7, dtype=np.bool_)
    keep[6] = True
    results = []
    for f in (prune_kernel, getattr(prune_kernel, "py_func", prune_kernel)):
        s, d = sire.copy(), dam.copy()
        g = np.full(7, -1, dtype=np.int64)
        alive, leaves, founders = f(s, d, keep, g, g.copy())
        results.append((alive.tolist(), int(leaves), int(founders), s.tolist(), d.tolist()))
    assert results[0] == results[1]
    assert results[0][0] == [True, False, False, True, True, False, True]


# ---------------------------------------------------------------- remaining catalogue checks


def test_c4_on_conflict_options():
    df = frame(["a", "b", "k", "c", "k"], [None, None, "a", "a", None], [None, None, None, "b", "b"])
    with pytest.raises(PedigreeError, match="'k'.*on_conflict"):
        build(df)
    with pytest.warns(PedigreeFixWarning, match=r"1 animal ID\(s\).*first row.*'k'.*dropped row 4"):
        first = build(df, on_conflict="first")
    assert first.to_frame().set_index("id").loc["k", "sire"] == "a"
    assert first.resolved_conflicts == ("k",)
    df2 = df.copy()
    df2.loc[4, "sire"] = "c"
    with pytest.warns(PedigreeFixWarning, match="most known parents"):
        best = build(df2, on_conflict="most_complete")
    row = best.to_frame().set_index("id").loc["k"]
    assert (row["sire"], row["dam"]) == ("c", "b")
    with pytest.raises(DataError, match="on_conflict"):
        build(df, on_conflict="last")


def test_c10_sex_consistency():
    df = frame(["m", "f", "x", "y"], [None, None, "m", "f"], [None, None, "f", "m"],
               sex=["M", "F", "F", "m"])
    with pytest.raises(PedigreeError) as err:
        build(df, sex="sex", allow_selfing=True)
    msg = str(err.value)
    assert "'f' (sex 'F', row 1) is sire of 'y'" in msg and "'m' (sex 'M', row 0) is dam of 'y'" in msg
    assert set(err.value.problems["id"]) == {"m", "f"}
    with pytest.warns(PedigreeFixWarning, match="contradicts"):
        build(df, sex="sex", sex_check="warn", allow_selfing=True)
    ok = frame(["m", "f", "x"], [None, None, "m"], [None, None, "f"], sex=["1", "2", None])
    assert len(build(ok, sex="sex")) == 3


def test_c11_min_interval():
    df = frame(["a", "b", "c"], [None, None, "a"], [None, None, "b"], year=[2000, 2001, 2002])
    assert len(build(df, birth="year")) == 3
    with pytest.raises(PedigreeError, match=r"less than min_interval=2 before.*'c' \(born 2002, row 2\) has dam 'b'"):
        build(df, birth="year", min_interval=2)


def test_c12_ids_that_changed_type():
    n = 40
    ids = [f"{i:04d}" for i in range(1, n + 1)]
    sires = ["0"] * 2 + [str(int(ids[i % 2])) for i in range(2, n)]  # "1" instead of "0001"
    dams = ["0"] * 2 + [f"{int(ids[2 + i % 30])}.0" for i in range(2, n)]
    with pytest.raises(PedigreeError, match=r"parents '1'.*'0001'.*did IDs change type") as err:
        build(frame(ids, sires, dams), max_unlisted=0.5)
    assert "1" in list(err.value.problems["parent"])
    with pytest.warns(PedigreeFixWarning):
        build(frame(ids, sires, ["0"] * n), max_unlisted=1.0, leading_zeros="ignore")
