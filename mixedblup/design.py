"""Design stage: a parsed formula and a DataFrame become y, X and one sparse Z per term.

``build_design`` subsets the data to the model's columns, handles missing and
non-finite values (dropped rows are counted in a warning and kept on the
design), builds X through formulaic (rank deficiency is detected by pivoted QR
and the dropped columns are named), and builds each random term's Z as the
row-wise Khatri-Rao product of the grouping indicators and the term's columns.
Columns of Z are level-major: level ``j``'s coefficients occupy columns
``j*k ... j*k + k - 1``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import model_matrix

from .errors import (
    CovarianceError,
    DataError,
    DataWarning,
    FormulaError,
    MixedBlupError,
    RankDeficiencyWarning,
    ResourceError,
    RowsDroppedWarning,
    preview,
)
from .formula import FormulaSpec, RandomTerm, formula_context
from .labels import normalize_labels

__all__ = ["Design", "ResidualGroups", "TermDesign", "build_design", "term_names", "group_labels", "NA_ACTIONS",
           "MEMORY_LIMIT", "estimate_memory", "kept_rows"]

#: What to do with rows that have missing values in model columns.
NA_ACTIONS = ("drop", "raise")

#: Relative tolerance of the QR rank test (lme4 uses 1e-7).
RANK_TOL = 1e-7

#: X is kept dense up to this many elements (n x p); larger designs stay sparse.
DENSE_X_MAX = 20_000_000

#: Largest sparse X whose rank deficiency is resolved column by column.
SPARSE_RANK_DENSE_MAX = 4000

#: Bytes the design and the cross products may need before ``fit`` refuses (A19);
#: ``fit(..., allow_large=True)`` goes ahead anyway.  Change it here to move the limit.
MEMORY_LIMIT = 4e9

#: Most fixed-effect columns ``fit`` builds without ``allow_large=True`` (A19): formulaic
#: needs about 1 kB and 1 ms per column, so 10^7 columns of an interaction would take days.
#: A fixed part of plain factors and covariates (built by :mod:`mixedblup._fast_design`,
#: linear in the rows) is not limited.
MAX_FIXED_COLUMNS = 200_000


@dataclass(frozen=True)
class TermDesign:
    """One random-effect term ``(lhs | group)`` materialised.

    Attributes
    ----------
    name : str
        Unique name of the term: the grouping factor's label (``"dam"``,
        ``"cask:batch"``), suffixed ``.1``, ``.2`` when a factor has several terms.
    term : RandomTerm
        The parsed term.
    columns : tuple of str
        Names of the term's columns (``"(Intercept)"``, ``"Days"``).
    levels : pandas.Index
        String labels of the levels, in Z's block order.  With a relationship
        matrix these are all of its labels (levels without records included).
    Z : scipy.sparse.csr_matrix
        ``n x (len(levels) * len(columns))`` incidence, level-major.
    n_observed : int
        Number of levels with at least one record.
    lhs_spec : object
        formulaic ModelSpec of the term's columns (re-encodes new data); ``None`` for a
        joint term (see ``members``).
    members : tuple of TermDesign
        For a joint term (several terms sharing one covariance structure with an
        unstructured covariance between them, e.g. direct and maternal genetic
        effects): the member terms, whose columns are concatenated in this term.
        Empty for an ordinary term.
    """

    name: str
    term: RandomTerm
    columns: tuple[str, ...]
    levels: pd.Index
    Z: sp.csr_matrix
    n_observed: int
    lhs_spec: Any = field(repr=False)
    members: tuple[TermDesign, ...] = field(default=(), repr=False)

    @property
    def k(self) -> int:
        """Number of coefficients per level."""
        return len(self.columns)

    @property
    def q(self) -> int:
        """Number of columns of Z."""
        return self.Z.shape[1]


@dataclass(frozen=True)
class ResidualGroups:
    """Classes of heterogeneous residual variance: ``var(e_i) = sigma^2_{g(i)} / w_i``.

    Attributes
    ----------
    column : str
        The data column defining the classes.
    levels : tuple of str
        Class labels (sorted), the order of every per-class result.
    codes : numpy.ndarray
        Class of every kept row (index into ``levels``).
    """

    column: str
    levels: tuple[str, ...]
    codes: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """Records per class."""
        return np.bincount(self.codes, minlength=len(self.levels))


@dataclass(frozen=True)
class Design:
    """Everything the equations need from the data, and what predict needs to re-encode.

    Attributes
    ----------
    y : numpy.ndarray
        Response, one value per kept row.
    X : numpy.ndarray or scipy.sparse.csc_matrix
        Fixed-effect design with rank-deficient columns removed (sparse when
        ``n * p`` exceeds ``DENSE_X_MAX``, e.g. thousands of herd-year levels).
    fixed_names : tuple of str
        Names of all fixed-effect columns, dropped ones included.
    fixed_kept : numpy.ndarray
        Boolean mask over ``fixed_names``: which columns are in ``X``.
    terms : tuple of TermDesign
        Random-effect terms in formula order.
    index : pandas.Index
        Original row labels of the kept rows.
    dropped_rows : pandas.Index
        Original row labels of rows dropped for missing values.
    response : str
        The response expression.
    fixed_spec : object
        formulaic ModelSpec of the fixed part (a :class:`~mixedblup._fast_design.FastModelSpec`
        when X was built by the fast path for plain factors and covariates).
    weights : numpy.ndarray or None
        Precision weights (``var(e_i) = sigma_e^2 / w_i``), if any.
    residual_groups : ResidualGroups or None
        Classes of heterogeneous residual variance (``fit(residual_groups=...)``), if any.
    rows : numpy.ndarray or None
        Positions (0-based) of the kept rows in the data the design was built from; they
        identify the rows when the data's index has repeated labels.  None when unknown
        (a design read back from a file or built from codes).
    """

    y: np.ndarray
    X: np.ndarray | sp.csc_matrix
    fixed_names: tuple[str, ...]
    fixed_kept: np.ndarray
    terms: tuple[TermDesign, ...]
    index: pd.Index
    dropped_rows: pd.Index
    response: str
    fixed_spec: Any = field(repr=False)
    weights: np.ndarray | None = None
    residual_groups: ResidualGroups | None = None
    rows: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def p(self) -> int:
        """Rank of X (number of estimable fixed effects)."""
        return self.X.shape[1]

    @property
    def Z(self) -> sp.csr_matrix:
        """All terms' Z side by side."""
        if not self.terms:
            return sp.csr_matrix((self.n, 0))
        return sp.hstack([t.Z for t in self.terms], format="csr")


def joint_name(groups: tuple[str, ...]) -> str:
    """Name of a joint term made of the terms of ``groups``: ``"animal,dam"``."""
    return ",".join(groups)


def join_terms(terms: tuple[TermDesign, ...], groups: tuple[str, ...]) -> TermDesign:
    """Merge terms sharing one covariance structure into a single joint term.

    The joint term's columns are the members' columns side by side (named after the
    member, ``"dam"`` for an intercept, ``"dam:x"`` otherwise); its Z maps each row to
    every member's level, so one unstructured covariance matrix covers the variances
    of all members and the covariances between them (direct-maternal, direct-social).

    Parameters
    ----------
    terms : tuple of TermDesign
        The members, with identical levels (those of the shared structure).
    groups : tuple of str
        Their names, in order.

    Returns
    -------
    TermDesign
    """
    first = terms[0]
    for t in terms[1:]:
        if not t.levels.equals(first.levels):
            raise FormulaError(
                f"terms {groups} must share their levels to share a covariance; give them the same "
                "pedigree or relationship matrix"
            )
    n = first.Z.shape[0]
    q = len(first.levels)
    k = sum(t.k for t in terms)
    rows, cols, vals, names = [], [], [], []
    offset = 0
    for t in terms:
        coo = t.Z.tocoo()
        level, col = np.divmod(coo.col, t.k)
        rows.append(coo.row)
        cols.append(level * k + offset + col)
        vals.append(coo.data)
        names.extend(t.name if c == "(Intercept)" else f"{t.name}:{c}" for c in t.columns)
        offset += t.k
    Z = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, q * k))
    name = joint_name(groups)
    observed = np.asarray(abs(Z).sum(axis=0)).ravel().reshape(q, k).any(axis=1).sum()
    spec = RandomTerm(lhs=" + ".join(t.term.lhs for t in terms), factors=(name,), correlated=True)
    return TermDesign(name, spec, tuple(names), first.levels, Z, int(observed), None, tuple(terms))


def term_names(terms: tuple[RandomTerm, ...]) -> list[str]:
    """Unique names of random terms: the group label, suffixed ``.1``... on repeats."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for term in terms:
        count = seen.get(term.group, 0)
        names.append(term.group if count == 0 else f"{term.group}.{count}")
        seen[term.group] = count + 1
    return names


def _lme4_name(name: str) -> str:
    return "(Intercept)" if name == "Intercept" else name


def _model_matrix(formula: str, frame: pd.DataFrame, context: dict, what: str, **options: Any) -> Any:
    """formulaic's model_matrix, its own errors re-raised as FormulaError naming the piece.

    numpy's floating-point warnings (log of 0...) are silenced: every matrix built
    here is checked for non-finite values, which raise a DataError naming the rows.
    formulaic's DataMismatchWarning (values outside ``C(x, levels=[...])``, which it
    would encode as the reference level) is an error.  pandas' nullable string
    columns are passed as plain object columns (formulaic's sparse output needs it).
    """
    from formulaic.errors import DataMismatchWarning

    frame = plain_dtypes(frame)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            return model_matrix(formula, frame, context=context, na_action="ignore", **options)
    except MixedBlupError:
        raise
    except DataMismatchWarning as exc:
        raise DataError(
            f"{what} {formula!r}: {exc} formulaic would encode those rows as the reference level; list "
            "every category in levels=, or drop those rows"
        ) from None
    except Exception as exc:  # formulaic raises several unrelated exception types
        dates = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c].dtype)
                 or pd.api.types.is_timedelta64_dtype(frame[c].dtype)]
        hint = (f"; column(s) {preview(dates)} hold dates or durations: convert them to numbers (e.g. "
                "days since a date) or to strings for a factor" if dates else "")
        raise FormulaError(f"{what} {formula!r} could not be built: {exc}{hint}") from exc


def plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """pandas' nullable string columns as object columns (missing as None), other columns unchanged."""
    strings = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    if not strings:
        return frame
    out = frame.copy()
    for c in strings:
        out[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return out


def _check_finite(frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise DataError for +-Inf in numeric model columns (A3, A4)."""
    for col in columns:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            arr = values.to_numpy(dtype=float, na_value=np.nan)
            bad = np.isinf(arr)
            if bad.any():
                rows = list(frame.index[bad])
                raise DataError(
                    f"column {col!r} has {len(rows)} infinite value(s) in rows {preview(rows)}; "
                    "replace them with finite values or NaN (missing) before fitting",
                    problems=pd.DataFrame({"column": col, "row": rows}),
                )


def _drop_missing(frame: pd.DataFrame, columns: list[str], na_action: str
                  ) -> tuple[pd.DataFrame, pd.Index, np.ndarray]:
    """Drop rows with missing values in model columns, warning with counts (A1, A2, A5).

    Returns the kept rows, the labels of the dropped ones and the boolean mask of kept rows.
    """
    if na_action not in NA_ACTIONS:
        raise DataError(f"na_action must be one of {NA_ACTIONS}; got {na_action!r}")
    missing = frame[columns].isna()
    rows = missing.any(axis=1).to_numpy()
    if not rows.any():
        return frame, pd.Index([], dtype=frame.index.dtype), ~rows
    counts = {c: int(missing[c].sum()) for c in columns if missing[c].any()}
    labels = frame.index[rows]
    detail = ", ".join(f"{c}: {k}" for c, k in counts.items())
    message = (
        f"{rows.sum()} of {len(frame)} rows with missing values in model columns ({detail}): "
        f"rows {preview(list(labels))}"
    )
    if na_action == "raise":
        raise DataError(message + "; drop or impute them, or pass na_action='drop'",
                        problems=pd.DataFrame({"row": labels}))
    kept = frame.loc[~rows]
    if len(kept) == 0:
        raise DataError(
            f"after removing {len(frame)} rows with missing values 0 rows remain ({detail}); check "
            "those columns (is a column entirely missing, or read with the wrong missing-value codes?)",
            problems=pd.DataFrame({"row": labels}),
        )
    warnings.warn(
        f"dropped {message}; they are listed in result.dropped_rows",
        RowsDroppedWarning,
        stacklevel=4,
    )
    return kept, labels, ~rows


def _drop_unused_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns keep only categories present in the kept rows (A12)."""
    cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if not cats:
        return frame
    return frame.assign(**{c: frame[c].cat.remove_unused_categories() for c in cats})


def _response(frame: pd.DataFrame, spec: FormulaSpec, context: dict) -> np.ndarray:
    """The response as floats, with the checks of A6 and A7."""
    name = spec.response
    if name in frame.columns:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col.dtype):
            warnings.warn(f"response {name!r} is boolean; it is used as 0/1", DataWarning, stacklevel=4)
            col = col.astype(float)
        elif not pd.api.types.is_numeric_dtype(col.dtype):
            raise DataError(
                f"response {name!r} must be numeric; it has dtype {col.dtype} (first values "
                f"{preview(list(col.head(3)))}); convert it with pd.to_numeric, or choose a numeric "
                "column as the response"
            )
        y = col.to_numpy(dtype=float)
    else:
        mm = _model_matrix(f"0 + {name}", frame, context, "response")
        if mm.shape[1] != 1:
            raise DataError(f"response {name!r} must give one numeric column; it gives {mm.shape[1]}")
        y = np.asarray(mm, dtype=float).ravel()
    if not np.isfinite(y).all():
        rows = list(frame.index[~np.isfinite(y)])
        raise DataError(f"response {name!r} is not finite in rows {preview(rows)} (e.g. log of 0); fix "
                        "or remove those values", problems=pd.DataFrame({"row": rows}))
    if len(y) > 1 and np.ptp(y) == 0:
        raise DataError(
            f"the response {name!r} is constant ({y[0]:g}) and thus model fitting has failed; "
            "check the response column"
        )
    return y


def _fixed(frame: pd.DataFrame, spec: FormulaSpec, context: dict, rank_deficient: str = "warn"
           ) -> tuple[np.ndarray | sp.csc_matrix, tuple[str, ...], np.ndarray, Any]:
    """X via formulaic (sparse when large), then rank detection (A9).

    ``rank_deficient`` is the level of the ``rank_x`` check: ``"error"`` raises,
    ``"warn"`` warns; the dependent columns are dropped otherwise (and recorded).
    """
    from ._fast_design import fast_fixed

    fast = fast_fixed(spec.fixed, frame, context)  # plain factors/covariates: numpy, same X as formulaic
    if fast is not None:
        Xs, raw_names, fixed_spec = fast
    else:
        mm = _model_matrix(spec.fixed, frame, context, "fixed part", output="sparse")
        raw_names, fixed_spec = mm.model_spec.column_names, mm.model_spec
        Xs = sp.csc_matrix(mm, dtype=float)
    names = tuple(_lme4_name(c) for c in raw_names)
    if not np.isfinite(Xs.data).all():
        coo = Xs.tocoo()
        bad = ~np.isfinite(coo.data)
        cols = sorted({names[j] for j in coo.col[bad]})
        rows = list(frame.index[np.unique(coo.row[bad])])
        raise DataError(
            f"fixed-effect columns {preview(cols)} are not finite in rows {preview(rows)} (e.g. log of 0 "
            "or of a negative value); fix or remove those values, or transform differently",
            problems=pd.DataFrame({"row": rows}),
        )
    n, p = Xs.shape
    dense = n * p <= DENSE_X_MAX
    X: np.ndarray | sp.csc_matrix = Xs.toarray() if dense else Xs
    kept = np.ones(p, dtype=bool)
    if p:
        kept = _independent_columns(X) if dense else _independent_sparse_columns(Xs, names)
        if not kept.all():
            dropped = [nm for nm, k in zip(names, kept) if not k]
            if rank_deficient == "error":
                raise DataError(
                    f"fixed-effect model matrix is rank deficient: {len(dropped)} column(s) "
                    f"{preview(dropped)} are linear combinations of earlier columns (collinear "
                    "covariates or empty interaction cells); remove them from the formula, or pass "
                    "checks={'rank_x': 'warn'} to drop them",
                    problems=pd.DataFrame({"column": dropped}),
                )
            if rank_deficient == "warn":
                warnings.warn(
                    f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s): "
                    f"{preview(dropped)}; they are reported as NaN with dropped=True (remove them from "
                    "the formula, or switch this with checks={'rank_x': ...})",
                    RankDeficiencyWarning,
                    stacklevel=4,
                )
    X = X[:, kept] if dense else Xs[:, np.nonzero(kept)[0]]
    return X, names, kept, fixed_spec


def _independent_columns(X: np.ndarray) -> np.ndarray:
    """Mask of linearly independent columns, earlier columns preferred (like lme4).

    Householder QR without pivoting: ``|R_jj|`` is the norm of column ``j`` after
    projection on the columns before it, so a column is dropped exactly when it
    is (numerically) a combination of earlier ones.
    """
    norms = np.linalg.norm(X, axis=0)
    safe = np.where(norms > 0, norms, 1.0)
    r = np.linalg.qr(X / safe, mode="r")
    diag = np.zeros(X.shape[1])
    diag[: min(r.shape)] = np.abs(np.diag(r))
    return (diag > RANK_TOL) & (norms > 0)


def _independent_sparse_columns(X: sp.csc_matrix, names: tuple[str, ...]) -> np.ndarray:
    """Rank detection for a large sparse X through the scaled ``X'X``.

    First a certificate: a sparse factorisation whose pivots are all clearly positive
    proves full rank (the usual case, and cheap).  Otherwise, up to
    ``SPARSE_RANK_DENSE_MAX`` columns, a Cholesky of ``X'X`` in the original column
    order drops each column whose pivot (its squared norm after projection on the
    earlier columns) is below ``RANK_TOL**2``; beyond that the user is asked to
    remove the confounded columns.
    """
    import scipy.sparse.linalg as spla

    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0)).ravel())
    nonzero = norms > 0
    safe = np.where(nonzero, norms, 1.0)
    Xn = X @ sp.diags(1.0 / safe)
    XtX = (Xn.T @ Xn).tocsc()
    p = X.shape[1]
    idx = np.nonzero(nonzero)[0]
    try:
        lu = spla.splu(XtX[idx][:, idx].tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        if lu.U.diagonal().min() > 1e3 * RANK_TOL ** 2:
            return nonzero
    except RuntimeError:
        pass
    if p > SPARSE_RANK_DENSE_MAX:
        raise DataError(
            f"the fixed-effect design ({p} columns) is rank deficient (confounded factors, e.g. "
            "herd and herd-year both fixed, or empty cells of an interaction); with more than "
            f"{SPARSE_RANK_DENSE_MAX} columns mixedblup cannot choose the columns to drop: remove the "
            "confounded effects from the formula"
        )
    A = XtX.toarray()
    L = np.zeros_like(A)
    kept = np.zeros(p, dtype=bool)
    for j in range(p):
        if not nonzero[j]:
            continue
        v = A[j:, j] - L[j:, :j] @ L[j, :j]
        if v[0] > RANK_TOL ** 2:
            L[j:, j] = v / np.sqrt(v[0])
            kept[j] = True
    return kept


def _levels_of(values: pd.Series) -> int:
    """Columns a variable contributes as a factor: 1 if numeric, else its number of values."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return 1
    return max(int(values.nunique(dropna=True)), 1)


def _factor_width(expr: str, frame: pd.DataFrame) -> int:
    """Columns of one formulaic factor (``a``, ``C(a, Sum)``, ``log(x)``), estimated from the data."""
    expr = expr.strip()
    name = expr[1:-1] if len(expr) > 1 and expr[0] == expr[-1] == "`" else expr
    if name in frame.columns:
        return _levels_of(frame[name])
    if expr.startswith("C(") and expr.endswith(")"):
        first = expr[2:-1].split(",")[0].strip()
        first = first[1:-1] if len(first) > 1 and first[0] == first[-1] == "`" else first
        if first in frame.columns:
            return max(int(frame[first].nunique(dropna=True)), 1)
    return 1


def _formula_width(formula: str, frame: pd.DataFrame) -> tuple[int, int, str]:
    """Estimated columns and number of terms of a formulaic right-hand side on ``frame``.

    Parses with formulaic's parser (no evaluation; the text is already validated);
    an interaction term has the product of its factors' widths.  The third value
    describes the widest term, e.g. ``"a:b (3000 x 3000 levels)"``.
    """
    from formulaic import Formula

    try:
        terms = list(Formula(formula))
    except Exception:  # noqa: BLE001 - formulaic reports the problem itself when it builds the matrix
        return 0, 0, ""
    width, widest, what = 0, -1, ""
    for term in terms:
        widths = [_factor_width(factor.expr, frame) for factor in term.factors]
        w = int(np.prod(widths, dtype=float)) if widths else 1
        width += w
        if w > widest:
            widest, what = w, f"{term} ({' x '.join(map(str, widths))} levels)"
    return width, len(terms), what


def estimate_memory(spec: FormulaSpec, frame: pd.DataFrame,
                    levels: Mapping[str, pd.Index | None] | None = None) -> tuple[float, dict[str, float]]:
    """Bytes the design and the cross products of ``spec`` on ``frame`` would need (A19).

    An estimate made before anything is built, from the number of rows, the
    levels of categorical columns (an interaction ``a:b`` has one column per
    combination) and the levels of each random term: dense or sparse ``X``
    (with formulaic's per-column bookkeeping), ``X'X``, a dense ``X'Z``, each
    term's columns and ``Z``.

    Returns
    -------
    float
        Total bytes.
    dict
        The parts (``"X"``, ``"X'X"``, ``"X'Z"``, ``"Z"``) and ``"p"``, ``"q"``.
    """
    n = len(frame)
    p, n_terms, widest = _formula_width(spec.fixed, frame)
    dense = n * p <= DENSE_X_MAX
    x_bytes = (8.0 * n * p if dense else 16.0 * n * max(n_terms, 1)) + 1000.0 * p  # + formulaic's bookkeeping
    xtx = 8.0 * p * p if p <= 2000 else 16.0 * p
    q, z_bytes = 0, 0.0
    levels = dict(levels or {})
    for term, name in zip(spec.random, term_names(spec.random)):
        k = _formula_width(term.lhs, frame)[0]
        k = max(k, 1)
        defined = levels.get(name)
        if defined is not None:
            n_lev = len(defined)
        else:
            n_lev = 1
            for f in term.factors:
                n_lev *= max(int(frame[f].nunique(dropna=True)), 1) if f in frame.columns else 1
            n_lev = min(n_lev, max(n, 1))
        q += n_lev * k
        z_bytes += 24.0 * n * k
    xtz = 8.0 * p * q if dense else 0.0
    parts = {"X": x_bytes, "X'X": xtx, "X'Z": xtz, "Z": z_bytes, "p": float(p), "q": float(q),
             "widest": widest}
    return x_bytes + xtx + xtz + z_bytes, parts


def _guard_memory(spec: FormulaSpec, frame: pd.DataFrame, levels: Mapping[str, pd.Index | None],
                  context: Mapping[str, Any]) -> None:
    from ._fast_design import covers

    need, parts = estimate_memory(spec, frame, levels)
    p = int(parts["p"])
    problems = pd.DataFrame({"part": list(parts), "value": [str(v) for v in parts.values()]})
    if p > MAX_FIXED_COLUMNS and not covers(spec.fixed, frame, context):  # the fast path builds X in O(n)
        raise ResourceError(
            f"the fixed part would have about {p:,} columns (the widest term is {parts['widest']}), more "
            f"than the limit of {MAX_FIXED_COLUMNS:,} (about {need / 1e9:.3g} GB and hours to build); an "
            "interaction of factors with many levels (a:b, a*b) creates one column per combination: "
            "simplify the formula (e.g. a random term (1 | a:b)), or pass allow_large=True (or raise "
            "mixedblup.design.MAX_FIXED_COLUMNS) to go ahead",
            problems=problems,
        )
    if need <= MEMORY_LIMIT:
        return
    big = max((k for k in ("X", "X'X", "X'Z", "Z")), key=lambda k: parts[k])
    raise ResourceError(
        f"building this model would need about {need / 1e9:.3g} GB (the largest part is {big}: "
        f"{parts[big] / 1e9:.3g} GB; {p:,} fixed-effect columns, {int(parts['q']):,} random "
        f"effects, {len(frame):,} rows), more than the limit of {MEMORY_LIMIT / 1e9:.3g} GB: simplify the "
        "formula (an interaction of many-level factors creates one column per combination), or pass "
        "allow_large=True (or raise mixedblup.design.MEMORY_LIMIT) to go ahead",
        problems=problems,
    )


def _apply_missing_code(frame: pd.DataFrame, missing_code: float) -> pd.DataFrame:
    """G1: values equal to ``missing_code`` in numeric model columns become NaN, with a count."""
    counts = {}
    out = frame.copy()
    for col in frame.columns:
        values = frame[col]
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            hit = (values == missing_code).to_numpy(dtype=bool, na_value=False)
            if hit.any():
                counts[col] = int(hit.sum())
                out[col] = values.astype(float).mask(hit)
    detail = ", ".join(f"{c}: {k}" for c, k in counts.items()) or "no column"
    warnings.warn(
        f"missing_code={missing_code!r} matched {sum(counts.values())} value(s) in the model columns "
        f"({detail}); they are treated as missing",
        DataWarning, stacklevel=4,
    )
    return out


def _drop_zero_weights(frame: pd.DataFrame, weights: str, na_action: str
                       ) -> tuple[pd.DataFrame, pd.Index, np.ndarray]:
    """Precision weights (A13): negative, missing or non-numeric weights raise; rows with
    zero weight carry no information and are dropped with a warning (or raise).

    Returns the kept rows, the labels of the dropped ones and the boolean mask of kept rows.
    """
    col = frame[weights]
    if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(f"weights {weights!r} must be a numeric column; it has dtype {col.dtype}")
    w = col.to_numpy(dtype=float, na_value=np.nan)
    for bad, what in ((np.isnan(w), "missing (NaN)"), (w < 0, "negative")):
        if bad.any():
            rows = list(frame.index[bad])
            raise DataError(
                f"weights {weights!r} are {what} in {len(rows)} row(s): {preview(rows)}; precision "
                "weights (var(e_i) = sigma_e^2 / w_i) must be finite and >= 0: fix them, or drop those rows",
                problems=pd.DataFrame({"row": rows, "weight": w[bad]}),
            )
    zero = w == 0
    if not zero.any():
        return frame, pd.Index([], dtype=frame.index.dtype), ~zero
    labels = frame.index[zero]
    message = f"{int(zero.sum())} of {len(w)} rows with zero weight in {weights!r} (rows {preview(list(labels))})"
    if na_action == "raise":
        raise DataError(message + " carry no information; drop them, or pass na_action='drop' to drop "
                        "them with a warning", problems=pd.DataFrame({"row": labels}))
    if zero.all():
        raise DataError(message + ": no row with a positive weight remains; give the rows positive weights")
    warnings.warn(f"dropped {message}; they are listed in result.dropped_rows", RowsDroppedWarning, stacklevel=4)
    return frame.loc[~zero], labels, ~zero


def group_labels(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[pd.Index, pd.Index]:
    """Level label of each row and the sorted observed levels of a grouping factor.

    Grouping variables are categorical whatever their dtype.  Levels are strings;
    interactions join factor labels with ``":"`` (lme4's convention).  Level order:
    categorical order, numeric order for numbers, lexical order for strings;
    for interactions the first factor varies slowest.
    """
    row_codes, levels = _group_codes(frame, factors)
    return pd.Index(np.asarray(levels, dtype=object)[row_codes], dtype=object), levels


def _group_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """:func:`group_labels` as integer codes: the position of each row's level in the levels."""
    codes = []
    labels = []
    for factor in factors:
        cat = pd.Categorical(frame[factor]).remove_unused_categories()
        names = normalize_labels(cat.categories, what=f"grouping column {factor!r}")
        code = np.asarray(cat.codes, dtype=np.int64)
        if names.has_duplicates:  # 1, "1" and 1.0 are distinct categories but one level
            remap, names = pd.factorize(names)
            code = np.where(code >= 0, remap[np.maximum(code, 0)], -1)
        codes.append(code)
        labels.append(np.asarray(names, dtype=object))
    if len(factors) == 1:
        code = codes[0]
        if len(code) and code.min() >= 0:  # every category is used: the levels are the categories
            uniq, inverse = np.arange(len(labels[0])), code
        else:
            uniq, inverse = np.unique(code, return_inverse=True)
        levels = labels[0][uniq]
    else:
        stacked = np.stack(codes, axis=1)
        uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
        levels = np.array(
            [":".join(labels[f][u[f]] for f in range(len(factors))) for u in uniq], dtype=object
        )
    return np.asarray(inverse, dtype=np.int64).ravel(), pd.Index(levels, dtype=object)


def _random_term(
    frame: pd.DataFrame,
    term: RandomTerm,
    name: str,
    context: dict,
    defined_levels: pd.Index | None,
) -> TermDesign:
    """Z for one term: row-wise Khatri-Rao product of indicators and the term's columns."""
    mm = _model_matrix(term.lhs, frame, context, f"random term ({term.lhs} | {term.group}), left side")
    M = np.asarray(mm, dtype=float)
    columns = tuple(_lme4_name(c) for c in mm.columns)
    if M.shape[1] == 0:
        raise FormulaError(f"random term ({term.lhs} | {term.group}) has no columns")
    constant = [c for c, col in zip(columns, M.T) if len(col) and np.ptp(col) == 0]
    if len(constant) > 1:
        raise FormulaError(
            f"random term ({term.lhs} | {term.group}) has several constant columns {constant}; they are "
            "collinear (e.g. an intercept and leg(x, k)'s order-0 polynomial): write (0 + ... | "
            f"{term.group})"
        )
    if not np.isfinite(M).all():
        rows = list(frame.index[~np.isfinite(M).all(axis=1)])
        raise DataError(f"columns of random term ({term.lhs} | {term.group}) are not finite in rows "
                        f"{preview(rows)}; fix or remove those values",
                        problems=pd.DataFrame({"row": rows}))
    if term.kind == "mates":
        return _mates_term(frame, term, name, M, columns, defined_levels, mm.model_spec)
    row_codes, observed = _group_codes(frame, term.factors)
    levels, observed_pos = _term_levels_and_positions(observed, defined_levels, name)
    if observed_pos is not None:  # one look-up per level, not per row
        level_pos = observed_pos[row_codes]
    elif observed.is_unique:
        level_pos = row_codes
    else:  # labels equal after normalisation (12 and "12"): as before
        level_pos = levels.get_indexer(observed[row_codes])
    n, k = M.shape
    rows = np.repeat(np.arange(n), k)
    cols = (level_pos[:, None] * k + np.arange(k)[None, :]).ravel()
    Z = sp.csr_matrix((M.ravel(), (rows, cols)), shape=(n, len(levels) * k))
    Z.eliminate_zeros()
    return TermDesign(name, term, columns, levels, Z, len(observed), mm.model_spec)


def _merge_joint(terms: tuple[TermDesign, ...], joint: Sequence[tuple[str, ...]]) -> tuple[TermDesign, ...]:
    """Replace each group of ``joint`` by its joint term, at the first member's place."""
    if not joint:
        return terms
    by_name = {t.name: t for t in terms}
    out: list[TermDesign] = []
    done: set[str] = set()
    for t in terms:
        group = next((g for g in joint if t.name in g), None)
        if group is None:
            out.append(t)
        elif group[0] not in done:
            missing = [g for g in group if g not in by_name]
            if missing:
                raise FormulaError(f"joint covariance names {missing}, which are not terms of the formula")
            out.append(join_terms(tuple(by_name[g] for g in group), tuple(group)))
            done.add(group[0])
    return tuple(out)


def _term_levels(observed: pd.Index, defined_levels: pd.Index | None, name: str) -> pd.Index:
    """A term's levels: the observed ones, or all levels its covariance structure defines
    (which must include every observed level, B6/B8)."""
    return _term_levels_and_positions(observed, defined_levels, name)[0]


def _term_levels_and_positions(observed: pd.Index, defined_levels: pd.Index | None, name: str
                               ) -> tuple[pd.Index, np.ndarray | None]:
    """:func:`_term_levels` and the position of each observed level among them (``None``
    when the levels are the observed ones)."""
    if defined_levels is None:
        return observed, None
    if isinstance(defined_levels, pd.Index) and defined_levels.dtype == object:
        levels = defined_levels  # the same object: its hash table is built once (pedigree IDs)
    else:
        levels = pd.Index(defined_levels, dtype=object)
    positions = levels.get_indexer(observed)
    absent = observed[positions < 0]
    if len(absent):
        raise CovarianceError(
            f"{len(absent)} level(s) of {name!r} in the data are not in its relationship "
            f"structure (pedigree or matrix labels): {preview(list(absent))}; if IDs were read "
            "with different types (e.g. 12 vs '0012'), read them as strings with the same "
            "format, or add the animals to the pedigree",
            problems=pd.DataFrame({"level": list(absent)}),
        )
    return levels, positions


def _mates_term(frame: pd.DataFrame, term: RandomTerm, name: str, M: np.ndarray,
                columns: tuple[str, ...], defined_levels: pd.Index | None, lhs_spec: Any) -> TermDesign:
    """Z of ``(lhs | mates(id, group))``: row ``i`` gets the effects of the *other*
    individuals recorded in its group (each distinct mate once), times row ``i``'s
    term columns.  Social (indirect) genetic effects; joint with the direct term
    through a shared covariance, e.g. ``cov={("animal", "mates(animal,pen)"): ped}``."""
    id_col, group_col = term.factors
    ids, id_levels = group_labels(frame, (id_col,))
    groups, group_levels = group_labels(frame, (group_col,))
    levels = _term_levels(id_levels, defined_levels, name)
    id_pos = levels.get_indexer(ids)
    g_pos = group_levels.get_indexer(groups)
    n, k, q = len(frame), M.shape[1], len(levels)
    members = sp.csr_matrix((np.ones(n), (g_pos, id_pos)), shape=(len(group_levels), q))
    members.data[:] = 1.0  # each distinct individual once per group
    own = sp.csr_matrix((np.ones(n), (np.arange(n), id_pos)), shape=(n, q))
    mates = (members[g_pos] - own).tocsr()
    mates.eliminate_zeros()
    lonely = np.asarray(mates.sum(axis=1)).ravel() == 0
    if lonely.all():
        raise DataError(f"no record of {name!r} has a group mate in {group_col!r}; a social term needs groups "
                        "of two or more individuals")
    coo = mates.tocoo()
    rows = np.repeat(coo.row, k)
    cols = (coo.col[:, None] * k + np.arange(k)[None, :]).ravel()
    vals = (coo.data[:, None] * M[coo.row]).ravel()
    Z = sp.csr_matrix((vals, (rows, cols)), shape=(n, q * k))
    Z.eliminate_zeros()
    observed = int((np.asarray(mates.sum(axis=0)).ravel() > 0).sum())
    return TermDesign(name, term, columns, levels, Z, observed, lhs_spec)


def build_design(
    spec: FormulaSpec,
    data: pd.DataFrame,
    *,
    levels: Mapping[str, pd.Index | None] | None = None,
    na_action: str = "drop",
    weights: str | None = None,
    joint: Sequence[tuple[str, ...]] = (),
    residual_groups: str | None = None,
    rank_deficient: str = "warn",
    allow_large: bool = False,
    missing_code: float | None = None,
) -> Design:
    """Materialise a parsed formula on a DataFrame.

    Parameters
    ----------
    spec : FormulaSpec
        Output of :func:`~mixedblup.formula.parse_formula`.
    data : pandas.DataFrame
        The data; only the model's columns are used (missing values elsewhere are ignored).
    levels : mapping, optional
        Term name -> the full list of levels defined by that term's covariance
        structure (pedigree IDs, labels of G), or ``None`` for data-defined levels.
    na_action : {"drop", "raise"}
        Rows with missing values in model columns are dropped with a
        :class:`~mixedblup.errors.RowsDroppedWarning`, or raise.
    weights : str, optional
        Name of a column of precision weights (``var(e_i) = sigma_e^2 / w_i``).
    joint : sequence of tuples of str
        Groups of term names merged into one joint term each (see :func:`join_terms`).
    residual_groups : str, optional
        Name of a column whose classes have their own residual variance
        (:class:`ResidualGroups`); rows where it is missing are handled by ``na_action``.
    rank_deficient : {"warn", "error", "note", "ignore"}
        Level of the ``rank_x`` check: dependent fixed-effect columns raise, or are
        dropped (with a warning for ``"warn"``).
    allow_large : bool
        Build the design even when :func:`estimate_memory` exceeds :data:`MEMORY_LIMIT`.
    missing_code : float, optional
        A value that means "missing" in the numeric model columns (e.g. -999); no
        sentinel by default (NaN only).  Matches are counted in a warning.

    Raises
    ------
    ResourceError
        The design would need more than :data:`MEMORY_LIMIT` bytes (A19).

    Returns
    -------
    Design
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame; got {type(data).__name__}")
    dup = data.columns[data.columns.duplicated()].unique()
    if len(dup):
        raise DataError(f"data has duplicate column names {preview(list(dup))}; rename them")
    columns = list(spec.variables) + ([weights] if weights and weights not in spec.variables else [])
    if residual_groups is not None and residual_groups not in columns:
        columns.append(residual_groups)
    missing_cols = [c for c in columns if c not in data.columns]
    if missing_cols:
        raise FormulaError(f"columns {preview(missing_cols)} are not in the data")
    frame = data[columns]
    if len(frame) == 0:
        raise DataError("the data have no rows; a model needs observations (was the frame filtered to "
                        "nothing?)")
    if missing_code is not None:
        frame = _apply_missing_code(frame, missing_code)
    _check_finite(frame, columns)
    zero_rows = pd.Index([])
    rows = np.arange(len(frame))
    if weights is not None:
        frame, zero_rows, keep = _drop_zero_weights(frame, weights, na_action)
        rows = rows[keep]
    frame, dropped, keep = _drop_missing(frame, columns, na_action)
    rows = rows[keep]
    if len(zero_rows):  # every dropped row listed, in data order
        gone = np.ones(len(data), dtype=bool)
        gone[rows] = False
        dropped = data.index[gone]
    frame = _drop_unused_categories(frame)
    context = formula_context()
    if not allow_large:
        _guard_memory(spec, frame, dict(levels or {}), context)
    y = _response(frame, spec, context)
    X, fixed_names, kept, fixed_spec = _fixed(frame, spec, context, rank_deficient)
    if len(y) <= X.shape[1]:
        raise DataError(
            f"{len(y)} observation(s) remain for {X.shape[1]} estimable fixed effects"
            + (f" after removing {len(dropped)} rows with missing values" if len(dropped) else "")
            + "; a mixed model needs more observations than fixed effects: simplify the fixed part "
            "or use more data"
        )
    w = None if weights is None else frame[weights].to_numpy(dtype=float)
    names = term_names(spec.random)
    levels = dict(levels or {})
    terms = tuple(
        _random_term(frame, term, name, context, levels.get(name))
        for term, name in zip(spec.random, names)
    )
    terms = _merge_joint(terms, joint)
    rgroups = None
    if residual_groups is not None:
        labels = normalize_labels(frame[residual_groups], what=f"residual_groups column {residual_groups!r}")
        levels_r = tuple(sorted(pd.unique(labels)))
        rgroups = ResidualGroups(residual_groups, levels_r,
                                 pd.Index(levels_r).get_indexer(labels).astype(np.int64))
    return Design(y, X, fixed_names, kept, terms, frame.index, dropped, spec.response, fixed_spec, w, rgroups,
                  rows)


def kept_rows(data: pd.DataFrame, design: Design) -> pd.DataFrame:
    """The rows of ``data`` (the frame the design was built from) that the model used.

    By position when the design knows them and ``data``'s labels line up with them, so
    repeated index labels (A15) neither duplicate nor mix up rows; by label otherwise.

    Raises
    ------
    DataError
        ``data`` lacks rows the design used, or its repeated labels do not line up with
        the design's rows.
    """
    index = design.index
    rows = design.rows
    if rows is not None and (len(rows) == 0 or rows[-1] < len(data)) and data.index[rows].equals(index):
        return data.iloc[rows]
    missing = index[~index.isin(data.index)]
    if len(missing):
        raise DataError(f"the data given lacks {len(missing)} row(s) the model was fitted to ({preview(list(missing))}); "
                        "pass the DataFrame given to fit()")
    if not (data.index.is_unique and index.is_unique):
        raise DataError("the data's row labels repeat and do not line up with the rows the model was fitted "
                        "to; pass the DataFrame given to fit() unchanged (or reset_index() before fitting)")
    return data.loc[index]
