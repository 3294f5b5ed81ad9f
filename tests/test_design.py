"""Design stage: X, y, Z per term, level bookkeeping and missing-value policy."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.design import build_design, group_labels


def design(formula, data, **kw):
    return build_design(mb.parse_formula(formula, data.columns), data, **kw)


@pytest.fixture
def small():
    return pd.DataFrame({
        "y": [1.0, 2.0, 3.5, 4.0, 5.5, 6.0, 7.5, 8.0],
        "x": [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0],
        "g": ["b", "b", "a", "a", "c", "c", "a", "b"],
        "h": [1, 2, 1, 2, 1, 2, 1, 2],
        "s": ["M", "F", "M", "F", "M", "F", "M", "F"],
    })


def test_khatri_rao_z_level_major(small):
    d = design("y ~ x + (1 + x | g)", small)
    (term,) = d.terms
    assert term.columns == ("(Intercept)", "x")
    assert list(term.levels) == ["a", "b", "c"]
    Z = term.Z.toarray()
    assert Z.shape == (8, 6)
    expected = np.zeros((8, 6))
    for i, (g, x) in enumerate(zip(small.g, small.x)):
        j = "abc".index(g)
        expected[i, 2 * j] = 1.0
        expected[i, 2 * j + 1] = x
    np.testing.assert_array_equal(Z, expected)


def test_slope_only_and_uncorrelated_terms(small):
    d = design("y ~ x + (0 + x | g) + (x || h)", small)
    assert d.terms[0].columns == ("x",)
    assert d.terms[1].columns == ("(Intercept)", "x")
    assert d.terms[1].term.correlated is False
    assert [t.name for t in d.terms] == ["g", "h"]


def test_nested_and_interaction_levels():
    data = mb.datasets.load("pastes")
    d = design("strength ~ 1 + (1|batch/cask)", data)
    assert [t.name for t in d.terms] == ["batch", "cask:batch"]
    assert len(d.terms[0].levels) == 10 and len(d.terms[1].levels) == 30
    assert d.terms[1].levels[0] == "a:A"  # lme4's labels: inner:outer
    d2 = design("strength ~ 1 + (1|batch:cask)", data)
    assert d2.terms[0].name == "batch:cask" and d2.terms[0].levels[0] == "A:a"


def test_repeated_group_gets_suffix(small):
    d = design("y ~ x + (1|g) + (0 + x|g)", small)
    assert [t.name for t in d.terms] == ["g", "g.1"]


def test_grouping_is_categorical_whatever_the_dtype(small):
    as_int = design("y ~ x + (1|h)", small)
    as_str = design("y ~ x + (1|h)", small.assign(h=small.h.astype(str)))
    as_cat = design("y ~ x + (1|h)", small.assign(h=pd.Categorical(small.h)))
    for d in (as_str, as_cat):
        assert list(d.terms[0].levels) == list(as_int.terms[0].levels) == ["1", "2"]
        np.testing.assert_array_equal(d.terms[0].Z.toarray(), as_int.terms[0].Z.toarray())


def test_numeric_levels_sort_numerically():
    frame = pd.DataFrame({"g": [10, 2, 1, 10, 2]})
    _, levels = group_labels(frame, ("g",))
    assert list(levels) == ["1", "2", "10"]


def test_missing_values_dropped_with_warning_and_recorded(small):
    data = small.copy()
    data.loc[[1, 4], "y"] = np.nan
    data.loc[6, "g"] = None
    data["unused"] = np.nan  # A2: NaN elsewhere changes nothing
    with pytest.warns(mb.RowsDroppedWarning, match=r"3 of 8 rows.*y: 2.*g: 1"):
        d = design("y ~ x + (1|g)", data)
    assert list(d.dropped_rows) == [1, 4, 6]
    assert list(d.index) == [0, 2, 3, 5, 7]
    assert "nan" not in set(d.terms[0].levels) and "None" not in set(d.terms[0].levels)


def test_missing_values_raise_when_asked(small):
    data = small.copy()
    data.loc[2, "x"] = np.nan
    with pytest.raises(mb.DataError, match="x: 1"):
        design("y ~ x + (1|g)", data, na_action="raise")


@pytest.mark.parametrize("column", ["y", "x"])
def test_inf_is_an_error_naming_column_and_row(small, column):
    data = small.copy()
    data.loc[3, column] = np.inf
    with pytest.raises(mb.DataError, match=rf"'{column}'.*rows 3"):
        design("y ~ x + (1|g)", data)


def test_rank_deficient_fixed_effects_dropped_and_named(small):
    data = small.assign(x2=small.x * 2.0)
    with pytest.warns(mb.RankDeficiencyWarning, match="x2"):
        d = design("y ~ x + x2 + (1|g)", data)
    assert d.fixed_names == ("(Intercept)", "x", "x2")
    assert list(d.fixed_kept) == [True, True, False]
    assert d.X.shape == (8, 2)


def test_rank_deficiency_reported_as_nan_in_results(small):
    data = small.assign(x2=small.x * 2.0)
    with pytest.warns(mb.RankDeficiencyWarning):
        res = mb.fit("y ~ x + x2 + (1|g)", data, variances={"g": 1.0, "residual": 1.0})
    fe = res.fixed_effects
    assert fe.loc["x2", "dropped"] and np.isnan(fe.loc["x2", "estimate"])
    assert not fe.loc["x", "dropped"] and np.isfinite(fe.loc["x", "estimate"])


def test_unused_categories_are_not_fixed_columns(small):
    data = small.assign(s=pd.Categorical(small.s, categories=["F", "M", "X"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = design("y ~ s + (1|g)", data)
    assert d.fixed_names == ("(Intercept)", "s[T.M]")


def test_constant_and_non_numeric_response(small):
    with pytest.raises(mb.DataError, match="constant"):
        design("y ~ x + (1|g)", small.assign(y=3.0))
    with pytest.raises(mb.DataError, match="numeric"):
        design("s ~ x + (1|g)", small)


def test_boolean_response_is_cast_with_warning(small):
    data = small.assign(b=[True, False, True, True, False, False, True, False])
    with pytest.warns(mb.DataWarning, match="boolean"):
        d = design("b ~ x + (1|g)", data)
    assert set(d.y) == {0.0, 1.0}


def test_too_few_rows(small):
    with pytest.raises(mb.DataError, match="observation"), pytest.warns(mb.RankDeficiencyWarning):
        design("y ~ s * x * h + (1|g)", small.iloc[:3])


def test_duplicate_column_names(small):
    data = pd.concat([small, small[["x"]]], axis=1)
    with pytest.raises(mb.DataError, match="duplicate column"):
        design("y ~ x + (1|g)", data)


def test_weights_must_be_non_negative_and_zero_weights_are_dropped(small):
    with pytest.raises(mb.DataError, match=r"weights 'w' are negative in 1 row\(s\): 2"):
        design("y ~ x + (1|g)", small.assign(w=[1, 1, -1, 1, 1, 1, 1, 1.0]), weights="w")
    with pytest.warns(mb.RowsDroppedWarning, match=r"1 of 8 rows with zero weight in 'w' \(rows 2\)"):
        d = design("y ~ x + (1|g)", small.assign(w=[1, 1, 0, 1, 1, 1, 1, 1.0]), weights="w")
    assert list(d.dropped_rows) == [2]


def test_sparse_fixed_design_matches_dense(small, monkeypatch):
    import mixedblup.design as design_module

    dense = mb.fit("y ~ s + x + (1|g)", small, variances={"g": 1.0, "residual": 1.0})
    monkeypatch.setattr(design_module, "DENSE_X_MAX", 1)
    sparse = mb.fit("y ~ s + x + (1|g)", small, variances={"g": 1.0, "residual": 1.0})
    import scipy.sparse as sp

    assert sp.issparse(sparse._design.X)
    pd.testing.assert_frame_equal(dense.fixed_effects, sparse.fixed_effects, rtol=1e-10)
    pd.testing.assert_frame_equal(dense.random_effects(), sparse.random_effects(), rtol=1e-10)


def test_sparse_rank_deficiency(small, monkeypatch):
    import mixedblup.design as design_module

    monkeypatch.setattr(design_module, "DENSE_X_MAX", 1)
    data = small.assign(x2=small.x * 2.0)
    with pytest.warns(mb.RankDeficiencyWarning, match="x2"):
        d = design("y ~ x + x2 + (1|g)", data)
    assert list(d.fixed_kept) == [True, True, False]
    monkeypatch.setattr(design_module, "SPARSE_RANK_DENSE_MAX", 2)
    with pytest.raises(mb.DataError, match="confounded"):
        design("y ~ x + x2 + (1|g)", data)
