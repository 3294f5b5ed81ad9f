"""Prediction for new data, encoded exactly like the training data.

The fixed part and every random term's columns are re-encoded by the formulaic
``ModelSpec`` kept on the design (categories, contrasts and stateful transforms
such as ``center(x)`` as in training).  Grouping levels are normalised like the
training levels (``12``, ``"12"`` and ``12.0`` are one level) and matched by
label.  Levels a term knows without records (pedigree ancestors, labels of a
relationship matrix) are *not* new: they have BLUPs.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import Design, TermDesign, plain_dtypes
from .errors import DataError, DataWarning, MixedBlupError, preview
from .formula import formula_context
from .labels import normalize_labels

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["NEW_LEVELS", "predict"]

#: Policies for grouping levels not seen in training.
NEW_LEVELS = ("error", "population", "nan")


def _encode(spec: Any, frame: pd.DataFrame, what: str) -> sp.csr_matrix:
    """Re-encode ``frame`` with a training ModelSpec; unseen categories raise DataError."""
    try:
        from formulaic.errors import DataMismatchWarning  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older formulaic
        DataMismatchWarning = Warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            mm = spec.get_model_matrix(plain_dtypes(frame), context=formula_context())
        except DataMismatchWarning as exc:
            raise DataError(
                f"{what}: new data has categories not seen when fitting ({exc}); a fixed effect "
                "cannot be predicted for a category it was never estimated for: drop those rows from "
                "newdata, or refit with data that contain the category"
            ) from None
        except MixedBlupError:
            raise
        except Exception as exc:  # formulaic raises several exception types
            raise DataError(f"{what} could not be encoded for the new data: {exc}") from exc
    return sp.csr_matrix(mm, dtype=float)


def _leaves(term: TermDesign) -> tuple[TermDesign, ...]:
    """The ordinary terms a (possibly joint) term is made of."""
    return tuple(m for member in term.members for m in _leaves(member)) if term.members else (term,)


def _needed_columns(design: Design, include_random: bool) -> list[str]:
    cols = set(design.fixed_spec.required_variables)
    if include_random:
        for term in design.terms:
            for leaf in _leaves(term):
                cols |= set(leaf.lhs_spec.required_variables) | set(leaf.term.factors)
    return sorted(cols)


def _labels_of(frame: pd.DataFrame, column: str) -> np.ndarray:
    cat = pd.Categorical(frame[column])
    names = np.asarray(normalize_labels(cat.categories, what=f"grouping column {column!r}"), dtype=object)
    return names[np.asarray(cat.codes)]


def _leaf_rows(frame: pd.DataFrame, term: TermDesign, levels: pd.Index
               ) -> tuple[sp.csr_matrix, list[tuple[int, str, np.ndarray]]]:
    """Z of one ordinary term for new rows, and the entries that fall on unknown levels.

    Returns the ``n x len(levels) * k`` incidence over known levels and a list of
    ``(row, level label, coefficients)`` for levels the term does not know.
    """
    what = f"random term ({term.term.lhs} | {term.term.group})"
    M = _encode(term.lhs_spec, frame, what).toarray()
    n, k = M.shape
    if getattr(term.term, "kind", "levels") == "mates":
        id_col, group_col = term.term.factors
        ids, groups = _labels_of(frame, id_col), _labels_of(frame, group_col)
        pairs = []  # (row, mate label): every other distinct individual of the row's group
        by_group: dict[Any, list[str]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, [])
            if ids[i] not in by_group[g]:
                by_group[g].append(ids[i])
        for i, (g, own) in enumerate(zip(groups, ids)):
            pairs.extend((i, mate) for mate in by_group[g] if mate != own)
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        labels = np.array([lab for _, lab in pairs], dtype=object)
    else:
        parts = [_labels_of(frame, f) for f in term.term.factors]
        labels = parts[0] if len(parts) == 1 else np.array([":".join(p) for p in zip(*parts)], dtype=object)
        rows = np.arange(n)
    pos = levels.get_indexer(pd.Index(labels, dtype=object)) if len(labels) else np.zeros(0, np.int64)
    known = pos >= 0
    r = np.repeat(rows[known], k)
    c = (pos[known][:, None] * k + np.arange(k)[None, :]).ravel()
    v = M[rows[known]].ravel()
    Z = sp.csr_matrix((v, (r, c)), shape=(n, len(levels) * k))
    new = [(int(i), str(lab), M[i]) for i, lab in zip(rows[~known], labels[~known])]
    return Z, new


def _term_rows(frame: pd.DataFrame, term: TermDesign) -> tuple[sp.csr_matrix, list[tuple[int, str, np.ndarray]]]:
    """Z of a (possibly joint) term for new rows; unknown-level entries padded to the term's ``k``."""
    if not term.members:
        return _leaf_rows(frame, term, pd.Index(term.levels))
    k = term.k
    q = len(term.levels)
    n = len(frame)
    blocks, new_all, offset = [], [], 0
    for member in term.members:
        Zm, new = _term_rows(frame, member)
        km = member.k
        coo = Zm.tocoo()
        level, col = np.divmod(coo.col, km)
        blocks.append(sp.csr_matrix((coo.data, (coo.row, level * k + offset + col)), shape=(n, q * k)))
        for i, lab, vec in new:
            full = np.zeros(k)
            full[offset: offset + km] = vec
            new_all.append((i, lab, full))
        offset += km
    return sum(blocks[1:], blocks[0]).tocsr(), new_all


def predict(res: MixedModelResults, newdata: pd.DataFrame | None = None, *, include_random: bool = True,
            new_levels: str = "error", se: bool = False) -> pd.Series | pd.DataFrame:
    """Predictions (see :meth:`MixedModelResults.predict`)."""
    if new_levels not in NEW_LEVELS:
        raise MixedBlupError(f"new_levels must be one of {NEW_LEVELS}; got {new_levels!r}")
    design = res._design
    positions: list[tuple[list[tuple[int, str, np.ndarray]], np.ndarray]] = []
    full_index, keep, unseen_rows = None, None, set()  # F2: rows with NA come back as NaN
    if newdata is None:
        # the training rows, through the training matrices themselves
        index = design.index
        X = design.X
        Zs = [t.Z for t in design.terms] if include_random else []
    else:
        if design.fixed_spec is None:
            raise MixedBlupError(
                "these results carry no formula encoding (they were loaded from a file saved without "
                "the model frame); refit to predict new data"
            )
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame; got {type(newdata).__name__}")
        cols = _needed_columns(design, include_random)
        missing = [c for c in cols if c not in newdata.columns]
        if missing:
            raise DataError(f"newdata lacks the model columns {preview(missing)}; add them (every column "
                            "the formula uses is needed" + (", grouping factors too unless include_random=False)"
                                                            if include_random else ")"))
        dup = [c for c in cols if list(newdata.columns).count(c) > 1]
        if dup:
            raise DataError(f"newdata has duplicate column names {preview(dup)}; rename them")
        frame = newdata[cols]
        na = frame.isna().any(axis=1).to_numpy()
        if na.any():
            missing_cols = [c for c in cols if frame[c].isna().any()]
            warnings.warn(
                f"{int(na.sum())} of {len(frame)} rows of newdata have missing values in model columns "
                f"({', '.join(missing_cols)}) and are predicted as NaN: rows {preview(list(frame.index[na]))}",
                DataWarning, stacklevel=3,
            )
            full_index, keep = frame.index, ~na
            frame = frame.loc[~na]
        index = frame.index
        if len(frame) == 0:
            empty = pd.Series(np.full(len(newdata), np.nan), index=newdata.index, name="prediction")
            return empty if not se else pd.DataFrame({"prediction": empty, "se": empty})
        Xfull = _encode(design.fixed_spec, frame, "the fixed part")
        if Xfull.shape[1] != len(design.fixed_kept):
            raise DataError(f"the fixed part encodes to {Xfull.shape[1]} columns for the new data; "
                            f"training had {len(design.fixed_kept)}")
        X = Xfull[:, np.nonzero(design.fixed_kept)[0]]
        Zs = []
        if include_random:
            for term, sigma in zip(design.terms, res._sigmas):
                Z_t, new = _term_rows(frame, term)
                if new and new_levels == "error":
                    unseen = list(dict.fromkeys(lab for _, lab, _ in new))
                    raise DataError(
                        f"{len(unseen)} level(s) of {term.name!r} were not in the training data (nor in its "
                        f"pedigree or relationship matrix): {preview(unseen)}; pass "
                        "new_levels='population' to predict them at the population level",
                        problems=pd.DataFrame({"level": unseen}),
                    )
                Zs.append(Z_t)
                if new and new_levels == "nan":
                    unseen_rows.update(i for i, _, _ in new)
                elif new:
                    positions.append((new, np.atleast_2d(sigma)))
    beta = res._solution.beta
    pred = np.asarray(X @ beta).ravel()
    if include_random and design.terms:
        Z = sp.hstack(Zs, format="csr")
        pred = pred + np.asarray(Z @ res._solution.u).ravel()
    if unseen_rows:
        pred[sorted(unseen_rows)] = np.nan
    out = _pad(pd.Series(pred, index=index, name="prediction"), full_index, keep)
    if not se:
        return out
    var = _prediction_variance(res, X, Zs if include_random else None)
    if unseen_rows:
        var[sorted(unseen_rows)] = np.nan
    if include_random and positions:
        # a new level's effect is predicted as zero: its whole prior variance is prediction error
        for new, sigma in positions:
            per_level: dict[tuple[int, str], np.ndarray] = {}
            for i, lab, vec in new:
                per_level[(i, lab)] = per_level.get((i, lab), 0) + vec
            for (i, _), vec in per_level.items():
                var[i] += float(vec @ sigma @ vec)
    se_values = _pad(pd.Series(np.sqrt(np.clip(var, 0, None)), index=index), full_index, keep)
    return pd.DataFrame({"prediction": out.to_numpy(), "se": se_values.to_numpy()}, index=out.index)


def _pad(values: pd.Series, full_index: pd.Index | None, keep: np.ndarray | None) -> pd.Series:
    """Values of the predicted rows placed back among all rows of newdata (NaN elsewhere), by position."""
    if full_index is None:
        return values
    full = np.full(len(full_index), np.nan)
    full[keep] = values.to_numpy()
    return pd.Series(full, index=full_index, name=values.name)


def _prediction_variance(res: MixedModelResults, X: Any, Zs: list[sp.csr_matrix] | None,
                         chunk: int = 256) -> np.ndarray:
    """``sigma_e^2 a' C^-1 a`` per row with ``a = [x; T' z]`` (relative-factor coordinates)."""
    sol = res._solution
    factor = sol.factor
    p = len(sol.beta)
    n = X.shape[0]
    Xd = sp.csr_matrix(X)
    if Zs:
        B = sp.hstack(Zs, format="csr") @ sol.T
        A = sp.hstack([Xd, B], format="csr")
    else:
        A = sp.hstack([Xd, sp.csr_matrix((n, factor.n - p))], format="csr")
    out = np.empty(n)
    for start in range(0, n, chunk):
        block = A[start: start + chunk].toarray()
        solved = np.asarray(factor.solve(block.T))
        out[start: start + chunk] = np.einsum("ij,ji->i", block, solved)
    return out * res._residual
