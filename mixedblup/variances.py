"""Known variance components: reading ``variances=`` into one matrix per term.

``variances`` maps each term's name to its coefficient covariance and
``"residual"`` to the residual variance, e.g.
``{"dam": 0.016, "residual": 0.08}``.  A term with several columns (``(x | g)``)
takes a ``k x k`` matrix (array or DataFrame labelled by the term's columns); an
uncorrelated term (``(x || g)``) takes a matrix with zero off-diagonals or a
sequence of ``k`` variances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .design import TermDesign
from .errors import CovarianceError

__all__ = ["RESIDUAL", "parse_variances", "is_residual_key"]

#: Name of the residual in variance tables.
RESIDUAL = "Residual"


def is_residual_key(key: Any) -> bool:
    """Whether ``key`` names the residual variance (case-insensitive ``"residual"``)."""
    return isinstance(key, str) and key.lower() == "residual"


def _term_matrix(value: Any, term: TermDesign) -> np.ndarray:
    k = term.k
    if isinstance(value, pd.DataFrame):
        cols = list(term.columns)
        if set(value.index) != set(cols) or set(value.columns) != set(cols):
            raise CovarianceError(
                f"variances[{term.name!r}] is labelled {list(value.columns)}; the term's columns "
                f"are {cols}"
            )
        value = value.loc[cols, cols].to_numpy(dtype=float)
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1 and len(arr) == k and (not term.term.correlated or k == 1):
        arr = np.diag(arr)
    if arr.shape != (k, k):
        hint = f"a {k} x {k} matrix over {list(term.columns)}" if k > 1 else "a number"
        raise CovarianceError(
            f"variances[{term.name!r}] has shape {arr.shape}; term ({term.term.lhs} | "
            f"{term.term.group}) needs {hint}"
        )
    if not np.isfinite(arr).all():
        raise CovarianceError(f"variances[{term.name!r}] is not finite: {arr.tolist()}")
    if not np.allclose(arr, arr.T, rtol=1e-10, atol=0):
        raise CovarianceError(f"variances[{term.name!r}] is not symmetric: {arr.tolist()}")
    if not term.term.correlated and np.any(arr[~np.eye(k, dtype=bool)] != 0):
        raise CovarianceError(
            f"term {term.name!r} is uncorrelated (||) but variances[{term.name!r}] has non-zero "
            "covariances; give the variances only"
        )
    eig = np.linalg.eigvalsh(arr)
    if eig.min() < -1e-12 * max(abs(eig.max()), 1e-300):
        raise CovarianceError(
            f"variances[{term.name!r}] is not positive semi-definite (smallest eigenvalue "
            f"{eig.min():.3g}); a covariance matrix must be"
        )
    return (arr + arr.T) / 2.0


def parse_variances(variances: Mapping[str, Any], terms: Sequence[TermDesign]) -> tuple[list[np.ndarray], float]:
    """Per-term covariance matrices and the residual variance from ``variances=``.

    Parameters
    ----------
    variances : mapping
        Term name -> variance / covariance matrix, plus ``"residual"``.
    terms : sequence of TermDesign
        The model's random terms.

    Returns
    -------
    (list of numpy.ndarray, float)
        ``Sigma_t`` for each term in order, and ``sigma_e^2``.

    Raises
    ------
    CovarianceError
        Unknown or missing names, wrong shapes, negative or non-PSD values.
    """
    if not isinstance(variances, Mapping):
        raise CovarianceError(f"variances must be a dict of term name -> variance; got {type(variances).__name__}")
    variances = {(",".join(k) if isinstance(k, tuple) else k): v for k, v in variances.items()}
    names = [t.name for t in terms]
    residual_keys = [k for k in variances if is_residual_key(k)]
    unknown = [k for k in variances if not is_residual_key(k) and k not in names]
    if unknown:
        raise CovarianceError(
            f"variances names {unknown} which are not terms of the model; the terms are {names} "
            "plus 'residual'"
        )
    missing = [n for n in names if n not in variances]
    if missing or not residual_keys:
        need = missing + ([] if residual_keys else ["residual"])
        raise CovarianceError(
            f"variances must give every component; missing {need} (terms are {names} plus 'residual')"
        )
    if len(residual_keys) > 1:
        raise CovarianceError(f"the residual variance is given twice: {residual_keys}")
    residual = variances[residual_keys[0]]
    try:
        residual = float(residual)
    except (TypeError, ValueError):
        raise CovarianceError(f"the residual variance must be a number; got {residual!r}") from None
    if not (np.isfinite(residual) and residual > 0):
        raise CovarianceError(f"the residual variance must be positive and finite; got {residual}")
    return [_term_matrix(variances[t.name], t) for t in terms], residual
