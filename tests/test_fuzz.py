"""Fuzz target: random DataFrames and random formulas through ``mb.fit``.

Whatever the input, the only exceptions allowed out of ``fit`` (and of ``predict`` /
``summary`` on a successful fit) are mixedblup's own (:class:`~mixedblup.MixedBlupError`
subclasses): no KeyError, IndexError, numpy LinAlgError, pandas or formulaic errors.

The default run is short and reproducible (``derandomize=True``, 100 examples); the
long run is marked ``slow`` (``pytest -m slow tests/test_fuzz.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixedblup as mb

NAMES = ["y", "x", "g", "h", "w", "body weight"]

# ----------------------------------------------------------------------------- columns
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-10, max_value=10),
    st.sampled_from([0.0, 1.0, -1.0, np.nan, 1e300, -1e-300, 1e8]),
)
LABELS = st.sampled_from(["a", "b", "c", "d", "0", "", " ", "nan", "None", "NA", "a b", "é", "12", "12.0"])


@st.composite
def column(draw, n):
    kind = draw(st.sampled_from(["float", "int", "bool", "str", "category", "mixed", "Int64", "boolean",
                                 "string", "constant", "few_levels", "datetime", "numeric_labels"]))
    if kind == "float":
        return pd.Series(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype=float)
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=np.int64)
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "str":
        return pd.Series(draw(st.lists(st.one_of(LABELS, st.none()), min_size=n, max_size=n)), dtype=object)
    if kind == "category":
        values = draw(st.lists(st.one_of(LABELS, st.none()), min_size=n, max_size=n))
        extra = draw(st.lists(LABELS, max_size=3))
        cats = list(dict.fromkeys([v for v in values if v is not None] + extra))
        return pd.Series(pd.Categorical(values, categories=cats))
    if kind == "mixed":
        return pd.Series(draw(st.lists(st.one_of(st.integers(0, 3), LABELS, st.none(), st.floats(0, 3)),
                                       min_size=n, max_size=n)), dtype=object)
    if kind == "Int64":
        return pd.Series(draw(st.lists(st.one_of(st.integers(-3, 3), st.none()), min_size=n, max_size=n)),
                         dtype="Int64")
    if kind == "boolean":
        return pd.Series(draw(st.lists(st.one_of(st.booleans(), st.none()), min_size=n, max_size=n)),
                         dtype="boolean")
    if kind == "string":
        return pd.Series(draw(st.lists(st.one_of(LABELS, st.none()), min_size=n, max_size=n)), dtype="string")
    if kind == "constant":
        return pd.Series([draw(FLOATS)] * n, dtype=float)
    if kind == "numeric_labels":  # 1, "1", 1.0 and " 1" are one level
        return pd.Series(draw(st.lists(st.sampled_from([1, "1", 1.0, " 1", 2, "2", "a", 0, "00"]), min_size=n,
                                       max_size=n)), dtype=object)
    if kind == "datetime":
        return pd.Series(pd.date_range("2020-01-01", periods=n, freq="D"))
    k = draw(st.integers(1, 4))
    return pd.Series([f"l{draw(st.integers(0, k - 1))}" for _ in range(n)], dtype=object)


@st.composite
def mostly_clean(draw, n, kind):
    """A column that usually makes a fittable model, with occasional faults."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "float":
        values = rng.normal(size=n) * draw(st.sampled_from([1.0, 1e-8, 1e8]))
    elif kind == "weights":
        values = rng.uniform(0.5, 2.0, size=n)
    elif kind == "int":
        return pd.Series(rng.integers(1, 5, size=n), dtype=np.int64)
    else:
        k = draw(st.integers(1, 6))
        return pd.Series([f"l{i}" for i in rng.integers(0, k, size=n)], dtype=object)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):  # sometimes a fault
        if n:
            values[draw(st.integers(0, n - 1))] = draw(st.sampled_from([np.nan, 0.0, -1.0, np.inf, -np.inf]))
    return pd.Series(values, dtype=float)


@st.composite
def frames(draw):
    n = draw(st.sampled_from([30, 20, 12, 8, 5, 3, 2, 1, 0]))
    cols = []
    if draw(st.sampled_from([True] * 4 + [False])):  # usually a fittable core, columns sometimes random
        core = {"y": "float", "x": "float", "g": "levels", "h": "int", "w": "weights", "body weight": "float"}
        for name, kind in core.items():
            clean = draw(st.sampled_from([True] * 5 + [False]))
            cols.append((name, draw(mostly_clean(n, kind) if clean else column(n))))
    if draw(st.sampled_from([False] * 3 + [True])):  # extra columns: random kinds, duplicate names
        for name in draw(st.lists(st.sampled_from(["z", *NAMES]), min_size=1, max_size=3)):
            cols.append((name, draw(column(n))))
    frame = pd.concat([c for _, c in cols], axis=1) if cols else pd.DataFrame(index=range(n))
    if cols:
        frame.columns = [name for name, _ in cols]
    index = draw(st.sampled_from(["range", "shifted", "duplicated", "strings", "shuffled"]))
    if index == "shifted":
        frame.index = frame.index + 100
    elif index == "duplicated" and n:
        frame.index = [i % 2 for i in range(n)]
    elif index == "strings":
        frame.index = [f"r{i}" for i in range(n)]
    elif index == "shuffled":
        frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 10)))
    return frame


# ----------------------------------------------------------------------------- formulas
RESPONSES = ["y", "x", "g", "log(y)", "I(y - x)", "sqrt(abs(y))", "`body weight`", "w", "nope", "", "y + x"]
FIXED = ["1", "0", "-1", "x", "g", "h", "x:g", "x*h", "C(h)", "C(g, Sum)", "log(x)", "poly(x, 2)", "scale(x)",
         "center(x)", "`body weight`", "I(x**2)", "x:h:g", "nope", "offset(x)", "exp(x)", "C(g, levels=['a', 'b'])",
         "Q('body weight')", "leg(x, 2)", "bs(x, df=3)"]
RANDOM = ["(1|g)", "(x|g)", "(1|g/h)", "(x||g)", "(1|h:g)", "(0 + x|g)", "(1|x)", "(1|h)", "(g|g)", "(1|nope)",
          "(log(x)|h)", "(1 + x + h|g)", "(1|`body weight`)", "(1|mates(g, h))", "(|g)", "(1|)"]
JUNK = ["+", "-", "*", "/", ":", "(", ")", "|", "||", "~", "[", "]", "{", "}", ",", "=", ".", "'", '"', "`",
        "__import__", "lambda", "1.5", "1e400", "\n", "\\", "#", "@", "%", ";", "ｘ", "\x00"]


@st.composite
def formulas(draw):
    mode = draw(st.sampled_from(["grammar"] * 7 + ["junk", "text"]))
    if mode == "text":
        return draw(st.text(max_size=80))
    response = draw(st.sampled_from(["y"] * 6 + RESPONSES))
    fixed = draw(st.lists(st.sampled_from(FIXED[:6] * 3 + FIXED), max_size=3))
    random = [draw(st.sampled_from(RANDOM[:8]))] if draw(st.sampled_from([True] * 5 + [False])) else []
    terms = fixed + random + draw(st.lists(st.sampled_from(RANDOM), max_size=2))
    if draw(st.booleans()):
        terms = draw(st.permutations(terms))
    if mode == "junk":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(terms)))
            terms.insert(pos, draw(st.sampled_from(JUNK)))
    sep = draw(st.sampled_from([" + "] * 6 + ["+", " - ", " "])) if terms else ""
    body = sep.join(terms) if terms else draw(st.sampled_from(["", "1"]))
    return f"{response} ~ {body}"


@st.composite
def options(draw):
    kw = {}
    if draw(st.booleans()):
        kw["variances"] = draw(st.sampled_from([
            {"g": 1.0, "residual": 1.0}, {"g": 0.0, "residual": 1.0}, {"h": 2.0, "residual": 1.0},
            {"g": [[1.0, 0.2], [0.2, 1.0]], "residual": 1.0}, {"g": -1.0, "residual": 1.0},
            {"g": 1.0, "residual": 0.0}, {"residual": 1.0}, {"g": np.nan, "residual": 1.0},
            {"g": 1.0, "h": 1.0, "h:g": 1.0, "residual": 1.0},
        ]))
    if draw(st.integers(0, 4)) == 0:
        kw["weights"] = draw(st.sampled_from(["w", "x", "g", "nope"]))
    if draw(st.integers(0, 4)) == 0:
        kw["na_action"] = draw(st.sampled_from(["drop", "raise"]))
    if draw(st.integers(0, 4)) == 0:
        kw["method"] = draw(st.sampled_from(["REML", "ML"]))
    if draw(st.integers(0, 5)) == 0:
        kw["checks"] = {name: "warn" for name in ("nlev_gt_1", "nobs_vs_nlev", "nobs_vs_nre")}
    if draw(st.integers(0, 6)) == 0:
        kw["missing_code"] = draw(st.sampled_from([0, -1.0, 1e8]))
    return kw


def run_fit(formula: str, data: pd.DataFrame, kw: dict, newdata: pd.DataFrame | None = None,
            predict_kw: dict | None = None) -> None:
    """Fit (and use the result, predict on ``newdata``); only mixedblup's own errors may escape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = mb.fit(formula, data, **kw)
        except mb.MixedBlupError:
            return
        str(res.summary())
        res.random_effects()
        res.fixed_effects  # noqa: B018
        for new in (data.head(5), newdata):
            if new is None:
                continue
            try:
                res.predict(new, **(predict_kw or {}))
            except mb.MixedBlupError:
                pass


PREDICT_OPTIONS = st.fixed_dictionaries({}, optional={
    "new_levels": st.sampled_from(["error", "population", "nan"]),
    "include_random": st.booleans(),
    "se": st.booleans(),
})


FUZZ = given(frames(), formulas(), options(), st.one_of(st.none(), frames()), PREDICT_OPTIONS)


@settings(max_examples=100, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@FUZZ
def test_fuzz_fit_raises_only_mixedblup_errors(data, formula, kw, newdata, predict_kw):
    run_fit(formula, data, kw, newdata, predict_kw)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@FUZZ
def test_fuzz_fit_raises_only_mixedblup_errors_long(data, formula, kw, newdata, predict_kw):
    run_fit(formula, data, kw, newdata, predict_kw)


# ----------------------------------------------------------------------------- crashes found (regressions)
def _base(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "g": [f"g{i % 4}" for i in range(n)]})


KNOWN = {"variances": {"g": 1.0, "residual": 1.0}}
REGRESSIONS = [
    # 1, "1" and 1.0 are three categories but one level: pandas InvalidIndexError from the level index
    pytest.param("y ~ x + (1|g)", _base().assign(g=[1, "1", 1.0, "a"] * 5), KNOWN, id="mixed-type-levels"),
    pytest.param("y ~ x + (1|g)", _base().assign(g=[1, "1", 1.0, "a"] * 5), {}, id="mixed-type-levels-reml"),
    # a pandas "string" column as a covariate: formulaic's sparse output failed (wrong FormulaError)
    pytest.param("y ~ x + (1|g)", _base().assign(x=pd.array(["a", "b", None, "c"] * 5, dtype="string")), KNOWN,
                 id="string-dtype-covariate"),
    # C(g, levels=[...]) missing categories: formulaic silently encoded them as the reference level
    pytest.param("y ~ C(g, levels=['g0', 'g1']) + (1|g)", _base(), KNOWN, id="levels-outside-C"),
    pytest.param("y ~ x + (1|g)", _base().assign(x=pd.date_range("2020", periods=20)), KNOWN, id="dates"),
    pytest.param("y ~ x + (1|g)", _base().iloc[:0], KNOWN, id="no-rows"),
]


@pytest.mark.parametrize("formula,data,kw", REGRESSIONS)
def test_fuzz_regressions(formula, data, kw):
    run_fit(formula, data, kw)


def test_fixed_regressions_behave():
    """The crashes found by fuzzing and probing now do the right thing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mb.fit("y ~ x + (1|g)", _base().assign(g=[1, "1", 1.0, "a"] * 5), **KNOWN)
    assert sorted(res.random_effects("g")["level"]) == ["1", "a"]
    s = _base().assign(x=pd.array(["a", "b", None, "c"] * 5, dtype="string"))
    with pytest.warns(mb.RowsDroppedWarning):
        res = mb.fit("y ~ x + (1|g)", s, **KNOWN)
    assert list(res.fixed_effects.index) == ["(Intercept)", "x[T.b]", "x[T.c]"]
    with pytest.raises(mb.DataError, match=r"categories outside of the nominated levels.*reference level; list "
                                           r"every category in levels="):
        mb.fit("y ~ C(g, levels=['g0', 'g1']) + (1|g)", _base(), **KNOWN)
    with pytest.raises(mb.FormulaError, match=r"column\(s\) 'x' hold dates or durations: convert them"):
        mb.fit("y ~ x + (1|g)", _base().assign(x=pd.date_range("2020", periods=20)), **KNOWN)
