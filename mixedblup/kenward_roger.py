"""Kenward-Roger tests of fixed effects (Kenward & Roger 1997), as in R's pbkrtest.

``V = sum_r s_r G_r`` is linear in the variance parameters ``s`` (every variance
and covariance of every term, then the residual), with ``G_r = Z_t (K_t (x) E_r) Z_t'``.
From ``P_r = -X'V^-1 G_r V^-1 X``, ``Q_rs = X'V^-1 G_r V^-1 G_s V^-1 X`` and
``W = 2 I_E^-1`` (``I_E`` the expected REML information) the small-sample
adjusted covariance ``Phi_A = Phi + 2 Phi (sum_rs W_rs (Q_rs - P_r Phi P_s)) Phi`` and
the scaled F statistic and its denominator df follow pbkrtest's ``KRmodcomp``.

The computation is dense in the number of observations (``n x n`` matrices) and is
meant for small and medium data sets (``n <= MAX_N``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .errors import MixedBlupError

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["MAX_N", "kenward_roger_test", "kenward_roger_vcov"]

#: Largest number of observations for the dense Kenward-Roger computation.
MAX_N = 3000


@dataclass(frozen=True)
class _KRParts:
    phi: np.ndarray
    phi_a: np.ndarray
    P: list[np.ndarray]
    W: np.ndarray


def _derivative_matrices(res: MixedModelResults) -> list[np.ndarray]:
    design = res._design
    mats = []
    for term, cov in zip(design.terms, res._cp.covariances):
        K = np.linalg.inv(cov.precision.toarray())
        K = (K + K.T) / 2
        Z = term.Z
        k = term.k
        pairs = [(i, i) for i in range(k)]
        if term.term.correlated:
            pairs += [(i, j) for i in range(k) for j in range(i + 1, k)]
        for i, j in pairs:
            E = np.zeros((k, k))
            E[i, j] = E[j, i] = 1.0
            G = sp.csr_matrix(np.kron(K, E))
            mats.append(np.asarray((Z @ G @ Z.T).todense()))
    w = design.weights
    mats.append(np.diag(1.0 / w) if w is not None else np.eye(design.n))
    return mats


def _parts(res: MixedModelResults) -> _KRParts:
    return res._kenward_roger


def compute_parts(res: MixedModelResults) -> _KRParts:
    """``Phi``, ``Phi_A``, the ``P_r`` and ``W`` of a fit (cached on the results object)."""
    design = res._design
    if design.n > MAX_N:
        raise MixedBlupError(
            f"Kenward-Roger is computed with dense n x n matrices and this model has n = {design.n} "
            f"(> {MAX_N}); use ddf='Satterthwaite'"
        )
    X = design.X.toarray() if sp.issparse(design.X) else np.asarray(design.X)
    values = res.variance_components["estimate"].to_numpy()
    G = _derivative_matrices(res)
    V = sum(s * g for s, g in zip(values, G))
    cf = sla.cho_factor(V)
    VinvX = sla.cho_solve(cf, X)
    phi = np.linalg.inv(X.T @ VinvX)
    phi = (phi + phi.T) / 2
    H = [sla.cho_solve(cf, g) for g in G]  # V^-1 G_r
    O = [g @ VinvX for g in G]  # G_r V^-1 X
    m = len(G)
    P = [-(o.T @ VinvX) for o in O]
    P = [(p + p.T) / 2 for p in P]
    Q = {}
    for r in range(m):
        for s in range(r, m):
            Q[r, s] = O[r].T @ sla.cho_solve(cf, O[s])
    IE2 = np.zeros((m, m))
    for r in range(m):
        for s in range(r, m):
            ktrace = float(np.sum(H[r].T * H[s]))
            IE2[r, s] = IE2[s, r] = (ktrace - 2 * float(np.sum(phi * Q[r, s]))
                                     + float(np.sum((phi @ P[r]) * (P[s] @ phi))))
    eig = np.linalg.eigvalsh(IE2)
    W = 2 * (np.linalg.inv(IE2) if np.abs(eig).min() > 1e-10 else np.linalg.pinv(IE2))
    W = (W + W.T) / 2
    U = np.zeros_like(phi)
    for r in range(m):
        for s in range(r + 1, m):
            U += W[r, s] * (Q[r, s] - P[r] @ phi @ P[s])
    U = U + U.T
    for r in range(m):
        U += W[r, r] * (Q[r, r] - P[r] @ phi @ P[r])
    phi_a = phi + 2 * phi @ U @ phi
    return _KRParts(phi, (phi_a + phi_a.T) / 2, P, W)


def kenward_roger_vcov(res: MixedModelResults) -> np.ndarray:
    """The Kenward-Roger adjusted covariance of the fixed effects ``Phi_A``."""
    if res.variances_known:
        raise MixedBlupError("Kenward-Roger needs estimated variance components")
    return _parts(res).phi_a.copy()


def kenward_roger_test(res: MixedModelResults, L: np.ndarray):
    """Kenward-Roger F test of ``L beta = 0`` (pbkrtest's ``KRmodcomp``); returns a ContrastTest."""
    from .inference import ContrastTest, f_pvalue

    if res.variances_known:
        raise MixedBlupError("Kenward-Roger needs estimated variance components")
    if res.method != "REML":
        raise MixedBlupError("Kenward-Roger is defined for REML fits; refit with method='REML'")
    kr = _parts(res)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    q = int(np.linalg.matrix_rank(L))
    phi, P, W = kr.phi, kr.P, kr.W
    beta = res._solution.beta
    Theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
    TP = Theta @ phi
    A1 = A2 = 0.0
    m = len(P)
    for i in range(m):
        ui = TP @ P[i] @ phi
        for j in range(i, m):
            e = 1.0 if i == j else 2.0
            uj = TP @ P[j] @ phi
            A1 += e * W[i, j] * np.trace(ui) * np.trace(uj)
            A2 += e * W[i, j] * float(np.sum(ui * uj.T))
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    den = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
    V0 = 1 + c1 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    V1, V2 = 1 - c2 * B, 1 - c3 * B
    rho = (1 / q) * ((1 - A2 / q) / V1) ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scale = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    Lb = L @ beta
    wald = float(Lb @ np.linalg.solve(L @ kr.phi_a @ L.T, Lb))
    F = scale * wald / q
    return ContrastTest(Lb, F, float(q), float(df2), f_pvalue(F, q, df2))

