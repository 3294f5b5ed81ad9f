"""The fast fixed-effect design (plain factors and covariates built with numpy) equals formulaic's."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from formulaic import model_matrix

import mixedblup as mb
import mixedblup._fast_design as fast_module
from mixedblup._fast_design import FastModelSpec, fast_fixed
from mixedblup.design import build_design
from mixedblup.formula import formula_context
from mixedblup.inference import fixed_terms
from mixedblup.labels import label_to_str, normalize_labels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 400
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "a": rng.choice([f"h{i}" for i in range(12)], n),
        "b": pd.Categorical(rng.choice(["z", "y", "x"], n), categories=["z", "y", "x", "w"]),
        "s": pd.Series(rng.choice(["M", "F"], n), dtype="str"),
        "x": rng.normal(size=n),
        "k": rng.integers(0, 4, n),
        "g": rng.choice([f"g{i}" for i in range(30)], n),
    })


def _design(formula, frame, fast: bool, monkeypatch, **kw):
    monkeypatch.setattr(fast_module, "FAST_FIXED_MIN_COLUMNS", 0 if fast else 10**12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_design(mb.parse_formula(formula, frame.columns), frame, **kw)


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


FORMULAS = [
    "y ~ a + (1|g)",                  # intercept: reduced rank
    "y ~ 0 + a + (1|g)",              # no intercept: full rank
    "y ~ a + s + (1|g)",              # two factors
    "y ~ 0 + a + s + (1|g)",          # the second factor reduced
    "y ~ x + a + (1|g)",              # numeric + factor
    "y ~ 0 + x + k + a + (1|g)",      # float and integer covariates
    "y ~ b + a + (1|g)",              # categorical dtype with an unused category
    "y ~ 0 + b + x + (1|g)",
    "y ~ a + a:x + (1|g)",            # factor-by-covariate slopes
    "y ~ x:a + (1|g)",
    "y ~ x + k + (1|g)",              # covariates only
    "y ~ x:k + (1|g)",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_fast_design_equals_formulaic(data, formula, monkeypatch):
    ref = _design(formula, data, False, monkeypatch)
    new = _design(formula, data, True, monkeypatch)
    assert isinstance(new.fixed_spec, FastModelSpec)
    assert not isinstance(ref.fixed_spec, FastModelSpec)
    assert new.fixed_names == ref.fixed_names
    np.testing.assert_array_equal(new.fixed_kept, ref.fixed_kept)
    assert type(new.X) is type(ref.X)
    np.testing.assert_array_equal(_dense(new.X), _dense(ref.X))
    assert tuple(new.fixed_spec.column_names) == tuple(ref.fixed_spec.column_names)
    assert new.fixed_spec.required_variables == set(ref.fixed_spec.required_variables)
    assert fixed_terms(new) == fixed_terms(ref)
    assert [str(t) for t in new.fixed_spec.formula] == [str(t) for t in ref.fixed_spec.formula]


@pytest.mark.parametrize("formula", ["0 + a", "a + b", "0 + b + a + x", "a + x:a", "k:x + s", "1"])
def test_fast_matrix_equals_formulaic_matrix_sparse(data, formula):
    """The raw matrix (before rank detection), unused categories included, as formulaic builds it."""
    ctx = formula_context()
    X, names, spec = fast_fixed(formula, data, ctx, min_columns=0)
    mm = model_matrix(formula, data, context=ctx, na_action="ignore", output="sparse")
    ref = sp.csc_matrix(mm, dtype=float)
    assert names == tuple(mm.model_spec.column_names)
    assert X.shape == ref.shape and X.dtype == ref.dtype
    assert abs(X - ref).max() == 0 if X.nnz or ref.nnz else True
    assert {str(k): v for k, v in spec.term_indices.items()} == {
        str(k): v for k, v in mm.model_spec.term_indices.items()}


def test_missing_rows_dropped_first(data, monkeypatch):
    frame = data.copy()
    frame["a"] = frame["a"].astype(object)
    frame.loc[[3, 10], "a"] = None
    frame.loc[[5], "x"] = np.nan
    frame.loc[[7], "b"] = np.nan
    ref = _design("y ~ 0 + a + b + x + (1|g)", frame, False, monkeypatch)
    new = _design("y ~ 0 + a + b + x + (1|g)", frame, True, monkeypatch)
    assert list(new.dropped_rows) == list(ref.dropped_rows) == [3, 5, 7, 10]
    assert new.fixed_names == ref.fixed_names
    np.testing.assert_array_equal(_dense(new.X), _dense(ref.X))


def test_category_left_only_in_dropped_rows(data, monkeypatch):
    frame = data.copy()
    frame["a"] = frame["a"].astype(object)
    rows = frame.index[frame["a"] == "h3"]
    frame.loc[rows, "x"] = np.nan  # every h3 row dropped: h3 is not a level
    ref = _design("y ~ a + x + (1|g)", frame, False, monkeypatch)
    new = _design("y ~ a + x + (1|g)", frame, True, monkeypatch)
    assert "a[T.h3]" not in new.fixed_names
    assert new.fixed_names == ref.fixed_names
    np.testing.assert_array_equal(_dense(new.X), _dense(ref.X))


def test_large_sparse_x_and_rank_deficiency(data, monkeypatch):
    import mixedblup.design as design_module

    monkeypatch.setattr(design_module, "DENSE_X_MAX", 1)
    frame = data.assign(a2=data["a"])  # a2 duplicates a: its columns are dropped
    ref = _design("y ~ a + a2 + (1|g)", frame, False, monkeypatch)
    new = _design("y ~ a + a2 + (1|g)", frame, True, monkeypatch)
    assert sp.issparse(new.X) and sp.issparse(ref.X)
    assert new.fixed_names == ref.fixed_names
    np.testing.assert_array_equal(new.fixed_kept, ref.fixed_kept)
    assert not new.fixed_kept.all()
    np.testing.assert_array_equal(new.X.toarray(), ref.X.toarray())


@pytest.mark.parametrize("formula", ["0 + C(a)", "a:s", "a * s", "a + I(x * 2)", "a + log(k + 1)",
                                     "a + flag"])
def test_not_covered_falls_back_to_formulaic(data, formula):
    frame = data.assign(flag=data["x"] > 0)
    assert fast_fixed(formula, frame, formula_context(), min_columns=0) is None


def test_small_designs_stay_on_formulaic(data):
    assert fast_fixed("a + s", data, formula_context()) is None  # 14 columns < FAST_FIXED_MIN_COLUMNS
    assert fast_fixed("0 + a", data, formula_context(), min_columns=5) is not None


def test_predict_encodes_new_data_like_formulaic(data, monkeypatch):
    variances = {"g": 0.5, "residual": 1.0}
    new = data.iloc[::7].copy()
    out = {}
    for fast in (False, True):
        monkeypatch.setattr(fast_module, "FAST_FIXED_MIN_COLUMNS", 0 if fast else 10**12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mb.fit("y ~ 0 + a + b + x:a + (1|g)", data, variances=variances)
        assert isinstance(res._design.fixed_spec, FastModelSpec) is fast
        out[fast] = (res, res.predict(new), res.predict(new, include_random=False))
    pd.testing.assert_frame_equal(out[True][0].fixed_effects, out[False][0].fixed_effects)
    pd.testing.assert_series_equal(out[True][1], out[False][1])
    pd.testing.assert_series_equal(out[True][2], out[False][2])
    res = out[True][0]
    np.testing.assert_allclose(res.predict(data), res.fitted, rtol=1e-12)
    # the categorical column given as plain strings in new data encodes the same
    as_str = new.assign(b=new["b"].astype(str))
    pd.testing.assert_series_equal(res.predict(as_str), out[True][1])
    # unseen fixed-effect categories raise, as with formulaic's spec
    with pytest.raises(mb.DataError, match="categories not seen"):
        res.predict(new.assign(a="h99"))
    with pytest.raises(mb.DataError, match="categories not seen"):
        out[False][0].predict(new.assign(a="h99"))


def test_pcg_fit_same_through_both_paths(monkeypatch):
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    rec = mb.datasets.load("mrode_3_1")
    rec = rec.assign(hy=[f"hy{i % 3}" for i in range(len(rec))])
    res = {}
    for fast in (False, True):
        monkeypatch.setattr(fast_module, "FAST_FIXED_MIN_COLUMNS", 0 if fast else 10**12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res[fast] = mb.fit("wwg ~ 0 + sex + hy + (1|calf)", rec, cov={"calf": ped},
                               variances={"calf": 20, "residual": 40}, solver="pcg")
        assert isinstance(res[fast]._design.fixed_spec, FastModelSpec) is fast
    pd.testing.assert_frame_equal(res[True].fixed_effects, res[False].fixed_effects)
    pd.testing.assert_frame_equal(res[True].random_effects(), res[False].random_effects())
    assert res[True]._fixed_terms == res[False]._fixed_terms


def test_spec_delegates_and_pickles(data):
    ctx = formula_context()
    _, names, spec = fast_fixed("0 + a + x", data, ctx, min_columns=0)
    ref = model_matrix("0 + a + x", data, context=ctx, na_action="ignore", output="sparse").model_spec
    # anything the fast spec does not provide comes from formulaic's spec, built on demand
    assert tuple(spec.structure[1].columns) == tuple(ref.structure[1].columns)
    assert spec.encoder_state["a"][1]["categories"] == ref.encoder_state["a"][1]["categories"]
    again = pickle.loads(pickle.dumps(spec))
    X1 = spec.get_model_matrix(data.iloc[:20])
    X2 = again.get_model_matrix(data.iloc[:20])
    assert abs(X1 - X2).max() == 0
    assert again.column_names == names


@pytest.mark.parametrize("values", [
    pd.Index(["a", " b ", "c"]), pd.Series(["1", "2"], dtype="str"), pd.Series(["x", None], dtype=object),
    np.array(["q ", "r"]), pd.Series(["a", np.nan], dtype="str"), pd.Index([1.0, 2.0]),
    pd.Series(["7", 7, 7.0], dtype=object),
])
def test_normalize_labels_fast_path_unchanged(values):
    expected = pd.Index([label_to_str(v) for v in values], dtype=object)
    out = normalize_labels(values)
    assert out.equals(expected) and out.dtype == object
    assert [type(v) for v in out] == [type(v) for v in expected]
