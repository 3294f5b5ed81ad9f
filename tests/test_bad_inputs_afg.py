"""Bad-input catalogue, sections A (formula and data frame), B (random-effect structure),
F (prediction and post-fit) and G (I/O and library hygiene): one test per row.

Every test checks the exception or warning *type* and that the message names the
column / row / level / ID and says what to do.  The table in ``docs/robustness.md``
maps each row to its test.  The check switches (lme4's ``check.*``) are tested at the
end: each switch, at each level, changes what happens (lme4 #107).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import pathlib
import re
import time
import warnings

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
import mixedblup.design as design_module
from mixedblup.checks import CHECKS, LEVELS, resolve_checks

V = {"g": 1.0, "residual": 2.0}


@pytest.fixture
def df():
    rng = np.random.default_rng(7)
    n = 48
    g = np.repeat([f"g{i}" for i in range(8)], 6)
    u = dict(zip(sorted(set(g)), rng.normal(size=8)))
    x = rng.normal(size=n)
    return pd.DataFrame({
        "y": 1.0 + 0.5 * x + np.array([u[v] for v in g]) + rng.normal(scale=0.7, size=n),
        "x": x,
        "g": g,
        "h": np.tile([1, 2, 3, 4], n // 4),
        "s": np.tile(["M", "F"], n // 2),
        "o": rng.normal(size=n),
    }, index=pd.RangeIndex(100, 100 + n))


def fit(formula, data, **kw):
    kw.setdefault("variances", V)
    return mb.fit(formula, data, **kw)


def assert_same_fit(a, b, rtol=1e-10):
    pd.testing.assert_frame_equal(a.fixed_effects, b.fixed_effects, rtol=rtol)
    pd.testing.assert_frame_equal(a.random_effects(), b.random_effects(), rtol=rtol)


@contextlib.contextmanager
def no_warnings():
    """Fail on any mixedblup warning inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", mb.MixedBlupWarning)
        yield


# ============================================================================ A. formula and data frame
def test_A1_nan_in_response_dropped_counted_listed_and_aligned(df):
    data = df.copy()
    data.loc[[101, 107, 130], "y"] = np.nan
    with pytest.warns(mb.RowsDroppedWarning,
                      match=r"dropped 3 of 48 rows with missing values in model columns \(y: 3\): "
                            r"rows 101, 107, 130; they are listed in result.dropped_rows"):
        res = fit("y ~ x + (1|g)", data)
    assert list(res.dropped_rows) == [101, 107, 130]
    assert res.nobs == 45
    kept = data.index.drop([101, 107, 130])
    assert res.fitted.index.equals(kept) and res.residuals.index.equals(kept)
    assert isinstance(res.fitted, pd.Series)
    np.testing.assert_allclose(res.fitted + res.residuals, data.loc[kept, "y"])
    # the same as dropping outside (statsmodels' test_handle_missing)
    assert_same_fit(res, fit("y ~ x + (1|g)", data.dropna()))
    with pytest.raises(mb.DataError, match=r"3 of 48 rows .*\(y: 3\): rows 101, 107, 130; drop or impute "
                                           r"them, or pass na_action='drop'") as info:
        fit("y ~ x + (1|g)", data, na_action="raise")
    assert list(info.value.problems["row"]) == [101, 107, 130]
    with pytest.raises(mb.DataError, match="na_action must be one of"):
        fit("y ~ x + (1|g)", data, na_action="omit")


def test_A1_zero_silent_row_drops(df):
    """Every way a row can go (NaN response, covariate, grouping factor, zero weight,
    missing_code) is counted in a warning and listed in result.dropped_rows."""
    data = df.assign(w=1.0)
    data.loc[100, "y"] = np.nan
    data.loc[110, "x"] = np.nan
    data.loc[120, "g"] = None
    data.loc[125, "g"] = np.nan
    data.loc[130, "w"] = 0.0
    data.loc[140, "h"] = -9
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fit("y ~ x + h + (1|g)", data, weights="w", missing_code=-9)
    dropped = [w for w in caught if issubclass(w.category, mb.RowsDroppedWarning)]
    counted = sum(int(re.search(r"dropped (\d+) of", str(w.message)).group(1)) for w in dropped)
    assert sorted(res.dropped_rows) == [100, 110, 120, 125, 130, 140]
    assert counted == len(res.dropped_rows) == len(data) - res.nobs
    assert any("missing_code=-9 matched 1 value(s)" in str(w.message) for w in caught)
    assert "6 row(s) dropped for missing values or zero weights (listed in result.dropped_rows)" \
        in res.summary().as_text()


def test_A2_nan_in_unused_column_changes_nothing(df):
    data = df.assign(unused=np.nan, other=["a"] * len(df))
    data.loc[100:110, "other"] = None
    with no_warnings():
        res = fit("y ~ x + (1|g)", data)
    assert len(res.dropped_rows) == 0 and res.nobs == len(df)
    assert_same_fit(res, fit("y ~ x + (1|g)", df), rtol=1e-12)
    est = mb.fit("y ~ x + (1|g)", data)
    ref = mb.fit("y ~ x + (1|g)", df)
    np.testing.assert_allclose(est.variance_components["estimate"], ref.variance_components["estimate"],
                               rtol=1e-12)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_A3_inf_in_response_is_an_error_never_missing(df, value):
    data = df.copy()
    data.loc[[112, 140], "y"] = value
    with pytest.raises(mb.DataError, match=r"column 'y' has 2 infinite value\(s\) in rows 112, 140; replace "
                                           r"them with finite values or NaN") as info:
        fit("y ~ x + (1|g)", data)
    assert list(info.value.problems["row"]) == [112, 140]
    # a transformed response that becomes infinite
    with pytest.raises(mb.DataError, match=r"response 'log\(z\)' is not finite in rows 105.*fix or remove"):
        fit("log(z) ~ x + (1|g)", df.assign(z=np.where(df.index == 105, 0.0, 2.0 + df.y.abs())))


def test_A4_inf_in_predictor_names_column_and_rows(df):
    data = df.copy()
    data.loc[103, "x"] = np.inf
    with pytest.raises(mb.DataError, match=r"column 'x' has 1 infinite value\(s\) in rows 103; replace them"):
        fit("y ~ x + (1|g)", data)
    with pytest.raises(mb.DataError, match=r"fixed-effect columns 'log\(z\)' are not finite in rows 104 "
                                           r"\(e.g. log of 0.*fix or remove") as info:
        fit("y ~ log(z) + (1|g)", df.assign(z=np.where(df.index == 104, 0.0, 1.0 + df.x.abs())))
    assert list(info.value.problems["row"]) == [104]
    with pytest.raises(mb.DataError, match=r"random term \(0 \+ log\(z\) \| g\) are not finite in rows 104"):
        fit("y ~ x + (0 + log(z)|g)", df.assign(z=np.where(df.index == 104, 0.0, 1.0 + df.x.abs())))


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
@pytest.mark.parametrize("dtype", ["object", "string", "category"])
def test_A5_nan_grouping_factor_is_missing_never_a_level(df, missing, dtype):
    data = df.copy()
    g = data["g"].astype(object)
    g.loc[[102, 133]] = missing
    data["g"] = g.astype(dtype)
    with pytest.warns(mb.RowsDroppedWarning, match=r"2 of 48 .*\(g: 2\): rows 102, 133"):
        res = fit("y ~ x + (1|g)", data)
    levels = set(res.random_effects("g")["level"])
    assert not levels & {"nan", "None", "<NA>", "NaN", "NA", ""}
    assert levels == {f"g{i}" for i in range(8)}
    assert list(res.dropped_rows) == [102, 133]


def test_A6_constant_response(df):
    with pytest.raises(mb.DataError, match=r"the response 'y' is constant \(3\.5\) and thus model fitting "
                                           r"has failed; check the response column"):
        fit("y ~ x + (1|g)", df.assign(y=3.5))


def test_A7_non_numeric_response(df):
    for bad in (df.s, pd.Categorical(df.s)):
        with pytest.raises(mb.DataError, match=r"response 's' must be numeric; it has dtype .*first values "
                                               r"'M', 'F', 'M'.*convert it with pd.to_numeric"):
            fit("s ~ x + (1|g)", df.assign(s=bad))
    with pytest.warns(mb.DataWarning, match=r"response 'b' is boolean; it is used as 0/1"):
        res = fit("b ~ x + (1|g)", df.assign(b=df.y > 1))
    np.testing.assert_array_equal(res.fitted + res.residuals, (df.y > 1).astype(float))


def test_A8_caller_variables_never_used_missing_names_listed(df):
    secret = np.ones(len(df))  # noqa: F841 - in the caller's frame on purpose
    xx = df.x  # noqa: F841
    with pytest.raises(mb.FormulaError) as info:
        fit("y ~ secret + xx + (1|g)", df)
    msg = str(info.value)
    assert "unknown names 'secret', 'xx' (did you mean 'x'?)" in msg
    assert "names resolve against the data columns only, never Python variables" in msg
    assert list(info.value.problems["name"]) == ["secret", "xx"]


def test_A9_rank_deficient_x_dropped_named_nan_and_aligned(df):
    data = df.assign(x2=2 * df.x, z=df.o)
    with pytest.warns(mb.RankDeficiencyWarning,
                      match=r"rank deficient so dropping 1 column\(s\): 'x2'; they are reported as NaN "
                            r"with dropped=True \(remove them from the formula"):
        res = fit("y ~ x + x2 + z + (1|g)", data)
    fe = res.fixed_effects
    assert list(fe.index) == ["(Intercept)", "x", "x2", "z"]
    assert fe.loc["x2", "dropped"] and np.isnan(fe.loc["x2", "estimate"])
    ref = fit("y ~ x + z + (1|g)", data)
    for name in ("(Intercept)", "x", "z"):  # names and values stay aligned (MixedModels.jl #242)
        assert fe.loc[name, "estimate"] == pytest.approx(ref.fixed_effects.loc[name, "estimate"], rel=1e-10)
    assert res.diagnostics.query("check == 'rank_x'").shape[0] == 1
    with pytest.raises(mb.DataError, match=r"rank deficient: 1 column\(s\) 'x2' are linear combinations.*"
                                           r"remove them from the formula") as info:
        fit("y ~ x + x2 + z + (1|g)", data, checks={"rank_x": "error"})
    assert list(info.value.problems["column"]) == ["x2"]
    # an all-zero column (MixedModels.jl #242) is dropped by name too
    with pytest.warns(mb.RankDeficiencyWarning, match="'zero'"):
        res0 = fit("y ~ zero + x + z + (1|g)", data.assign(zero=0.0))
    assert res0.fixed_effects.loc["x", "estimate"] == pytest.approx(ref.fixed_effects.loc["x", "estimate"])


def test_A10_scale_warning_names_columns_and_sds(df):
    with pytest.warns(mb.ScaleWarning, match=r"very different scales: x \(sd .*\), big \(sd .*e\+0?\d\); "
                                             r"consider rescaling them \(check 'scale_x'\)"):
        res = fit("y ~ x + big + (1|g)", df.assign(big=df.o * 1e6))
    assert "scale_x" in set(res.diagnostics["check"])
    with no_warnings():
        fit("y ~ x + big + (1|g)", df.assign(big=df.o * 1e6), checks={"scale_x": "ignore"})


def test_A11_integer_covariate_noted_and_switchable(df):
    res = fit("y ~ h + (1|g)", df)  # default "note": recorded, no warning
    row = res.diagnostics.query("check == 'int_covariate'")
    assert row["level"].tolist() == ["note"]
    assert "integer column 'h' with 4 distinct values enters as a continuous covariate; write C(h)" \
        in row["message"].iloc[0]
    with pytest.warns(mb.DataWarning, match=r"integer column 'h'.*write C\(h\) if it is a factor"):
        fit("y ~ h + (1|g)", df, checks={"int_covariate": "warn"})
    # grouping factors stored as int are factors (lme4 test-factors.R)
    assert_same_fit(fit("y ~ x + (1|h)", df, variances={"h": 1.0, "residual": 2.0}),
                    fit("y ~ x + (1|h)", df.assign(h=df.h.astype(str)), variances={"h": 1.0, "residual": 2.0}))


def test_A12_unused_categorical_levels_are_dropped(df):
    data = df.assign(s=pd.Categorical(df.s, categories=["F", "M", "X"]),
                     g=pd.Categorical(df.g, categories=[*sorted(df.g.unique()), "empty"]))
    with no_warnings():
        res = fit("y ~ s + (1|g)", data)
    assert list(res.fixed_effects.index) == ["(Intercept)", "s[T.M]"]
    assert "empty" not in set(res.random_effects("g")["level"])
    # ...unless a relationship matrix defines them (ancestors get BLUPs)
    ped = mb.Pedigree.from_frame(mb.datasets.load("mrode_3_1_pedigree"), id="animal", sire="sire", dam="dam")
    calves = mb.datasets.load("mrode_3_1")
    res = mb.fit("wwg ~ 0 + sex + (1|calf)", calves, cov={"calf": ped}, variances={"calf": 20, "residual": 40})
    blup = res.random_effects("calf")
    assert len(blup) == len(ped) > calves.calf.nunique() and (~blup["has_records"]).sum() > 0


def test_A13_weights_negative_nan_inf_error_zero_dropped(df):
    base = df.assign(w=1.0)
    for value, what in ((-1.0, "negative"), (np.nan, r"missing \(NaN\)")):
        data = base.copy()
        data.loc[[105, 106], "w"] = value
        with pytest.raises(mb.DataError, match=rf"weights 'w' are {what} in 2 row\(s\): 105, 106; precision "
                                               r"weights .* must be finite and >= 0") as info:
            fit("y ~ x + (1|g)", data, weights="w")
        assert list(info.value.problems["row"]) == [105, 106]
    data = base.copy()
    data.loc[105, "w"] = np.inf
    with pytest.raises(mb.DataError, match=r"column 'w' has 1 infinite value\(s\) in rows 105"):
        fit("y ~ x + (1|g)", data, weights="w")
    with pytest.raises(mb.DataError, match="weights 'w' must be a numeric column"):
        fit("y ~ x + (1|g)", base.assign(w="1"), weights="w")
    data = base.copy()
    data.loc[[110, 111], "w"] = 0.0
    with pytest.warns(mb.RowsDroppedWarning, match=r"dropped 2 of 48 rows with zero weight in 'w' \(rows 110, 111\)"):
        res = fit("y ~ x + (1|g)", data, weights="w")
    assert list(res.dropped_rows) == [110, 111]
    assert_same_fit(res, fit("y ~ x + (1|g)", data.drop([110, 111]), weights="w"))
    with pytest.raises(mb.DataError, match=r"rows with zero weight .*carry no information"):
        fit("y ~ x + (1|g)", data, weights="w", na_action="raise")
    # var(e_i) = sigma^2 / w_i: a duplicated record equals weight 2
    dup = pd.concat([df, df.loc[[100]]])
    w2 = df.assign(w=np.where(df.index == 100, 2.0, 1.0))
    assert_same_fit(fit("y ~ x + (1|g)", dup), fit("y ~ x + (1|g)", w2, weights="w"), rtol=1e-9)


def test_A14_offset_is_a_clear_error_and_the_equivalent_works(df):
    with pytest.raises(mb.FormulaError, match=r"offset\(o\) is not supported: .*write the response as "
                                              r"I\(y - o\) and drop the offset term"):
        fit("y ~ x + offset(o) + (1|g)", df)
    with pytest.raises(mb.FormulaError, match=r"I\(log\(y\) - 3 \* o\)"):
        mb.parse_formula("log(y) ~ x + offset(3 * o)", df.columns)
    # the documented equivalent: fit(y ~ x + offset(o)) == fit(y - o ~ x)
    assert_same_fit(fit("I(y - o) ~ x + (1|g)", df), fit("yo ~ x + (1|g)", df.assign(yo=df.y - df.o)))


def test_A15_duplicate_columns_error_non_unique_index_reported(df):
    data = pd.concat([df, df[["x"]]], axis=1)
    with pytest.raises(mb.DataError, match=r"duplicate column names 'x'; rename them"):
        fit("y ~ x + (1|g)", data)
    dup = df.set_axis(["r1", "r2"] * (len(df) // 2))
    dup.iloc[[0, 3], dup.columns.get_loc("y")] = np.nan
    with pytest.warns(mb.RowsDroppedWarning, match=r"rows 'r1', 'r2'"):
        res = fit("y ~ x + (1|g)", dup)
    assert list(res.dropped_rows) == ["r1", "r2"]
    assert len(res.fitted) == len(df) - 2
    assert_same_fit(res, fit("y ~ x + (1|g)", df.drop(df.index[[0, 3]])))
    # rows are identified by position: repeated labels neither duplicate nor mix up rows
    for aug in (res.augment(), res.augment(dup.assign(extra=np.arange(len(dup))))):
        assert list(aug.index) == list(res.fitted.index)
        np.testing.assert_allclose(aug["y"], dup["y"].dropna())
        np.testing.assert_allclose(aug[".fitted"] + aug[".resid"], aug["y"])
    np.testing.assert_array_equal(aug["extra"], np.delete(np.arange(len(dup)), [0, 3]))
    with pytest.raises(mb.DataError, match=r"row labels repeat.*reset_index"):
        res.augment(dup.iloc[::-1])


def test_A16_special_column_names_backticks_and_q(df):
    data = df.rename(columns={"y": "body weight", "x": "age (d)", "g": "pen-id"})
    a = mb.fit("`body weight` ~ `age (d)` + (1|`pen-id`)", data, variances={"pen-id": 1.0, "residual": 2.0})
    b = mb.fit("Q('body weight') ~ `age (d)` + (1|`pen-id`)", data, variances={"pen-id": 1.0, "residual": 2.0})
    ref = fit("y ~ x + (1|g)", df)
    np.testing.assert_allclose(a.fixed_effects["estimate"], ref.fixed_effects["estimate"], rtol=1e-10)
    np.testing.assert_allclose(b.fixed_effects["estimate"], ref.fixed_effects["estimate"], rtol=1e-10)
    pred = a.predict(data.head(3))
    np.testing.assert_allclose(pred, a.fitted.head(3))
    with pytest.raises(mb.FormulaError, match=r"quote column names with spaces or symbols in backticks, "
                                              r"e.g. `body weight`"):
        mb.fit("body weight ~ x + (1|g)", data)


def test_A17_no_rows_or_too_few_rows(df):
    with pytest.raises(mb.DataError, match=r"after removing 48 rows with missing values 0 rows remain "
                                           r"\(y: 48\); check those columns"):
        fit("y ~ x + (1|g)", df.assign(y=np.nan))
    with pytest.raises(mb.DataError, match=r"the data have no rows; a model needs observations"):
        fit("y ~ x + (1|g)", df.iloc[:0])
    few = df.copy()
    few.loc[few.index[3:], "x"] = np.nan
    with pytest.raises(mb.DataError, match=r"3 observation\(s\) remain for 3 estimable fixed effects after "
                                           r"removing 45 rows with missing values"), \
            pytest.warns(mb.RowsDroppedWarning):
        fit("y ~ x + s + (1|g)", few.assign(s=["M", "F", "F"] + ["M"] * 45))


def test_A18_row_and_index_order_do_not_matter(df):
    ref = fit("y ~ x + s + (1|g)", df)
    perm = df.sample(frac=1.0, random_state=3)
    shuffled = fit("y ~ x + s + (1|g)", perm)
    assert_same_fit(ref, shuffled, rtol=1e-9)
    pd.testing.assert_series_equal(ref.fitted, shuffled.fitted.loc[ref.fitted.index], rtol=1e-9)
    relabelled = fit("y ~ x + s + (1|g)", perm.reset_index(drop=True))
    assert_same_fit(ref, relabelled, rtol=1e-9)


def test_A19_resource_guard_huge_interaction_refused_before_building(df, monkeypatch):
    n = 3000
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"y": rng.normal(size=n), "a": [f"a{i}" for i in range(n)],
                        "b": [f"b{i}" for i in rng.permutation(n)], "g": [f"g{i % 10}" for i in range(n)]})

    def refuse(*args, **kwargs):
        raise AssertionError("the design was built although the guard should have refused it")

    with monkeypatch.context() as mp:
        mp.setattr(design_module, "model_matrix", refuse)  # nothing is built
        start = time.perf_counter()
        with pytest.raises(mb.ResourceError, match=r"the fixed part would have about 9,000,001 columns \(the "
                                                   r"widest term is a:b \(3000 x 3000 levels\)\).*pass "
                                                   r"allow_large=True") as info:
            mb.fit("y ~ a:b + (1|g)", big, variances=V)
        assert time.perf_counter() - start < 5
    assert isinstance(info.value, mb.MixedBlupError) and isinstance(info.value, ValueError)
    assert "p" in set(info.value.problems["part"])
    # a memory limit (configurable) with the override
    monkeypatch.setattr(design_module, "MEMORY_LIMIT", 1e3)
    with pytest.raises(mb.ResourceError, match=r"would need about .* GB .*more than the limit of 1e-06 GB.*"
                                               r"allow_large=True"):
        fit("y ~ x + s + (1|g)", df)
    res = fit("y ~ x + s + (1|g)", df, allow_large=True)
    assert res.nobs == len(df)


def test_A19_wide_plain_factor_is_not_refused(monkeypatch):
    """A plain factor is built in O(n) by the fast path: its width is no reason to refuse
    (herd-years of a national evaluation); an interaction of the same width still is."""
    rng = np.random.default_rng(1)
    n = 600
    data = pd.DataFrame({"y": rng.normal(size=n), "hy": [f"h{i % 150}" for i in range(n)],
                         "a": [f"a{i % 15}" for i in range(n)], "b": [f"b{i % 10}" for i in rng.permutation(n)],
                         "g": [f"g{i % 20}" for i in range(n)]})
    monkeypatch.setattr(design_module, "MAX_FIXED_COLUMNS", 100)
    res = mb.fit("y ~ 0 + hy + (1|g)", data, variances={"g": 1.0, "residual": 1.0})
    assert res.fixed_effects.shape[0] == 150
    with pytest.raises(mb.ResourceError, match="the fixed part would have about 151 columns"):
        mb.fit("y ~ a:b + (1|g)", data, variances={"g": 1.0, "residual": 1.0})


def test_A19_other_dense_builders_are_guarded():
    # dense relationship matrix from a pedigree: refused above max_size GB, nothing allocated
    n = 40_000
    ped = mb.Pedigree.from_frame(pd.DataFrame({"id": np.arange(1, n + 1), "sire": 0, "dam": 0}),
                                 id="id", sire="sire", dam="dam")
    with pytest.raises(mb.PedigreeError, match=r"dense relationship matrix for 40000 animals needs 12.8 GB, "
                                               r"more than max_size=2.0 GB; pass a larger max_size="):
        ped.a_matrix()
    # dense user G (D8): a zero-strided view of the right shape allocates nothing
    G = np.broadcast_to(np.float64(1.0), (25_000, 25_000))
    with pytest.raises(mb.CovarianceError, match=r"dense 25000 x 25000 relationship matrix needs 5.0 GB per "
                                                 r"copy; pass allow_large=True"):
        mb.Relationship(G, labels=[str(i) for i in range(25_000)])


def test_A19_savvy_nested_interactions_do_not_blow_up():
    """lme4's test-factors.R: (1|f1/f2) with 10^4 levels stays sparse and quick."""
    rng = np.random.default_rng(1)
    n = 30_000
    data = pd.DataFrame({"y": rng.normal(size=n), "f1": rng.integers(0, 100, n), "f2": rng.integers(0, 200, n)})
    start = time.perf_counter()
    res = mb.fit("y ~ 1 + (1|f1/f2)", data, variances={"f1": 1.0, "f2:f1": 1.0, "residual": 1.0})
    assert time.perf_counter() - start < 60
    assert res._terms_info.loc["f2:f1", "n_levels"] > 10_000


# ============================================================================ B. random-effect structure
def test_B1_single_level_grouping_factor(df):
    with pytest.raises(mb.DataError, match=r"grouping factor 'one' has a single observed level 'k'; a random "
                                           r"effect needs more than one level.*checks=\{'nlev_gt_1': 'warn'\}") \
            as info:
        mb.fit("y ~ x + (1|one)", df.assign(one="k"), variances={"one": 1.0, "residual": 1.0})
    assert info.value.problems.to_dict("records") == [{"term": "one", "level": "k"}]
    with pytest.warns(mb.DataWarning, match="single observed level 'k'"):
        mb.fit("y ~ x + (1|one)", df.assign(one="k"), variances={"one": 1.0, "residual": 1.0},
               checks={"nlev_gt_1": "warn"})


def test_B2_few_levels_noted_warned_only_when_enabled(df):
    data = df.assign(two=np.tile(["p", "q"], len(df) // 2))
    with no_warnings():
        res = mb.fit("y ~ x + (1|two)", data, variances={"two": 1.0, "residual": 1.0})
    note = res.diagnostics.query("check == 'nlev_gte_5'")
    assert note["level"].tolist() == ["note"]
    assert "'two' has only 2 observed levels; its variance may be poorly estimated" in note["message"].iloc[0]
    with pytest.warns(mb.DataWarning, match=r"'two' has only 2 observed levels.*consider a fixed effect"):
        mb.fit("y ~ x + (1|two)", data, variances={"two": 1.0, "residual": 1.0}, checks={"nlev_gte_5": "warn"})


def test_B3_levels_vs_observations_iid_and_relationship(df):
    data = df.assign(obs=[f"r{i}" for i in range(len(df))])
    with pytest.raises(mb.DataError, match=r"number of levels of 'obs' \(48\) is not below the number of "
                                           r"observations \(48\); its variance is confounded with the residual: "
                                           r"give known variances= or remove the term"):
        mb.fit("y ~ x + (1|obs)", data)
    fit("y ~ x + (1|obs)", data, variances={"obs": 1.0, "residual": 1.0})  # known variances: fine
    # a relationship matrix that is diagonal on the records is the same confounding ...
    G = mb.Relationship(np.eye(len(df)), labels=data.obs)
    with pytest.raises(mb.DataError, match=r"'obs'.*relationship matrix is diagonal on the observed levels"):
        mb.fit("y ~ x + (1|obs)", data, cov={"obs": G})
    # ... an animal model with one record per animal and relatives is not (q >= n legitimately)
    rng = np.random.default_rng(3)
    A = np.full((len(df), len(df)), 0.0) + np.kron(np.eye(8), np.full((6, 6), 0.25)) + 0.75 * np.eye(len(df))
    res = mb.fit("y ~ x + (1|obs)", data.assign(y=data.y + rng.normal(size=len(df))),
                 cov={"obs": mb.Relationship(A, labels=data.obs)})
    assert "nobs_vs_nlev" not in set(res.diagnostics["check"])


def test_B4_observations_vs_random_effects(df):
    data = df.assign(pair=np.repeat([f"p{i}" for i in range(24)], 2))
    with pytest.raises(mb.DataError, match=r"number of observations \(48\) is not above the number of random "
                                           r"effects of 'pair' \(48\); the variance parameters are probably "
                                           r"unidentifiable: simplify the term"):
        mb.fit("y ~ x + (x|pair)", data)
    with pytest.warns(mb.DataWarning, match="probably unidentifiable"):
        mb.fit("y ~ x + (x|pair)", data, checks={"nobs_vs_nre": "warn"})


def test_B5_same_variable_on_both_sides_of_bar(df):
    with pytest.raises(mb.FormulaError, match=r"Same variable appears on both sides of \|: 'g' in \(g\|g\); "
                                              r"a column may not be both .*remove it from the left side"):
        fit("y ~ x + (g|g)", df)
    with pytest.raises(mb.FormulaError, match=r"Same variable appears on both sides of \|: 'x' in \(x\|g/x\)"):
        fit("y ~ (x|g/x)", df)


def test_B6_phenotyped_ids_missing_from_pedigree():
    ped_frame = mb.datasets.load("mrode_3_1_pedigree")
    calves = mb.datasets.load("mrode_3_1")
    ped = mb.Pedigree.from_frame(ped_frame[~ped_frame.animal.isin(["7", "8"])], id="animal", sire="sire", dam="dam")
    with pytest.raises(mb.CovarianceError, match=r"2 level\(s\) of 'calf' in the data are not in its "
                                                 r"relationship structure .*'7', '8'.*read them as strings with "
                                                 r"the same format, or add the animals to the pedigree") as info:
        mb.fit("wwg ~ 0 + sex + (1|calf)", calves, cov={"calf": ped}, variances={"calf": 20, "residual": 40})
    assert sorted(info.value.problems["level"]) == ["7", "8"]


def test_B7_implicit_nesting_noted(df):
    pastes = mb.datasets.load("pastes")
    v = {"batch": 1.0, "cask": 1.0, "residual": 1.0}
    res = mb.fit("strength ~ 1 + (1|batch) + (1|cask)", pastes, variances=v)
    note = res.diagnostics.query("check == 'implicit_nesting'")
    assert note["level"].tolist() == ["note"]
    assert "the labels of 'cask' ('a', 'b', 'c') recur within several levels of 'batch'" in note.message.iloc[0]
    assert "write (1|batch/cask) or (1|batch:cask)" in note.message.iloc[0]
    with pytest.warns(mb.DataWarning, match=r"if cask is nested in batch.*\(1\|batch/cask\)"):
        mb.fit("strength ~ 1 + (1|batch) + (1|cask)", pastes, variances=v, checks={"implicit_nesting": "warn"})
    nested = mb.fit("strength ~ 1 + (1|batch/cask)", pastes, variances={"batch": 1.0, "cask:batch": 1.0,
                                                                          "residual": 1.0})
    assert "implicit_nesting" not in set(nested.diagnostics["check"])


def test_B8_relationship_labels_aligned_by_label_not_position(df):
    levels = sorted(df.g.unique())
    rng = np.random.default_rng(5)
    L = rng.normal(size=(8, 8))
    G = L @ L.T / 8 + np.eye(8)
    G = G / np.sqrt(np.outer(np.diag(G), np.diag(G)))  # unit diagonal, like a relationship matrix
    ref = fit("y ~ x + (1|g)", df, cov={"g": mb.Relationship(G, labels=levels)})
    order = rng.permutation(8)
    shuffled = mb.Relationship(G[np.ix_(order, order)], labels=[levels[i] for i in order])
    res = fit("y ~ x + (1|g)", df, cov={"g": shuffled})
    pd.testing.assert_frame_equal(ref.fixed_effects, res.fixed_effects, rtol=1e-10)
    a = ref.random_effects("g").set_index("level")["estimate"]
    b = res.random_effects("g").set_index("level")["estimate"]
    pd.testing.assert_series_equal(a, b.loc[a.index], rtol=1e-10)
    # extra labels (no records) are predicted; missing labels are an error naming them
    extra = mb.Relationship(np.eye(9), labels=[*levels, "newborn"])
    assert "newborn" in set(fit("y ~ x + (1|g)", df, cov={"g": extra}).random_effects("g")["level"])
    short = mb.Relationship(np.eye(7), labels=levels[:7])
    with pytest.raises(mb.CovarianceError, match=r"1 level\(s\) of 'g' in the data are not in its relationship "
                                                 r"structure .*'g7'"):
        fit("y ~ x + (1|g)", df, cov={"g": short})


def test_B9_fixed_and_random_same_factor(df):
    with pytest.warns(mb.DataWarning, match=r"'g' appears as both a fixed effect and a grouping factor; its "
                                            r"random-effect variance is not identifiable.*remove 'g' from the "
                                            r"fixed part or from the random part \(check 'fixed_and_random'\)"):
        res = fit("y ~ g + (1|g)", df)
    assert "fixed_and_random" in set(res.diagnostics["check"])
    with pytest.raises(mb.DataError, match="both a fixed effect and a grouping factor"):
        fit("y ~ C(g) + (1|g)", df, checks={"fixed_and_random": "error"})
    with no_warnings():  # a fixed factor with random slopes within it is a legitimate model
        fit("y ~ g + x + (0 + x|g)", df, variances={"g": 1.0, "residual": 2.0})
        fit("y ~ g + (1|g)", df, checks={"fixed_and_random": "ignore"})


# ============================================================================ F. prediction and post-fit
@pytest.fixture
def res(df):
    return fit("y ~ x + s + (1|g)", df)


def test_F1_new_grouping_levels(df, res):
    new = pd.DataFrame({"x": [0.1, 0.2, 0.3], "s": ["M", "F", "M"], "g": ["g1", "zz", "yy"]}, index=[7, 8, 9])
    with pytest.raises(mb.DataError, match=r"2 level\(s\) of 'g' were not in the training data .*'zz', 'yy'; "
                                           r"pass new_levels='population'") as info:
        res.predict(new)
    assert list(info.value.problems["level"]) == ["zz", "yy"]
    pop = res.predict(new, new_levels="population")
    marginal = res.predict(new, include_random=False)
    np.testing.assert_allclose(pop.loc[[8, 9]], marginal.loc[[8, 9]])
    nan = res.predict(new, new_levels="nan", se=True)
    assert nan.loc[[8, 9]].isna().all().all() and nan.loc[7].notna().all()
    assert nan.loc[7, "prediction"] == pytest.approx(pop.loc[7])
    with pytest.raises(ValueError, match="new_levels must be one of"):
        res.predict(new, new_levels="zero")


def test_F2_nan_in_newdata_gives_nan_rows_never_shorter(df, res):
    new = df.head(5).copy()
    new.loc[101, "x"] = np.nan
    new.loc[103, "g"] = None
    with pytest.warns(mb.DataWarning, match=r"2 of 5 rows of newdata have missing values in model columns "
                                            r"\(g, x\) and are predicted as NaN: rows 101, 103"):
        out = res.predict(new, se=True)
    assert out.index.equals(new.index)
    assert out.loc[[101, 103]].isna().all().all()
    np.testing.assert_allclose(out.loc[[100, 102, 104], "prediction"], res.fitted.loc[[100, 102, 104]])


def test_F3_predict_includes_random_effects_by_default(df, res):
    cond = res.predict(df)
    np.testing.assert_allclose(cond, res.fitted)
    marg = res.predict(df, include_random=False)
    blup = res.random_effects("g").set_index("level")["estimate"]
    np.testing.assert_allclose(cond - marg, blup.loc[df.g].to_numpy())


def test_F4_outputs_aligned_with_input_rows_after_na_removal(df):
    data = df.copy()
    data.loc[[100, 120], "y"] = np.nan
    data.loc[[110], "g"] = np.nan
    with pytest.warns(mb.RowsDroppedWarning):
        res = fit("y ~ x + (1|g)", data)
    kept = data.index.drop([100, 110, 120])
    assert res.fitted.index.equals(kept) and res.residuals.index.equals(kept)
    np.testing.assert_allclose(res.residuals, data.loc[kept, "y"] - res.fitted)
    pd.testing.assert_series_equal(res.predict(), res.fitted, check_names=False)
    with pytest.warns(mb.DataWarning, match="predicted as NaN"):
        full = res.predict(data)
    assert full.index.equals(data.index) and full.loc[kept].notna().all()
    np.testing.assert_allclose(full.loc[kept], res.fitted)


def test_F5_rank_deficient_design_reused_at_predict_time(df):
    data = df.assign(x2=2 * df.x)
    with pytest.warns(mb.RankDeficiencyWarning, match="'x2'"):
        res = fit("y ~ x + x2 + s + (1|g)", data)
    # new data: other rows, columns in another order, itself collinear in other ways
    new = data.iloc[::-1].head(6)[["s", "g", "x2", "x"]].assign(x2=0.0)
    beta = res.fixed_effects["estimate"]
    blup = res.random_effects("g").set_index("level")["estimate"]
    expected = (beta["(Intercept)"] + beta["x"] * new.x + beta["s[T.M]"] * (new.s == "M")
                + blup.loc[new.g].to_numpy())
    np.testing.assert_allclose(res.predict(new), expected)
    np.testing.assert_allclose(res.predict(data), res.fitted)


def test_F6_unseen_fixed_effect_category(df, res):
    new = pd.DataFrame({"x": [0.1], "s": ["X"], "g": ["g1"]})
    with pytest.raises(mb.DataError, match=r"new data has categories not seen when fitting .*'X'.*drop those "
                                           r"rows from newdata, or refit"):
        res.predict(new)


# ============================================================================ G. I/O and library hygiene
def test_G1_no_sentinel_by_default_and_explicit_missing_code(df):
    data = df.copy()
    data.loc[[100, 101], "y"] = 0.0
    data.loc[102, "x"] = -999.0
    with no_warnings():
        res = fit("y ~ x + (1|g)", data, checks={"scale_x": "ignore"})
    assert res.nobs == len(df) and len(res.dropped_rows) == 0  # a measured 0 is a 0
    with pytest.warns(mb.DataWarning, match=r"missing_code=-999.0 matched 1 value\(s\) in the model columns "
                                            r"\(x: 1\); they are treated as missing"), \
            pytest.warns(mb.RowsDroppedWarning, match="rows 102"):
        res = fit("y ~ x + (1|g)", data, missing_code=-999.0)
    assert list(res.dropped_rows) == [102]
    with pytest.warns(mb.DataWarning, match=r"missing_code=-5 matched 0 value\(s\) .*\(no column\)"):
        fit("y ~ x + (1|g)", df, missing_code=-5)


def test_G2_library_code_has_no_prints_exits_or_file_writes(df, tmp_path, monkeypatch, capfd):
    root = pathlib.Path(mb.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        if path.name == "__main__.py":  # the command-line entry point may print
            continue
        text = path.read_text()
        for pattern in (r"^\s*print\(", r"\bsys\.exit\(", r"\bos\.system\(", r"\bsubprocess\b", r"\binput\("):
            for m in re.finditer(pattern, text, flags=re.MULTILINE):
                offenders.append(f"{path.name}:{text[:m.start()].count(chr(10)) + 1}: {m.group().strip()}")
    assert offenders == []
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    data = df.copy()
    data.loc[100, "y"] = np.nan
    with pytest.warns(mb.RowsDroppedWarning):
        res = mb.fit("y ~ x + s + (1|g)", data)
    str(res.summary())
    res.predict(df.head(3), se=True)
    res.random_effects()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert set(os.listdir(tmp_path)) == before


def test_G3_result_files_never_unpickled(df, tmp_path, monkeypatch):
    """A crafted NPZ with a pickled object (checksums recomputed, as an attacker would) is refused
    without running the pickle; edited files are refused (more in tests/test_io.py)."""
    from mixedblup.io import _content_hash

    res = fit("y ~ x + (1|g)", df)
    res.save(tmp_path / "fit")
    npz_path, json_path = tmp_path / "fit.npz", tmp_path / "fit.json"
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    called = []

    class Payload:
        def __reduce__(self):
            return (called.append, ("pwned",))

    key = next(iter(arrays))
    arrays[key] = np.array([Payload()], dtype=object)
    np.savez(npz_path, **arrays)
    import hashlib

    doc = json.loads(json_path.read_text())
    doc["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    doc["content_sha256"] = _content_hash(doc)
    json_path.write_text(json.dumps(doc))
    with pytest.raises(mb.DataError, match="refusing to load the saved results"):
        mb.load(tmp_path / "fit")
    assert called == []
    assert not any(hasattr(mb, name) for name in ("to_pickle", "read_pickle"))


def test_G4_formula_strings_are_never_evaluated():
    """The full battery is tests/test_formula_safety.py; here the contract at fit level."""
    data = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "x": [1.0, 2.0, 3.0, 5.0], "g": list("aabb")})
    calls = []
    real_import = builtins.__import__

    def guard_import(name, *args, **kwargs):
        if name.split(".")[0] in {"os", "subprocess"}:
            calls.append(name)
        return real_import(name, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "__import__", guard_import)
        with pytest.raises(mb.FormulaError, match=r"disallowed syntax '__import__'.*names starting with '_'"):
            mb.fit("y ~ x + __import__('os').system('true') + (1|g)", data)
    assert calls == []


# ============================================================================ check switches
def _scenario(name, df):
    """(formula, data, fit keywords) that trigger check ``name``."""
    pastes = mb.datasets.load("pastes")
    obs = df.assign(obs=[f"r{i}" for i in range(len(df))])
    pair = df.assign(pair=np.repeat([f"p{i}" for i in range(24)], 2))
    return {
        "nlev_gt_1": ("y ~ x + (1|one)", df.assign(one="k"), {"variances": {"one": 1.0, "residual": 1.0}}),
        "nlev_gte_5": ("y ~ x + (1|h)", df, {"variances": {"h": 1.0, "residual": 1.0}}),
        "nobs_vs_nlev": ("y ~ x + (1|obs)", obs, {}),
        "nobs_vs_nre": ("y ~ x + (x|pair)", pair, {}),
        "rank_x": ("y ~ x + x2 + (1|g)", df.assign(x2=3 * df.x), {"variances": V}),
        "scale_x": ("y ~ x + big + (1|g)", df.assign(big=df.o * 1e7), {"variances": V}),
        "int_covariate": ("y ~ h + (1|g)", df, {"variances": V}),
        "implicit_nesting": ("strength ~ 1 + (1|batch) + (1|cask)", pastes,
                             {"variances": {"batch": 1.0, "cask": 1.0, "residual": 1.0}}),
        "fixed_and_random": ("y ~ g + (1|g)", df, {"variances": V}),
        "collinear_x": ("y ~ x + x3 + (1|g)",
                        df.assign(x3=df.x + 5e-7 * np.random.default_rng(1).normal(size=len(df))),
                        {"variances": V}),
    }[name]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_switch_changes_behaviour(name, level, df):
    """lme4 #107: a switch that is itself ignored.  Each level does what it says."""
    formula, data, kw = _scenario(name, df)
    others = {n: "ignore" for n in CHECKS if n != name}
    checks = {**others, name: level}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if level == "error":
            with pytest.raises(mb.MixedBlupError) as info:
                mb.fit(formula, data, checks=checks, **kw)
            assert re.search(rf"checks=\{{'{name}': '(warn|\.\.\.)'\}}", str(info.value)) or name == "rank_x"
            return
        res = mb.fit(formula, data, checks=checks, **kw)
    ours = [w for w in caught if issubclass(w.category, mb.MixedBlupWarning)
            and not issubclass(w.category, (mb.SingularFitWarning, mb.ConvergenceWarning))]
    found = res.diagnostics.query("check == @name")
    if level == "warn":
        assert len(ours) >= 1 and found["level"].tolist() == ["warn"]
    elif level == "note":
        assert ours == [] and found["level"].tolist() == ["note"]
    else:
        assert ours == [] and found.empty


def test_switches_are_validated_themselves(df):
    with pytest.raises(mb.MixedBlupError, match=r"unknown check 'nlev_gt1'; the checks are \["):
        fit("y ~ x + (1|g)", df, checks={"nlev_gt1": "warn"})
    for bad in ("stop", "warning", "WARN", None, True, 1):
        with pytest.raises(mb.MixedBlupError, match=r"invalid level .* for check 'scale_x'; use one of"):
            fit("y ~ x + (1|g)", df, checks={"scale_x": bad})
    with pytest.raises(mb.MixedBlupError, match="checks= must be a dict"):
        fit("y ~ x + (1|g)", df, checks=["scale_x"])
    assert set(resolve_checks(None)) == set(CHECKS) == set(resolve_checks({}))
    assert all(default in LEVELS for default, _ in CHECKS.values())
