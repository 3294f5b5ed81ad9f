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

from .design import Design, TermDesign
from .errors import DataError, MixedBlupError, RowsDroppedWarning, preview
from .labels import normalize_labels

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["predict", "NEW_LEVELS"]

#: Policies for grouping levels not seen in training.
NEW_LEVELS = ("error", "population")


def _encode(spec: Any, frame: pd.DataFrame, what: str) -> sp.csr_matrix:
    """Re-encode ``frame`` with a training ModelSpec; unseen categories raise DataError."""
    try:
        from formulaic.errors import DataMismatchWarning  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older formulaic
        DataMismatchWarning = Warning  # noqa: N806
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            mm = spec.get_model_matrix(frame)
        except DataMismatchWarning as exc:
            raise DataError(
                f"{what}: new data has categories not seen when fitting ({exc}); a fixed effect "
                "cannot be predicted for a category it was never estimated for"
            ) from None
        except MixedBlupError:
            raise
        except Exception as exc:  # formulaic raises several exception types
            raise DataError(f"{what} could not be encoded for the new data: {exc}") from exc
    return sp.csr_matrix(mm, dtype=float)


def _row_levels(frame: pd.DataFrame, term: TermDesign) -> np.ndarray:
    """The term's level label of every row (factor labels joined by ``:``)."""
    parts = []
    for factor in term.term.factors:
        cat = pd.Categorical(frame[factor])
        names = np.asarray(normalize_labels(cat.categories, what=f"grouping column {factor!r}"), dtype=object)
        parts.append(names[np.asarray(cat.codes)])
    if len(parts) == 1:
        return parts[0]
    return np.array([":".join(p) for p in zip(*parts)], dtype=object)


def _needed_columns(design: Design, include_random: bool) -> list[str]:
    cols = set(design.fixed_spec.required_variables)
    if include_random:
        for term in design.terms:
            cols |= set(term.lhs_spec.required_variables) | set(term.term.factors)
    return sorted(cols)


def predict(res: MixedModelResults, newdata: pd.DataFrame | None = None, *, include_random: bool = True,
            new_levels: str = "error", se: bool = False) -> pd.Series | pd.DataFrame:
    """Predictions (see :meth:`MixedModelResults.predict`)."""
    if new_levels not in NEW_LEVELS:
        raise ValueError(f"new_levels must be one of {NEW_LEVELS}; got {new_levels!r}")
    design = res._design
    positions: list[tuple[np.ndarray, np.ndarray]] = []
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
            raise DataError(f"newdata lacks the model columns {preview(missing)}")
        frame = newdata[cols]
        na = frame.isna().any(axis=1).to_numpy()
        if na.any():
            warnings.warn(
                f"{int(na.sum())} of {len(frame)} rows of newdata have missing values in model columns and "
                f"are not predicted: rows {preview(list(frame.index[na]))}",
                RowsDroppedWarning, stacklevel=3,
            )
            frame = frame.loc[~na]
        index = frame.index
        if len(frame) == 0:
            empty = pd.Series(np.zeros(0), index=index, name="prediction")
            return empty if not se else pd.DataFrame({"prediction": empty, "se": empty})
        Xfull = _encode(design.fixed_spec, frame, "the fixed part")
        if Xfull.shape[1] != len(design.fixed_kept):
            raise DataError(f"the fixed part encodes to {Xfull.shape[1]} columns for the new data; "
                            f"training had {len(design.fixed_kept)}")
        X = Xfull[:, np.nonzero(design.fixed_kept)[0]]
        Zs = []
        if include_random:
            for term in design.terms:
                M = _encode(term.lhs_spec, frame, f"random term ({term.term.lhs} | {term.term.group})").toarray()
                labels = _row_levels(frame, term)
                pos = pd.Index(term.levels).get_indexer(pd.Index(labels, dtype=object))
                new = pos < 0
                if new.any() and new_levels == "error":
                    unseen = pd.unique(labels[new])
                    raise DataError(
                        f"{len(unseen)} level(s) of {term.name!r} were not in the training data (nor in its "
                        f"pedigree or relationship matrix): {preview(list(unseen))}; pass "
                        "new_levels='population' to predict them at the population level",
                        problems=pd.DataFrame({"level": unseen}),
                    )
                n, k = M.shape
                rows = np.repeat(np.arange(n), k)
                colidx = (np.maximum(pos, 0)[:, None] * k + np.arange(k)[None, :]).ravel()
                vals = np.where(np.repeat(new, k), 0.0, M.ravel())
                Zs.append(sp.csr_matrix((vals, (rows, colidx)), shape=(n, term.q)))
                positions.append((new, M))
    beta = res._solution.beta
    pred = np.asarray(X @ beta).ravel()
    if include_random and design.terms:
        Z = sp.hstack(Zs, format="csr")
        pred = pred + np.asarray(Z @ res._solution.u).ravel()
    out = pd.Series(pred, index=index, name="prediction")
    if not se:
        return out
    var = _prediction_variance(res, X, Zs if include_random else None)
    if include_random and positions:
        # a new level's effect is predicted as zero: its whole prior variance is prediction error
        for (new, M), sigma in zip(positions, res._sigmas):
            if new.any():
                var[new] += np.einsum("ij,jk,ik->i", M[new], sigma, M[new])
    return pd.DataFrame({"prediction": out, "se": np.sqrt(np.clip(var, 0, None))}, index=index)


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
