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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .design import TermDesign
from .errors import CovarianceError
from .labels import normalize_labels

__all__ = ["RESIDUAL", "HeldVariances", "parse_variances", "parse_held_variances", "is_residual_key"]

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


def _by_term_name(variances: Any, terms: Sequence[TermDesign]) -> tuple[dict[str, Any], list[str], list[str]]:
    """``variances`` keyed by term name (tuple keys joined), the term names and the residual keys.

    Raises
    ------
    CovarianceError
        If ``variances`` is not a mapping or names something that is not a term.
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
    return variances, names, residual_keys


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
    variances, names, residual_keys = _by_term_name(variances, terms)
    missing = [n for n in names if n not in variances]
    if missing or not residual_keys:
        need = missing + ([] if residual_keys else ["residual"])
        raise CovarianceError(
            f"variances must give every component; missing {need} (terms are {names} plus 'residual'; "
            "to hold some components and estimate the others, pass them as fixed_variances=)"
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


@dataclass(frozen=True)
class HeldVariances:
    """What ``variances=`` holds at given values; everything else is estimated.

    Attributes
    ----------
    terms : dict
        Term index -> ``Sigma_t`` held (``k x k``).
    residual : dict
        Residual class label -> variance held (the single key ``""`` without classes).
    n_terms : int
        Number of random terms of the model.
    residual_levels : tuple of str
        Residual classes (``("",)`` without ``residual_groups``).
    """

    terms: dict[int, np.ndarray] = field(default_factory=dict)
    residual: dict[str, float] = field(default_factory=dict)
    n_terms: int = 0
    residual_levels: tuple[str, ...] = ("",)

    @property
    def complete(self) -> bool:
        """Whether every component is given (known variances: nothing to estimate)."""
        return len(self.terms) == self.n_terms and set(self.residual) == set(self.residual_levels)

    @property
    def empty(self) -> bool:
        """Whether nothing is held (every component is estimated)."""
        return not self.terms and not self.residual


def _positive(value: Any, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise CovarianceError(f"{what} must be a number; got {value!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise CovarianceError(f"{what} must be positive and finite; got {value}")
    return value


def parse_held_variances(variances: Mapping[str, Any] | None, terms: Sequence[TermDesign],
                         residual_levels: Sequence[str] | None = None) -> HeldVariances:
    """Read a possibly partial ``variances=``: the components given are held, the rest estimated.

    Parameters
    ----------
    variances : mapping or None
        Term name -> variance / covariance matrix, and ``"residual"`` -> the residual
        variance, or (with residual classes) a mapping class -> variance, possibly partial.
    terms : sequence of TermDesign
        The model's random terms.
    residual_levels : sequence of str, optional
        Classes of ``residual_groups=`` (``None``: one residual variance).

    Returns
    -------
    HeldVariances

    Raises
    ------
    CovarianceError
        Unknown names or classes, wrong shapes, negative or non-PSD values.
    """
    levels = ("",) if residual_levels is None else tuple(str(x) for x in residual_levels)
    if variances is None:
        return HeldVariances({}, {}, len(terms), levels)
    variances, names, residual_keys = _by_term_name(variances, terms)
    if len(residual_keys) > 1:
        raise CovarianceError(f"the residual variance is given twice: {residual_keys}")
    held_terms = {i: _term_matrix(variances[t.name], t) for i, t in enumerate(terms) if t.name in variances}
    held_res: dict[str, float] = {}
    if residual_keys:
        value = variances[residual_keys[0]]
        if residual_levels is None:
            if isinstance(value, Mapping):
                raise CovarianceError(
                    "variances['residual'] is a dict, but the model has one residual variance; "
                    "give a number (or fit with residual_groups= for one variance per class)"
                )
            held_res[""] = _positive(value, "the residual variance")
        else:
            if not isinstance(value, Mapping):
                raise CovarianceError(
                    f"the model has a residual variance per class of {list(levels)}; give "
                    "variances['residual'] as a dict class -> variance (classes left out are estimated)"
                )
            for key, val in value.items():
                label = str(normalize_labels([key], what="residual classes")[0])
                if label not in levels:
                    raise CovarianceError(
                        f"variances['residual'] names class {key!r}, which is not a residual class; "
                        f"the classes are {list(levels)}"
                    )
                held_res[label] = _positive(val, f"the residual variance of class {label!r}")
    return HeldVariances(held_terms, held_res, len(terms), levels)
