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
    RowsDroppedWarning,
    preview,
)
from .formula import FormulaSpec, RandomTerm, formula_context
from .labels import normalize_labels

__all__ = ["Design", "TermDesign", "build_design", "term_names", "group_labels", "NA_ACTIONS"]

#: What to do with rows that have missing values in model columns.
NA_ACTIONS = ("drop", "raise")

#: Relative tolerance of the QR rank test (lme4 uses 1e-7).
RANK_TOL = 1e-7

#: X is kept dense up to this many elements (n x p); larger designs stay sparse.
DENSE_X_MAX = 20_000_000

#: Largest sparse X whose rank deficiency is resolved column by column.
SPARSE_RANK_DENSE_MAX = 4000


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
        formulaic ModelSpec of the fixed part.
    weights : numpy.ndarray or None
        Precision weights (``var(e_i) = sigma_e^2 / w_i``), if any.
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
    """formulaic's model_matrix, its own errors re-raised as FormulaError naming the piece."""
    try:
        return model_matrix(formula, frame, context=context, na_action="ignore", **options)
    except MixedBlupError:
        raise
    except Exception as exc:  # formulaic raises several unrelated exception types
        raise FormulaError(f"{what} {formula!r} could not be built: {exc}") from exc


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


def _drop_missing(frame: pd.DataFrame, columns: list[str], na_action: str) -> tuple[pd.DataFrame, pd.Index]:
    """Drop rows with missing values in model columns, warning with counts (A1, A2, A5)."""
    if na_action not in NA_ACTIONS:
        raise DataError(f"na_action must be one of {NA_ACTIONS}; got {na_action!r}")
    missing = frame[columns].isna()
    rows = missing.any(axis=1).to_numpy()
    if not rows.any():
        return frame, pd.Index([], dtype=frame.index.dtype)
    counts = {c: int(missing[c].sum()) for c in columns if missing[c].any()}
    labels = frame.index[rows]
    detail = ", ".join(f"{c}: {k}" for c, k in counts.items())
    message = (
        f"{rows.sum()} of {len(frame)} rows have missing values in model columns ({detail}); "
        f"rows {preview(list(labels))}"
    )
    if na_action == "raise":
        raise DataError(message + "; drop or impute them, or pass na_action='drop'",
                        problems=pd.DataFrame({"row": labels}))
    kept = frame.loc[~rows]
    if len(kept) == 0:
        raise DataError(f"after removing rows with missing values no rows remain ({detail})")
    warnings.warn(
        f"dropped {message}; they are listed in result.dropped_rows",
        RowsDroppedWarning,
        stacklevel=4,
    )
    return kept, labels


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
                f"{preview(list(col.head(3)))})"
            )
        y = col.to_numpy(dtype=float)
    else:
        mm = _model_matrix(f"0 + {name}", frame, context, "response")
        if mm.shape[1] != 1:
            raise DataError(f"response {name!r} must give one numeric column; it gives {mm.shape[1]}")
        y = np.asarray(mm, dtype=float).ravel()
    if not np.isfinite(y).all():
        rows = list(frame.index[~np.isfinite(y)])
        raise DataError(f"response {name!r} is not finite in rows {preview(rows)}")
    if len(y) > 1 and np.ptp(y) == 0:
        raise DataError(
            f"the response {name!r} is constant ({y[0]:g}) and thus model fitting has failed; "
            "check the response column"
        )
    return y


def _fixed(frame: pd.DataFrame, spec: FormulaSpec, context: dict
           ) -> tuple[np.ndarray | sp.csc_matrix, tuple[str, ...], np.ndarray, Any]:
    """X via formulaic (sparse when large), then rank detection (A9)."""
    mm = _model_matrix(spec.fixed, frame, context, "fixed part", output="sparse")
    names = tuple(_lme4_name(c) for c in mm.model_spec.column_names)
    Xs = sp.csc_matrix(mm, dtype=float)
    if not np.isfinite(Xs.data).all():
        coo = Xs.tocoo()
        bad = ~np.isfinite(coo.data)
        cols = sorted({names[j] for j in coo.col[bad]})
        rows = list(frame.index[np.unique(coo.row[bad])])
        raise DataError(f"fixed-effect columns {preview(cols)} are not finite in rows {preview(rows)}")
    n, p = Xs.shape
    dense = n * p <= DENSE_X_MAX
    X: np.ndarray | sp.csc_matrix = Xs.toarray() if dense else Xs
    kept = np.ones(p, dtype=bool)
    if p:
        kept = _independent_columns(X) if dense else _independent_sparse_columns(Xs, names)
        if not kept.all():
            dropped = [nm for nm, k in zip(names, kept) if not k]
            warnings.warn(
                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s): "
                f"{preview(dropped)}; they are reported as NaN",
                RankDeficiencyWarning,
                stacklevel=4,
            )
    X = X[:, kept] if dense else Xs[:, np.nonzero(kept)[0]]
    return X, names, kept, mm.model_spec


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


def group_labels(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[pd.Index, pd.Index]:
    """Level label of each row and the sorted observed levels of a grouping factor.

    Grouping variables are categorical whatever their dtype.  Levels are strings;
    interactions join factor labels with ``":"`` (lme4's convention).  Level order:
    categorical order, numeric order for numbers, lexical order for strings;
    for interactions the first factor varies slowest.
    """
    codes = []
    labels = []
    for factor in factors:
        cat = pd.Categorical(frame[factor]).remove_unused_categories()
        names = normalize_labels(cat.categories, what=f"grouping column {factor!r}")
        codes.append(np.asarray(cat.codes, dtype=np.int64))
        labels.append(np.asarray(names, dtype=object))
    if len(factors) == 1:
        code, uniq = codes[0], np.unique(codes[0])
        row_labels = labels[0][code]
        levels = labels[0][uniq]
    else:
        stacked = np.stack(codes, axis=1)
        uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
        level_names = np.array(
            [":".join(labels[f][u[f]] for f in range(len(factors))) for u in uniq], dtype=object
        )
        row_labels = level_names[inverse.ravel()]
        levels = level_names
    return pd.Index(row_labels, dtype=object), pd.Index(levels, dtype=object)


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
        raise DataError(f"columns of random term ({term.lhs} | {term.group}) are not finite in rows {preview(rows)}")
    if term.kind == "mates":
        return _mates_term(frame, term, name, M, columns, defined_levels, mm.model_spec)
    row_labels, observed = group_labels(frame, term.factors)
    levels = _term_levels(observed, defined_levels, name)
    level_pos = levels.get_indexer(row_labels)
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
    if defined_levels is None:
        return observed
    levels = pd.Index(defined_levels, dtype=object)
    absent = observed[levels.get_indexer(observed) < 0]
    if len(absent):
        raise CovarianceError(
            f"{len(absent)} level(s) of {name!r} in the data are not in its relationship "
            f"structure (pedigree or matrix labels): {preview(list(absent))}; if IDs were read "
            "with different types (e.g. 12 vs '0012'), read them as strings with the same "
            "format, or add the animals to the pedigree",
            problems=pd.DataFrame({"level": list(absent)}),
        )
    return levels


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
    missing_cols = [c for c in columns if c not in data.columns]
    if missing_cols:
        raise FormulaError(f"columns {preview(missing_cols)} are not in the data")
    frame = data[columns]
    _check_finite(frame, columns)
    frame, dropped = _drop_missing(frame, columns, na_action)
    frame = _drop_unused_categories(frame)
    context = formula_context()
    y = _response(frame, spec, context)
    X, fixed_names, kept, fixed_spec = _fixed(frame, spec, context)
    if len(y) <= X.shape[1]:
        raise DataError(
            f"{len(y)} observation(s) remain for {X.shape[1]} estimable fixed effects; a mixed "
            "model needs more observations than fixed effects"
        )
    w = None
    if weights is not None:
        w = frame[weights].to_numpy(dtype=float)
        bad = ~(w > 0) | ~np.isfinite(w)
        if bad.any():
            rows = list(frame.index[bad])
            raise DataError(
                f"weights {weights!r} must be positive and finite; rows {preview(rows)} are not "
                "(drop zero-weight rows explicitly)"
            )
    names = term_names(spec.random)
    levels = dict(levels or {})
    terms = tuple(
        _random_term(frame, term, name, context, levels.get(name))
        for term, name in zip(spec.random, names)
    )
    terms = _merge_joint(terms, joint)
    return Design(y, X, fixed_names, kept, terms, frame.index, dropped, spec.response, fixed_spec, w)
