"""A dense V-based REML/ML, independent of mixedblup, for the estimation tests.

``V = V0 + sum_k v_k V_k`` with ``V0`` the held (known) part and ``V_k`` the derivative
of ``V`` in component ``k``.  The criterion is lme4's ``-2 log L``; its gradient is the
classical score, ``tr(P V_k) - y' P V_k P y`` for REML (``P = V^-1 - V^-1 X (X' V^-1 X)^-1
X' V^-1``) and ``tr(V^-1 V_k) - r' V^-1 V_k V^-1 r`` for ML, so a quasi-Newton method
converges tightly from a neutral start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg as sla
from scipy import optimize


def dense_criterion(y: np.ndarray, X: np.ndarray, V0: np.ndarray, Vks: Sequence[np.ndarray], v: np.ndarray,
                    reml: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """``-2 log L``, its gradient in ``v`` and the GLS ``beta`` at ``V = V0 + sum v_k V_k``."""
    n, p = X.shape
    V = V0 + sum(vk * Vk for vk, Vk in zip(v, Vks))
    chol = sla.cho_factor(V, lower=True)
    logdet_v = 2.0 * np.log(np.diag(chol[0])).sum()
    Vi = sla.cho_solve(chol, np.eye(n))
    ViX = Vi @ X
    XtViX = X.T @ ViX
    beta = np.linalg.solve(XtViX, ViX.T @ y)
    r = y - X @ beta
    Vir = Vi @ r  # = P y
    quad = float(r @ Vir)
    if reml:
        P = Vi - ViX @ np.linalg.solve(XtViX, ViX.T)
        value = (n - p) * np.log(2 * np.pi) + logdet_v + np.linalg.slogdet(XtViX)[1] + quad
        grad = np.array([np.sum(P * Vk) - Vir @ Vk @ Vir for Vk in Vks])
    else:
        value = n * np.log(2 * np.pi) + logdet_v + quad
        grad = np.array([np.sum(Vi * Vk) - Vir @ Vk @ Vir for Vk in Vks])
    return float(value), grad, beta


def dense_fit(y: np.ndarray, X: np.ndarray, V0: np.ndarray | None, Vks: Sequence[np.ndarray], reml: bool,
              positive: Sequence[bool] | None = None, start: Sequence[float] | None = None,
              ) -> tuple[np.ndarray, float]:
    """Maximise the likelihood over ``v`` (log scale for the positive components).

    Returns the estimates and ``-2 log L`` at them.
    """
    m = len(Vks)
    positive = np.ones(m, dtype=bool) if positive is None else np.asarray(positive, dtype=bool)
    V0 = np.zeros((len(y), len(y))) if V0 is None else V0
    v_start = np.where(positive, 1.0, 0.0) if start is None else np.asarray(start, dtype=float)
    z0 = np.where(positive, np.log(np.where(positive, v_start, 1.0)), v_start)

    def to_v(z: np.ndarray) -> np.ndarray:
        return np.where(positive, np.exp(z), z)

    def f(z: np.ndarray) -> tuple[float, np.ndarray]:
        v = to_v(z)
        try:
            value, grad, _ = dense_criterion(y, X, V0, Vks, v, reml)
        except np.linalg.LinAlgError:
            return 1e300, np.zeros(m)
        return value, grad * np.where(positive, v, 1.0)

    out = optimize.minimize(f, z0, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 2000})
    out = optimize.minimize(f, out.x, jac=True, method="L-BFGS-B",
                            options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 2000})
    return to_v(out.x), float(out.fun)
