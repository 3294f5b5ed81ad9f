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
import pandas as pd
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


def dense_information(y: np.ndarray, X: np.ndarray, V0: np.ndarray | None, Vks: Sequence[np.ndarray],
                      v: np.ndarray, reml: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Analytic Satterthwaite ingredients at ``V = V0 + sum v_k V_k`` (``beta`` profiled out).

    Returns ``H`` (the observed Hessian of ``-2 log L`` in ``v``:
    ``-tr(P V_i P V_j) + 2 y'P V_i P V_j P y`` for REML, ``V^-1`` in the trace for ML),
    ``C = (X' V^-1 X)^-1`` and ``dC/dv_k = C X'V^-1 V_k V^-1 X C`` (shape ``(m, p, p)``).
    """
    n = len(y)
    V = (np.zeros((n, n)) if V0 is None else V0) + sum(vk * Vk for vk, Vk in zip(v, Vks))
    Vi = np.linalg.inv(V)
    ViX = Vi @ X
    C = np.linalg.inv(X.T @ ViX)
    P = Vi - ViX @ C @ ViX.T
    Py = P @ y
    T = P if reml else Vi
    m = len(Vks)
    H = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            H[i, j] = H[j, i] = -np.sum((T @ Vks[i]) * (T @ Vks[j]).T) + 2 * Py @ Vks[i] @ P @ Vks[j] @ Py
    dC = np.array([C @ ViX.T @ Vk @ ViX @ C for Vk in Vks])
    return H, C, dC


def dense_satterthwaite(H: np.ndarray, C: np.ndarray, dC: np.ndarray, L: np.ndarray) -> np.ndarray:
    """``2 (l'Cl)^2 / (g' A g)`` with ``A = 2 H^-1`` and ``g_k = l' dC/dv_k l``, per row ``l`` of ``L``."""
    A = 2 * np.linalg.inv(H)
    out = []
    for l in np.atleast_2d(L):
        g = np.einsum("i,kij,j->k", l, dC, l)
        out.append(2 * (l @ C @ l) ** 2 / (g @ A @ g))
    return np.array(out)


def incidence(codes: pd.Series) -> np.ndarray:
    """Dense 0/1 incidence matrix of ``codes`` on their sorted levels."""
    levels = sorted(codes.unique())
    return (codes.to_numpy()[:, None] == np.array(levels)[None, :]).astype(float)


def sleepstudy_slopes(sleep: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """``y``, ``X`` and the covariance pieces of ``Reaction ~ Days + (Days|Subject)``: ``Z1 Z1'``
    (intercepts), ``Z2 Z2'`` (slopes) and ``Z1 Z2' + Z2 Z1'`` (their covariance)."""
    y = sleep["Reaction"].to_numpy(float)
    X = np.column_stack([np.ones(len(y)), sleep["Days"].to_numpy(float)])
    Z1 = incidence(sleep["Subject"].astype(str))
    Z2 = Z1 * sleep["Days"].to_numpy(float)[:, None]
    return y, X, [Z1 @ Z1.T, Z2 @ Z2.T, Z1 @ Z2.T + Z2 @ Z1.T]
