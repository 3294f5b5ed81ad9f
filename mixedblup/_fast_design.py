"""A fast path for large fixed-effect designs made of plain factors and covariates.

formulaic builds a sparse categorical column one at a time (about 0.35 ms per level),
so a fixed factor with 30,000 herd-years takes ~10 s before anything is solved.  For
fixed parts whose every term is the intercept, a plain data column, or a product of
plain columns with at most one categorical among them (``hy``, ``0 + hy + sex``,
``hy + x``, ``x:hy``), :func:`fast_fixed` builds the same sparse ``X`` directly with
numpy: codes from the categories, one ``csc_matrix`` per term.

It produces exactly what formulaic would: the same columns, names (``hy[T.b]`` for
reduced rank, ``hy[b]`` for full rank), values and order.  To stay exact it lets
formulaic itself decide the structure -- term order, which categorical terms are
reduced-rank (treatment contrasts, first level as reference) -- on a tiny synthetic
frame with at most three levels per factor, then builds the same encoding on the
tiny frame and compares it with formulaic's (names and values).  Anything that does
not match, or is not covered (``C()``, transforms, interactions of two factors,
boolean columns...), returns ``None`` and the caller uses formulaic unchanged.

The model spec (:class:`FastModelSpec`) re-encodes new data (``predict``) with the
training levels: unseen categories raise formulaic's ``DataMismatchWarning`` (which
``predict`` turns into a :class:`~mixedblup.errors.DataError`), as formulaic's spec
does.  Attributes it does not provide itself are delegated to a formulaic
``ModelSpec`` built on first use from a frame holding every training level.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["FAST_FIXED_MIN_COLUMNS", "FastModelSpec", "covers", "fast_fixed"]

#: Fixed parts with fewer (estimated) columns go through formulaic as before.
FAST_FIXED_MIN_COLUMNS = 100

#: Levels per factor in the synthetic frame formulaic is run on to learn the structure.
_TINY_LEVELS = 3


def _is_categorical(values: pd.Series) -> bool:
    """formulaic's own rule (pandas materializer)."""
    return values.dtype in ("object", "str") or isinstance(values.dtype, pd.CategoricalDtype)


def _is_numeric(values: pd.Series) -> bool:
    dtype = values.dtype
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
            and not pd.api.types.is_extension_array_dtype(dtype))


def _levels_and_codes(values: pd.Series) -> tuple[list[Any], np.ndarray]:
    """Categories as formulaic derives them (dtype order for a categorical, sorted otherwise)
    and the code of every row (-1 for missing)."""
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype("category")
    return list(cat.cat.categories), np.asarray(cat.cat.codes, dtype=np.int64)


def _numeric_product(frame: pd.DataFrame, names: list[str]) -> np.ndarray | None:
    """Elementwise product of numeric columns in the term's order (None: no covariate)."""
    if not names:
        return None
    arrays = [np.asarray(frame[c].to_numpy()) for c in names]
    return np.asarray(functools.reduce(np.multiply, arrays), dtype=float)


class _Term:
    """One fixed term: its formulaic Term, its categorical factor (if any), covariates."""

    __slots__ = ("term", "categorical", "numeric", "reduced", "intercept")

    def __init__(self, term: Any, categorical: str | None, numeric: list[str], intercept: bool) -> None:
        self.term = term
        self.categorical = categorical
        self.numeric = numeric
        self.intercept = intercept
        self.reduced = False


def _parse(formula: str, frame: pd.DataFrame, context: Mapping[str, Any]) -> list[_Term] | None:
    """The terms of ``formula`` if every one is covered by the fast path, else None."""
    from formulaic import Formula

    try:
        parsed = Formula(formula)
        terms = list(parsed)
    except Exception:
        return None
    out = []
    for term in terms:
        factors = list(getattr(term, "factors", ()))
        if not factors:
            return None
        exprs = [str(f.expr) for f in factors]
        methods = [getattr(getattr(f, "eval_method", None), "value", None) for f in factors]
        if exprs == ["1"] and methods == ["literal"]:
            out.append(_Term(term, None, [], True))
            continue
        categorical, numeric = None, []
        for expr, method in zip(exprs, methods):
            if method != "lookup" or expr not in frame.columns or expr in context:
                return None
            values = frame[expr]
            if isinstance(values, pd.DataFrame):  # duplicated column name
                return None
            if _is_categorical(values):
                if categorical is not None:
                    return None  # interactions of factors: formulaic's coding, not covered
                categorical = expr
            elif _is_numeric(values):
                numeric.append(expr)
            else:
                return None
        out.append(_Term(term, categorical, numeric, False))
    return out


def covers(formula: str, frame: pd.DataFrame, context: Mapping[str, Any] | None = None) -> bool:
    """Whether :func:`fast_fixed` builds ``formula``'s fixed part (plain factors and covariates).

    Cheap (the formula is parsed, no column is encoded): the design stage's size guard uses
    it, because the fast path builds even a fixed part with hundreds of thousands of
    columns in ``O(n)``.
    """
    return _parse(formula, frame, dict(context or {})) is not None


def _tiny_frame(frame: pd.DataFrame, columns: list[str], levels: Mapping[str, list[Any]]) -> pd.DataFrame:
    """A synthetic frame: each categorical column cycles through its first levels (same dtype)."""
    width = max([min(len(levels[c]), _TINY_LEVELS) for c in levels] + [2])
    m = width + 1
    data = {}
    for col in columns:
        values = frame[col]
        if col in levels:
            use = levels[col][:min(len(levels[col]), _TINY_LEVELS)]
            cycled = [use[i % len(use)] for i in range(m)]
            if isinstance(values.dtype, pd.CategoricalDtype):
                data[col] = pd.Categorical(cycled, categories=use, ordered=values.dtype.ordered)
            else:
                data[col] = pd.Series(cycled, dtype=values.dtype)
        else:
            data[col] = pd.Series(np.arange(2, m + 2), dtype=np.int64).astype(values.dtype)
    return pd.DataFrame(data)


def _encode(terms: list[_Term], frame: pd.DataFrame, levels: Mapping[str, list[Any]],
            codes: Mapping[str, np.ndarray]) -> tuple[sp.csc_matrix, list[str], list[list[int]]]:
    """X (sparse, float), formulaic's column names and each term's column positions."""
    n = len(frame)
    blocks, names, indices = [], [], []
    col = 0
    rows_all = np.arange(n, dtype=np.int64)
    for t in terms:
        if t.intercept:
            blocks.append(sp.csc_matrix(np.ones((n, 1))))
            names.append("Intercept")
            indices.append([col])
            col += 1
            continue
        exprs = [str(f.expr) for f in t.term.factors]
        value = _numeric_product(frame, [e for e in exprs if e != t.categorical])
        if t.categorical is None:
            block = sp.csc_matrix(value.reshape(n, 1))
            term_names = [":".join(exprs)]
        else:
            lev = levels[t.categorical]
            code = codes[t.categorical]
            fmt = "{name}[T.{field}]" if t.reduced else "{name}[{field}]"
            start = 1 if t.reduced else 0
            width = max(len(lev) - start, 0)
            keep = code >= start
            rows = rows_all[keep]
            vals = np.ones(len(rows)) if value is None else value[keep]
            block = sp.csc_matrix((vals, (rows, code[keep] - start)), shape=(n, width))
            term_names = [":".join(fmt.format(name=e, field=lv) if e == t.categorical else e for e in exprs)
                          for lv in lev[start:]]
        blocks.append(block)
        names.extend(term_names)
        indices.append(list(range(col, col + block.shape[1])))
        col += block.shape[1]
    X = sp.hstack(blocks, format="csc", dtype=float) if blocks else sp.csc_matrix((n, 0))
    X.eliminate_zeros()
    return X, names, indices


def _same(a: sp.spmatrix, b: sp.spmatrix) -> bool:
    if a.shape != b.shape:
        return False
    da, db = np.asarray(a.toarray(), dtype=float), np.asarray(b.toarray(), dtype=float)
    return bool(np.array_equal(da, db, equal_nan=True))


def _estimated_columns(terms: list[_Term], levels: Mapping[str, list[Any]]) -> int:
    return sum(len(levels[t.categorical]) if t.categorical else 1 for t in terms)


def fast_fixed(formula: str, frame: pd.DataFrame, context: Mapping[str, Any] | None = None, *,
               min_columns: int | None = None) -> tuple[sp.csc_matrix, tuple[str, ...], FastModelSpec] | None:
    """The fixed-effect matrix of ``formula`` on ``frame`` without formulaic's per-column work.

    Parameters
    ----------
    formula : str
        Right-hand side of the fixed part (``"0 + hy"``, ``"hy + x"``).
    frame : pandas.DataFrame
        The model frame (missing rows already dropped).
    context : mapping, optional
        formulaic's evaluation context (names in it are left to formulaic).
    min_columns : int, optional
        Use the fast path only from this many (estimated) columns on; default
        :data:`FAST_FIXED_MIN_COLUMNS`.

    Returns
    -------
    tuple or None
        ``(X, column names as formulaic names them, spec)``, or ``None`` when the
        formula is not covered (the caller then uses formulaic).
    """
    context = dict(context or {})
    terms = _parse(formula, frame, context)
    if terms is None:
        return None
    levels: dict[str, list[Any]] = {}
    codes: dict[str, np.ndarray] = {}
    for t in terms:
        if t.categorical is not None and t.categorical not in levels:
            try:
                levels[t.categorical], codes[t.categorical] = _levels_and_codes(frame[t.categorical])
            except Exception:
                return None
            if not levels[t.categorical]:
                return None
    threshold = FAST_FIXED_MIN_COLUMNS if min_columns is None else min_columns
    if _estimated_columns(terms, levels) < threshold:
        return None
    columns = list(dict.fromkeys(c for t in terms for c in ([t.categorical] if t.categorical else []) + t.numeric))
    tiny_spec, terms = _learn_structure(formula, frame, columns, terms, levels, context)
    if tiny_spec is None:
        return None
    X, names, indices = _encode(terms, frame, levels, codes)
    spec = FastModelSpec(formula, tiny_spec, terms, levels, tuple(names), indices,
                         {c: frame[c].dtype for c in columns}, context)
    return X, tuple(names), spec


def _learn_structure(formula: str, frame: pd.DataFrame, columns: list[str], terms: list[_Term],
                     levels: Mapping[str, list[Any]], context: Mapping[str, Any]) -> tuple[Any, list[_Term]]:
    """Term order and reduced-rank flags from formulaic on a tiny frame, checked by re-encoding it."""
    from formulaic import model_matrix

    tiny = _tiny_frame(frame, columns, levels)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mm = model_matrix(formula, tiny, context=dict(context), na_action="ignore", output="sparse")
    except Exception:
        return None, terms
    spec = mm.model_spec
    by_term = {str(t.term): t for t in terms}
    ordered = []
    tiny_levels, tiny_codes = {}, {}
    for c in levels:
        tiny_levels[c], tiny_codes[c] = _levels_and_codes(tiny[c])
    for term, cols in spec.term_indices.items():
        t = by_term.get(str(term))
        if t is None:
            return None, terms
        t.term = term
        if t.categorical is not None:
            n_lev = len(tiny_levels[t.categorical])
            if len(cols) == n_lev - 1:
                t.reduced = True
            elif len(cols) == n_lev:
                t.reduced = False
            else:
                return None, terms
        elif len(cols) != 1:
            return None, terms
        ordered.append(t)
    if len(ordered) != len(terms):
        return None, terms
    X_tiny, names_tiny, _ = _encode(ordered, tiny, tiny_levels, tiny_codes)
    if tuple(names_tiny) != tuple(spec.column_names) or not _same(X_tiny, sp.csc_matrix(mm, dtype=float)):
        return None, terms
    return spec, ordered


class FastModelSpec:
    """Model spec of a fixed part built by :func:`fast_fixed` (stands in for formulaic's ModelSpec).

    Provides what mixedblup reads of a spec -- ``formula``, ``column_names``,
    ``term_indices``, ``required_variables`` and ``get_model_matrix(data)`` (sparse,
    same encoding as the training matrix, unseen categories warn with formulaic's
    ``DataMismatchWarning``).  Any other attribute is taken from a formulaic
    ``ModelSpec`` built on first use from a frame holding every training level.
    """

    def __init__(self, formula: str, tiny_spec: Any, terms: list[_Term], levels: Mapping[str, list[Any]],
                 column_names: tuple[str, ...], indices: list[list[int]], dtypes: Mapping[str, Any],
                 context: Mapping[str, Any]) -> None:
        self._formula_text = formula
        self._tiny_spec = tiny_spec
        self._terms = terms
        self._levels = dict(levels)
        self._dtypes = dict(dtypes)
        self._context = dict(context)
        self._full_spec = None
        self.column_names = column_names
        self.formula = tiny_spec.formula
        self.required_variables = set(tiny_spec.required_variables)
        self.term_indices = {t.term: list(cols) for t, cols in zip(terms, indices)}

    def __repr__(self) -> str:
        return f"FastModelSpec({self._formula_text!r}, {len(self.column_names)} columns)"

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.column_names

    def get_model_matrix(self, data: pd.DataFrame, context: Mapping[str, Any] | None = None,
                         **_: Any) -> sp.csc_matrix:
        """Encode new data with the training levels (sparse ``n x len(column_names)``)."""
        from formulaic.errors import DataMismatchWarning

        codes = {}
        for col, levels in self._levels.items():
            values = data[col]
            extra = set(pd.unique(values)).difference(levels)
            if extra:
                warnings.warn(
                    "Data has categories outside of the nominated levels (or that were not seen in "
                    f"original dataset): {extra}. They are being  cast to nan, which will likely skew the "
                    "results of your analyses.",
                    DataMismatchWarning,
                )
            if isinstance(values.dtype, pd.CategoricalDtype):  # by value (its own categories may differ)
                values = values.astype(object)
            codes[col] = np.asarray(pd.Categorical(values, categories=levels).codes, dtype=np.int64)
        X, _, _ = _encode(self._terms, data, self._levels, codes)
        return X

    def _full(self) -> Any:
        """formulaic's ModelSpec of the fixed part, from a frame holding every training level."""
        if self._full_spec is None:
            from formulaic import model_matrix

            width = max([len(v) for v in self._levels.values()] + [1])
            data = {}
            for col, dtype in self._dtypes.items():
                if col in self._levels:
                    lev = self._levels[col]
                    cycled = [lev[i % len(lev)] for i in range(width)]
                    if isinstance(dtype, pd.CategoricalDtype):
                        data[col] = pd.Categorical(cycled, dtype=dtype)
                    else:
                        data[col] = pd.Series(cycled, dtype=dtype)
                else:
                    data[col] = pd.Series(np.ones(width)).astype(dtype)
            with np.errstate(all="ignore"):
                self._full_spec = model_matrix(self._formula_text, pd.DataFrame(data), context=self._context,
                                               na_action="ignore", output="sparse").model_spec
        return self._full_spec

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._full(), name)
