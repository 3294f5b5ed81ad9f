"""Legendre polynomial bases for random regression models.

``leg(x, degree)`` in a formula gives the normalised Legendre polynomials
``phi_0 ... phi_degree`` of the covariate rescaled to ``[-1, 1]`` (Kirkpatrick,
Lofsvold & Bulmer 1990), the basis of random regression test-day models:

    phi_k(t) = sqrt((2k + 1) / 2) P_k(t),   t = 2 (x - lower) / (upper - lower) - 1

``lower`` and ``upper`` default to the range of the training data and are
remembered (a formulaic stateful transform), so predictions at new covariate values
use the same scaling.  Because ``phi_0`` is constant, write random terms as
``(0 + leg(dim, 2) | animal)``: ``phi_0`` takes the place of the intercept.
"""

from __future__ import annotations

import numpy as np
from formulaic.materializers.types import FactorValues
from formulaic.utils.stateful_transforms import stateful_transform

__all__ = ["leg", "legendre_basis"]


def legendre_basis(t: np.ndarray, degree: int) -> np.ndarray:
    """Normalised Legendre polynomials ``phi_0..phi_degree`` at ``t`` in ``[-1, 1]``.

    Parameters
    ----------
    t : numpy.ndarray
        Points in ``[-1, 1]``.
    degree : int
        Highest order.

    Returns
    -------
    numpy.ndarray
        ``len(t) x (degree + 1)``.
    """
    t = np.asarray(t, dtype=float)
    P = np.empty((len(t), degree + 1))
    P[:, 0] = 1.0
    if degree >= 1:
        P[:, 1] = t
    for k in range(1, degree):
        P[:, k + 1] = ((2 * k + 1) * t * P[:, k] - k * P[:, k - 1]) / (k + 1)
    return P * np.sqrt((2 * np.arange(degree + 1) + 1) / 2.0)


@stateful_transform
def leg(x, degree: int = 2, lower: float | None = None, upper: float | None = None,
        _state: dict = {}):  # noqa: B006 - formulaic replaces the state dict
    """Normalised Legendre basis of ``x`` (orders ``0..degree``), for formulas.

    Parameters
    ----------
    x : array-like
        The covariate (days in milk, age...).
    degree : int
        Highest polynomial order.
    lower, upper : float, optional
        The covariate range mapped to ``[-1, 1]``; the training data's range by default.

    Returns
    -------
    formulaic FactorValues
        Columns ``0..degree``.
    """
    if int(degree) != degree or degree < 0:
        raise ValueError(f"leg(): degree must be a non-negative integer; got {degree!r}")
    degree = int(degree)
    x = np.asarray(x, dtype=float)
    if "lower" not in _state:
        lo = float(np.nanmin(x)) if lower is None else float(lower)
        hi = float(np.nanmax(x)) if upper is None else float(upper)
        if not hi > lo:
            raise ValueError("leg(): the covariate has no range (all values equal); give lower= and upper=")
        _state["lower"], _state["upper"] = lo, hi
    lo, hi = _state["lower"], _state["upper"]
    t = 2.0 * (x - lo) / (hi - lo) - 1.0
    out = np.full((len(x), degree + 1), np.nan)
    ok = np.isfinite(t)
    out[ok] = legendre_basis(t[ok], degree)
    return FactorValues(out, column_names=tuple(str(k) for k in range(degree + 1)))
