"""Outputs of random regression models: covariance functions and curves.

For a term such as ``(0 + leg(dim, 2) | animal)`` with coefficient covariance
``Sigma`` (``k x k``) the covariance function is ``K(t1, t2) = phi(t1)' Sigma phi(t2)``
(Kirkpatrick et al. 1990) and the curve of level ``i`` is ``phi(t)' u_i``, where
``phi(t)`` is the term's basis evaluated with the training encoding (the same
Legendre scaling, for instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError
from .formula import formula_context

__all__ = ["basis", "covariance_function", "variance_curve", "curves"]


def _term(res: Any, term: str):
    for t in res._design.terms:
        if t.name == term:
            if t.lhs_spec is None:
                raise DataError(f"term {term!r} is a joint term; ask for one of its members")
            return t
    raise KeyError(f"no random term {term!r}; the terms are {[t.name for t in res._design.terms]}")


def basis(res: Any, term: str, at: Sequence[float] | pd.DataFrame, covariate: str | None = None) -> pd.DataFrame:
    """The term's columns (e.g. Legendre polynomials) evaluated at new covariate values.

    Parameters
    ----------
    res : MixedModelResults
        A fitted model.
    term : str
        Random term name (``"animal"``).
    at : sequence of float or DataFrame
        Covariate values (or a frame with every variable the term uses).
    covariate : str, optional
        Name of the covariate when ``at`` is a sequence; inferred when the term uses one variable.

    Returns
    -------
    pandas.DataFrame
        ``len(at) x k``, columns named like the term's columns.
    """
    t = _term(res, term)
    if isinstance(at, pd.DataFrame):
        frame = at
    else:
        needed = sorted(t.lhs_spec.required_variables)
        if covariate is None:
            if len(needed) != 1:
                raise DataError(f"term {term!r} uses {needed}; pass covariate= or a DataFrame")
            covariate = needed[0]
        frame = pd.DataFrame({covariate: np.asarray(at, dtype=float)})
    mm = t.lhs_spec.get_model_matrix(frame, context=formula_context())
    values = np.asarray(mm.toarray() if hasattr(mm, "toarray") else mm, dtype=float)
    index = frame[covariate] if covariate is not None else frame.index
    return pd.DataFrame(values, index=pd.Index(index, name=covariate), columns=list(t.columns))


def covariance_function(res: Any, term: str, at: Sequence[float], covariate: str | None = None) -> pd.DataFrame:
    """``K(t1, t2) = phi(t1)' Sigma phi(t2)`` on a grid (``len(at) x len(at)``)."""
    phi = basis(res, term, at, covariate)
    sigma = res._sigmas[[t.name for t in res._design.terms].index(term)]
    K = phi.to_numpy() @ sigma @ phi.to_numpy().T
    return pd.DataFrame(K, index=phi.index, columns=phi.index)


def variance_curve(res: Any, term: str, at: Sequence[float], covariate: str | None = None) -> pd.Series:
    """The term's variance along the covariate: the diagonal of :func:`covariance_function`."""
    K = covariance_function(res, term, at, covariate)
    return pd.Series(np.diag(K.to_numpy()), index=K.index, name=f"var({term})")


def curves(res: Any, term: str, at: Sequence[float], covariate: str | None = None,
           levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Predicted curves ``phi(t)' u_i`` of levels (e.g. breeding-value curves), levels x points."""
    phi = basis(res, term, at, covariate)
    table = res.random_effects(term)
    u = table.pivot(index="level", columns="term", values="estimate")
    u = u.reindex(index=pd.unique(table["level"]), columns=list(phi.columns))
    if levels is not None:
        u = u.loc[[str(v) for v in levels]]
    return pd.DataFrame(u.to_numpy() @ phi.to_numpy().T, index=u.index, columns=phi.index)
