"""Average-information REML: Newton steps on the profiled criterion with analytic gradients.

The parameters are the relative-factor elements ``theta`` of
:class:`~mixedblup.estimate.ThetaMap` (``Sigma_t = sigma_e^2 Lambda_t Lambda_t'``), the
same as the derivative-free optimiser's, and so is the criterion (REML ``-2 log L``
profiled over ``beta`` and ``sigma_e^2``).  One iteration factorises ``C(theta)`` once and
gets from that one factor:

* the exact gradient of the profiled criterion,
  ``d/dtheta_i = tr(C^-1 dC_i) + (n - p) d pwrss_i / pwrss`` with
  ``dC_i = dT_i' M T + T' M dT_i`` (the prior part of ``C`` does not depend on ``theta``).
  The trace needs ``C^-1`` only on the sparsity pattern of ``C``: the selected inverse of
  the sparse ``L D L'`` back end (:mod:`mixedblup.selinv`), the exact inverse of a dense
  factor, or the block formula of the Schur back end;
  ``d pwrss_i = -2 (dT_i s)' (r - M T s)`` costs one sparse product;
* the average-information matrix ``w_i' P w_j`` in ``(theta, sigma_e^2)``, from the
  working variates ``w_i = dV_i P y`` (for a relative factor:
  ``Z (dLambda_i b + Lambda E_ci Lambda^-T b)`` per level) and one solve with ``m + 1``
  right-hand sides; profiling ``sigma_e^2`` out is a Schur complement of this matrix.

The Newton step is taken in the relative covariances ``phi = vech(Lambda_t Lambda_t')``
(the classical AI-REML parameters, variances on the log scale: far from the optimum the
criterion behaves like a sum of logs of the variances): ``g_phi = J^-T g``,
``H_phi = J^-T H J^-1`` with ``J = dphi/dtheta``.  Near the optimum the AI matrix is
corrected by a BFGS (secant) update with the exact gradients of the last two iterates,
which turns AI-REML's linear convergence into a superlinear one.  A variance changes by at
most a factor 10 up (100 down) per step; the step is halved until the criterion
decreases, and a step that makes a covariance matrix indefinite is shortened without an
evaluation.  One-column (or uncorrelated) elements that reach ``NEAR_ZERO`` with a
gradient pushing them down are held there (the caller snaps them to exactly zero when
that is no worse).  When a multi-column relative factor becomes singular, or no step
decreases the criterion, :func:`ai_reml` stops with ``success=False`` and the caller
continues with the derivative-free optimiser from the best point found.

Only REML with the ``"dense"``, ``"schur"`` and ``"ldl"`` back ends is supported
(:func:`supported`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import EstimationError
from .factor import DENSE_MAX, Factor, _cholmod, factorize
from .mme import CrossProducts, coefficient_matrix, fixed_level_equations

__all__ = ["AI_MIN_SIZE", "PRECISE_MAX", "PRECISE_TOL", "AIResult", "ai_reml", "ai_reml_or_none", "derivatives", "supported"]

logger = logging.getLogger("mixedblup.estimate")

#: Smallest system (equations) for which ``estimate_variances`` uses AI-REML by default
#: (0: every REML fit the back end supports).  Measured on the classic lme4 sets (sleepstudy,
#: Dyestuff, Penicillin, Pastes) AI-REML takes 4-7 factorisations where COBYQA takes 30-110,
#: and is 4-9x faster end to end.
AI_MIN_SIZE = 0

#: Below this many equations a factorisation and a selected inverse cost about a millisecond,
#: so AI-REML iterates to a Newton decrement of :data:`PRECISE_TOL` (no early final step):
#: the estimates then agree with closed forms and with lme4 to about 1e-7 relative.
PRECISE_MAX = 2000

#: Newton-decrement tolerance (units of ``-2 log L``) on systems below :data:`PRECISE_MAX`.
PRECISE_TOL = 1e-11

#: A diagonal element within this fraction of the largest element of zero, whose gradient
#: pushes it down, is held (the caller snaps it to exactly zero when that is no worse).
NEAR_ZERO = 1e-5

#: Largest factor by which one AI-REML step may increase a relative variance (on the log
#: scale; a decrease may be by the square of it).
MAX_LOG_STEP = np.log(10.0)


@dataclass
class AIResult:
    """Outcome of :func:`ai_reml`.

    Attributes
    ----------
    theta : numpy.ndarray
        Best parameters found.
    value : float
        Profiled ``-2 log L`` there.
    success : bool
        Whether the convergence test was met.
    iterations : int
        Newton iterations (derivative evaluations).
    evaluations : int
        Factorisations (criterion evaluations).
    gradient : numpy.ndarray
        Projected gradient at ``theta`` (zero for elements held at the bound).
    hessian : numpy.ndarray
        Average-information approximation of the Hessian of the profiled criterion.
    message : str
        Why it stopped.
    timings : dict
        Seconds spent in factorisations, selected inversion and traces, and the rest.
    """

    theta: np.ndarray
    value: float
    success: bool
    iterations: int
    evaluations: int
    gradient: np.ndarray
    hessian: np.ndarray
    message: str
    timings: dict[str, float] = field(default_factory=dict)

    # scipy OptimizeResult-like aliases used by the caller
    @property
    def x(self) -> np.ndarray:
        """Alias of :attr:`theta`."""
        return self.theta

    @property
    def fun(self) -> float:
        """Alias of :attr:`value`."""
        return self.value

    @property
    def nit(self) -> int:
        """Alias of :attr:`iterations`."""
        return self.iterations


def supported(cp: CrossProducts, backend: str, reml: bool) -> bool:
    """Whether :func:`ai_reml` can handle this model and back end."""
    if not reml or cp.size == 0 or not cp.ks:
        return False
    if len(fixed_level_equations(cp)):
        return False  # fixed levels change the criterion's log-determinant (not derived here)
    return backend in ("auto", "dense", "schur", "ldl")


def _backend_for(cp: CrossProducts, backend: str) -> str:
    """The back end AI-REML factorises with: ``"auto"`` unless that would pick CHOLMOD
    (no selected inverse), in which case the sparse ``L D L'``."""
    if backend != "auto" or _cholmod() is None:
        return backend
    sparse = cp.size > DENSE_MAX and not (len(cp.eliminate) >= 64 and cp.size - len(cp.eliminate) <= DENSE_MAX)
    return "ldl" if sparse else backend


@dataclass
class _Point:
    theta: np.ndarray
    value: float
    s2: float
    factor: Factor
    T: sp.csc_matrix
    rhs: np.ndarray
    sol: np.ndarray


class _Model:
    """Index arrays of the parameters and the per-point computations."""

    def __init__(self, cp: CrossProducts, tmap: Any, backend: str) -> None:
        self.cp = cp
        self.tmap = tmap
        self.backend = backend
        self.p = cp.p
        self.dof = cp.n - cp.p
        self.r0 = np.concatenate([cp.Xty, cp.Zty])
        self.M = sp.csc_matrix(cp.M)
        self.Mx = self.M[:, : self.p].tocsc()
        self.Mz = self.M[:, self.p:].tocsc()
        # parameter i -> (term, row r, column c) of its Lambda element, and the equation
        # indices x_l = (level l, c) and y_l = (level l, r) of that term (full coordinates)
        self.params: list[tuple[int, int, int]] = []
        self.x_idx: list[np.ndarray] = []
        self.y_idx: list[np.ndarray] = []
        for t, (k, (rows, cols)) in enumerate(zip(tmap.ks, tmap._slices)):
            q = len(cp.covariances[t].levels)
            base = self.p + cp.offsets[t] + np.arange(q) * k
            for r, c in zip(rows, cols):
                self.params.append((t, int(r), int(c)))
                self.x_idx.append(base + int(c))
                self.y_idx.append(base + int(r))
        self.m = len(self.params)
        self.evaluations = 0
        self.timings = {"factorise": 0.0, "derivatives": 0.0}

    # ------------------------------------------------------------------ criterion
    def point(self, theta: np.ndarray) -> _Point | None:
        """Factorise at ``theta``; None when ``C`` is not positive definite."""
        t0 = time.perf_counter()
        self.evaluations += 1
        cp = self.cp
        lambdas = self.tmap.lambdas(theta)
        C, T = coefficient_matrix(cp, lambdas)
        rhs = T.T @ self.r0
        try:
            factor = factorize(C, self.backend, cp.eliminate, cp.symbolic)
        except EstimationError:
            self.timings["factorise"] += time.perf_counter() - t0
            return None
        sol = factor.solve(rhs)
        pwrss = float(cp.yty - sol @ rhs)
        s2 = pwrss / self.dof
        self.timings["factorise"] += time.perf_counter() - t0
        if not (s2 > 0 and np.isfinite(s2)):
            return None
        logdet_K = float(sum(k * cov.logdet for k, cov in zip(cp.ks, cp.covariances)))
        value = self.dof * (1.0 + np.log(2 * np.pi * s2)) + factor.logdet() + logdet_K - cp.log_w
        return _Point(np.array(theta, dtype=float), float(value), s2, factor, T, rhs, sol)

    # ------------------------------------------------------------------ derivatives
    def derivatives(self, pt: _Point) -> tuple[np.ndarray, np.ndarray, bool]:
        """Gradient of the profiled criterion and its AI Hessian at a point.

        Returns ``(g, H, ai_ok)``; ``ai_ok`` is False when a relative factor with more
        than one column is singular (the AI working variates need its inverse there);
        ``H`` is then NaN.
        """
        t0 = time.perf_counter()
        cp, p, m = self.cp, self.p, self.m
        T, s, factor = pt.T, pt.sol, pt.factor
        pwrss = pt.s2 * self.dof
        Ts = T @ s
        g0 = self.r0 - self.M @ Ts  # [X'W e; Z'W e]
        H = (T.T @ self.M).tocsc()  # T' M
        # traces tr(C^-1 dC_i) = 2 sum_l (C^-1 T'M)[x_l, y_l]: pairs (x_l, a) over the
        # nonzeros a of column y_l of T'M, looked up in the (selected) inverse at once
        rows_all, cols_all, vals_all, owner = [], [], [], []
        for i in range(m):
            y = self.y_idx[i]
            sub = H[:, y]
            counts = np.diff(sub.indptr)
            rows_all.append(sub.indices.astype(np.int64))
            cols_all.append(np.repeat(self.x_idx[i], counts))
            vals_all.append(sub.data)
            owner.append(np.full(sub.nnz, i))
        rows = np.concatenate(rows_all) if rows_all else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(cols_all) if cols_all else np.zeros(0, dtype=np.int64)
        vals = np.concatenate(vals_all) if vals_all else np.zeros(0)
        own = np.concatenate(owner) if owner else np.zeros(0, dtype=np.int64)
        cinv = factor.inverse_entries(rows, cols)
        if not np.isfinite(cinv).all():  # pairs off a selected pattern: exact solves for those
            bad = ~np.isfinite(cinv)
            cinv[bad] = Factor.inverse_entries(factor, rows[bad], cols[bad])
        traces = 2.0 * np.bincount(own, weights=vals * cinv, minlength=m)
        dpwrss = np.array([-2.0 * float(s[self.x_idx[i]] @ g0[self.y_idx[i]]) for i in range(m)])
        grad = traces + self.dof * dpwrss / pwrss

        # average information in (theta, sigma_e^2)
        ai_ok = True
        lambdas = self.tmap.lambdas(pt.theta)
        X = np.zeros((cp.size - p, m))  # working variates in u-space: w_i = Z X[:, i]
        b = s[p:]
        for i, (t, r, c) in enumerate(self.params):
            k = cp.ks[t]
            off = cp.offsets[t]
            q = len(cp.covariances[t].levels)
            B = b[off: off + q * k].reshape(q, k)
            part = np.zeros((q, k))
            part[:, r] = B[:, c]  # dLambda_i b_l with dLambda_i = E_rc
            if k == 1:
                part += B  # Lambda E Lambda^-T b = b for a scalar factor (also at zero)
            else:
                lam = lambdas[t]
                if np.min(np.abs(np.diag(lam))) <= 1e-12 * max(1.0, np.abs(lam).max()):
                    ai_ok = False
                    break
                E = np.zeros((k, k))
                E[r, c] = 1.0
                # rows: b_l' Lambda^-1 E_rc Lambda'  (the transpose of Lambda E_cr Lambda^-T b_l)
                part += B @ np.linalg.solve(lam, E @ lam.T)
            X[off: off + q * k, i] = part.ravel()
        if not ai_ok:
            self.timings["derivatives"] += time.perf_counter() - t0
            return grad, np.full((m, m), np.nan), False
        s2 = pt.s2
        beta = s[:p]
        Mxb = self.Mx @ beta if p else np.zeros(cp.size)
        W = np.empty((cp.size, m + 1))
        W[:, :m] = (self.Mz @ X) if m else W[:, :m]
        W[:, m] = (self.r0 - Mxb) / s2  # Wm' W (y - X beta) / s2
        Q = np.empty((m + 1, m + 1))
        Q[:m, :m] = X.T @ W[p:, :m]
        Q[:m, m] = Q[m, :m] = X.T @ W[p:, m]
        ywy = cp.yty - 2.0 * float(beta @ cp.Xty) + float(beta @ Mxb[:p])
        Q[m, m] = ywy / s2 ** 2
        R = T.T @ W
        Y = factor.solve(np.ascontiguousarray(R))
        AI = (Q - R.T @ Y) / s2
        AI = 0.5 * (AI + AI.T)
        # profile sigma_e^2 out: Schur complement
        Hp = AI[:m, :m] - np.outer(AI[:m, m], AI[m, :m]) / AI[m, m]
        self.timings["derivatives"] += time.perf_counter() - t0
        return grad, Hp, True


class _PhiMap:
    """Relative covariances ``phi = vech(Lambda_t Lambda_t')`` in the order of ``theta``.

    For a correlated term the parameters are the lower triangle of ``Lambda_t`` and
    ``phi`` the lower triangle of ``Lambda_t Lambda_t'`` (same positions); otherwise
    both are diagonals and ``phi = theta^2``.
    """

    def __init__(self, tmap: Any) -> None:
        self.blocks = []
        pos = 0
        for k, corr, (rows, cols) in zip(tmap.ks, tmap.correlated, tmap._slices):
            self.blocks.append((k, bool(corr) and k > 1, np.asarray(rows), np.asarray(cols), pos))
            pos += len(rows)
        self.m = pos

    def phi(self, theta: np.ndarray) -> np.ndarray:
        out = np.empty(self.m)
        for k, corr, rows, cols, pos in self.blocks:
            t = theta[pos: pos + len(rows)]
            if corr:
                lam = np.zeros((k, k))
                lam[rows, cols] = t
                out[pos: pos + len(rows)] = (lam @ lam.T)[rows, cols]
            else:
                out[pos: pos + len(rows)] = t ** 2
        return out

    def theta(self, phi: np.ndarray, floor: np.ndarray | None = None) -> np.ndarray | None:
        """Inverse of :meth:`phi`; None if a correlated block is not positive definite.

        Variances (of uncorrelated elements) below ``floor`` are set to ``floor``
        (default zero).
        """
        out = np.empty(self.m)
        floor = np.zeros(self.m) if floor is None else floor
        for k, corr, rows, cols, pos in self.blocks:
            v = phi[pos: pos + len(rows)]
            if corr:
                S = np.zeros((k, k))
                S[rows, cols] = v
                S = S + np.tril(S, -1).T
                try:
                    lam = np.linalg.cholesky(S)
                except np.linalg.LinAlgError:
                    return None
                out[pos: pos + len(rows)] = lam[rows, cols]
            else:
                out[pos: pos + len(rows)] = np.sqrt(np.maximum(v, floor[pos: pos + len(rows)]))
        return out

    def variance_mask(self) -> np.ndarray:
        """Which elements of ``phi`` are variances (diagonal elements)."""
        out = np.zeros(self.m, dtype=bool)
        for k, corr, rows, cols, pos in self.blocks:
            out[pos: pos + len(rows)] = np.asarray(rows) == np.asarray(cols)
        return out

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """``d phi / d theta`` (block diagonal by term)."""
        J = np.zeros((self.m, self.m))
        for k, corr, rows, cols, pos in self.blocks:
            n = len(rows)
            t = theta[pos: pos + n]
            if not corr:
                J[pos: pos + n, pos: pos + n] = np.diag(2.0 * t)
                continue
            lam = np.zeros((k, k))
            lam[rows, cols] = t
            for j, (r, c) in enumerate(zip(rows, cols)):
                dS = np.zeros((k, k))
                dS[r, :] += lam[:, c]  # d(Lambda Lambda')/d Lambda_rc = E_rc Lambda' + Lambda E_cr
                dS[:, r] += lam[:, c]
                J[pos: pos + n, pos + j] = dS[rows, cols]
        return J


def _secant_update(H: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BFGS update of the AI matrix with the last step ``s`` and gradient change ``y``.

    The average information is close to, but not, the Hessian (AI-REML alone converges
    linearly); the exact gradients of two iterates make it satisfy the secant condition
    ``H s = y`` (superlinear convergence).  Skipped when the curvature ``y's`` is not
    positive.
    """
    ys = float(y @ s)
    Hs = H @ s
    sHs = float(s @ Hs)
    if not (ys > 1e-12 * float(np.linalg.norm(y) * np.linalg.norm(s))) or not sHs > 0:
        return H
    return H - np.outer(Hs, Hs) / sHs + np.outer(y, y) / ys


def derivatives(cp: CrossProducts, tmap: Any, theta: np.ndarray, backend: str = "auto"
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """Profiled REML criterion, its analytic gradient and AI Hessian at ``theta``.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products.
    tmap : ThetaMap
        Parameter layout.
    theta : numpy.ndarray
        Relative-factor parameters.
    backend : str
        Factorisation back end (``"auto"``, ``"dense"``, ``"schur"`` or ``"ldl"``).

    Returns
    -------
    (float, numpy.ndarray, numpy.ndarray)
        ``-2 log L`` (profiled), gradient, AI Hessian (NaN where unavailable).
    """
    model = _Model(cp, tmap, backend)
    pt = model.point(np.asarray(theta, dtype=float))
    if pt is None:
        raise EstimationError("the criterion cannot be evaluated at theta")
    g, H, _ = model.derivatives(pt)
    return pt.value, g, H


def ai_reml(cp: CrossProducts, tmap: Any, theta0: np.ndarray, *, backend: str = "auto",
            max_iterations: int = 50, tol: float = 1e-8, final_tol: float = 1e-5,
            record: Callable[[np.ndarray, float], None] | None = None,
            max_evaluations: int | None = None) -> AIResult:
    """Minimise the profiled REML criterion by average-information Newton steps.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products.
    tmap : ThetaMap
        Parameter layout (lower bounds: zero on diagonal elements).
    theta0 : numpy.ndarray
        Starting parameters.
    backend : str
        Factorisation back end (see :func:`supported`).
    max_iterations : int
        Newton iterations allowed.
    tol : float
        Convergence: the Newton decrement ``g' H^-1 g`` (over the free parameters) below
        ``tol``, in units of ``-2 log L`` (it estimates twice the distance to the optimum).
    final_tol : float
        A Newton step whose decrement is below ``final_tol`` is taken and the iteration
        stops without new derivatives (with the secant-corrected AI the criterion is
        then typically within ``1e-3 * final_tol`` of the optimum).
    record : callable, optional
        Called as ``record(theta, value)`` after every criterion evaluation.
    max_evaluations : int, optional
        Budget of factorisations; when it is spent the best point so far is returned
        (not converged).

    Returns
    -------
    AIResult
    """
    t_start = time.perf_counter()
    model = _Model(cp, tmap, backend)
    diag = tmap.diagonal()
    lower = np.where(diag, tmap.lower, -np.inf)
    m = model.m

    def evaluate(theta: np.ndarray) -> _Point | None:
        pt = model.point(theta)
        if record is not None:
            record(theta, pt.value if pt is not None else np.inf)
        return pt

    theta = np.maximum(np.asarray(theta0, dtype=float), lower)
    pt = evaluate(theta)
    if pt is None:
        return AIResult(theta, np.inf, False, 0, model.evaluations, np.full(m, np.nan),
                        np.full((m, m), np.nan), "criterion not finite at the start", model.timings)
    message, success, it = "iteration limit reached", False, 0
    grad = np.full(m, np.nan)
    Hp = np.full((m, m), np.nan)
    phimap = _PhiMap(tmap)
    previous: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None
    budget = np.inf if max_evaluations is None else max_evaluations
    for it in range(1, max_iterations + 1):
        if model.evaluations >= budget:
            message = f"evaluation budget ({max_evaluations}) spent"
            break
        grad, Hp, ok = model.derivatives(pt)
        if not ok or not np.isfinite(Hp).all() or not np.isfinite(grad).all():
            message = "average information unavailable (singular relative factor)"
            break
        # active set: one-column (or uncorrelated) elements at (or within a rounding-level
        # distance of) zero whose gradient does not point into the space (the criterion is
        # even in them: the gradient is zero at zero)
        near = pt.theta <= lower + NEAR_ZERO * max(1.0, float(np.abs(pt.theta).max()))
        held = diag & near & (grad >= -1e-10 * max(1.0, abs(pt.value)))
        free = ~held
        gp = np.where(held, 0.0, grad)
        # Newton step in the relative covariances phi = vech(Lambda Lambda') of the free
        # elements, where the criterion is closer to quadratic than in theta and the AI
        # matrix is the classical one: g_phi = J^-T g, H_phi = J^-T H J^-1
        phi = phimap.phi(pt.theta)
        J = phimap.jacobian(pt.theta)[np.ix_(free, free)]
        try:
            Jinv = np.linalg.inv(J)
        except np.linalg.LinAlgError:
            message = "relative factor singular"
            break
        g_phi = Jinv.T @ grad[free]
        H_phi = Jinv.T @ Hp[np.ix_(free, free)] @ Jinv
        # variances on the log scale (psi = log phi_ii; covariances stay linear): far from
        # the optimum the criterion behaves like a sum of logs of the variances, and a log
        # step cannot cross zero
        logv = phimap.variance_mask()[free] & (phi[free] > 0)
        D = np.where(logv, phi[free], 1.0)
        g_psi = D * g_phi
        H_psi = D[:, None] * H_phi * D[None, :]
        psi = np.where(logv, np.log(np.where(logv, phi[free], 1.0)), phi[free])
        if previous is not None and np.array_equal(previous[0], free) and previous[3]:
            H_psi = _secant_update(H_psi, psi - previous[1], g_psi - previous[2])
        step_f = np.zeros(int(free.sum()))
        if free.any():
            try:
                evals, evecs = np.linalg.eigh(0.5 * (H_psi + H_psi.T))
            except np.linalg.LinAlgError:
                message = "average information not usable"
                break
            floor = 1e-10 * max(1.0, float(np.abs(evals).max()))
            evals = np.maximum(np.abs(evals), floor)  # AI is PSD; guard round-off
            step_f = -evecs @ ((evecs.T @ g_psi) / evals)
        decrement = float(-g_psi @ step_f) if free.any() else 0.0
        logger.info("AI-REML iteration %d: -2logL = %.10g, |g| = %.3g, decrement %.3g",
                    it, pt.value, float(np.abs(gp).max()) if m else 0.0, decrement)
        if decrement < tol:
            message, success = "Newton decrement below tolerance", True
            break
        final = decrement < final_tol  # close enough: take this step and stop
        # trust region on the log scale: a variance changes by at most a factor
        # MAX_LOG_STEP (down: its square) per iteration
        if logv.any():
            up = np.where(logv & (step_f > 0), step_f / MAX_LOG_STEP, 0.0)
            down = np.where(logv & (step_f < 0), -step_f / (2 * MAX_LOG_STEP), 0.0)
            worst = max(float(up.max()), float(down.max()), 1.0)
            step_f = step_f / worst
        # step halving until the criterion decreases; a covariance matrix that is not
        # positive definite shortens the step without an evaluation
        accepted = None
        scale = 1.0
        for _ in range(16):
            psi_new = psi + scale * step_f
            phi_new = phi.copy()
            phi_new[free] = np.where(logv, np.exp(np.minimum(psi_new, 700.0)), psi_new)
            trial = phimap.theta(phi_new)
            if trial is not None:
                new = evaluate(trial)
                if new is not None and new.value <= pt.value + 1e-12 * abs(pt.value):
                    accepted = new
                    break
            scale *= 0.5
        # the secant pair is used next time only near the optimum, after a full step
        previous = (free.copy(), psi.copy(), g_psi.copy(), bool(decrement < 10.0 and scale == 1.0))
        if accepted is None:
            message = "no decrease along the AI direction"
            break
        pt = accepted
        if final:
            # the gradient reported is the last one computed (one step before)
            message, success = "Newton decrement below tolerance (last step taken)", True
            break
    near = pt.theta <= lower + NEAR_ZERO * max(1.0, float(np.abs(pt.theta).max()))
    held = diag & near & (grad >= -1e-10 * max(1.0, abs(pt.value)))
    gproj = np.where(held, 0.0, grad)
    timings = dict(model.timings)
    timings["total"] = time.perf_counter() - t_start
    return AIResult(pt.theta, pt.value, success, it, model.evaluations, gproj, Hp, message, timings)


def ai_reml_or_none(cp: CrossProducts, tmap: Any, theta0: np.ndarray, *, reml: bool, backend: str = "auto",
                    record: Callable[[np.ndarray, float], None] | None = None,
                    max_evaluations: int | None = None) -> AIResult | None:
    """Run :func:`ai_reml` when it is the optimiser of choice, else return None.

    AI-REML is used for REML on systems of at least :data:`AI_MIN_SIZE` equations with a
    back end that gives the inverse on the pattern (see :func:`supported`); on systems
    below :data:`PRECISE_MAX` equations it iterates to :data:`PRECISE_TOL`.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products.
    tmap : ThetaMap
        Parameter layout.
    theta0 : numpy.ndarray
        Starting parameters.
    reml : bool
        REML (True) or ML.
    backend : str
        Factorisation back end.
    record : callable, optional
        Called as ``record(theta, value)`` after every criterion evaluation.
    max_evaluations : int, optional
        Budget of factorisations.

    Returns
    -------
    AIResult or None
    """
    if cp.size < AI_MIN_SIZE or not supported(cp, backend, reml):
        return None
    precise = {"tol": PRECISE_TOL, "final_tol": 0.0} if cp.size < PRECISE_MAX else {}
    return ai_reml(cp, tmap, theta0, backend=_backend_for(cp, backend), record=record,
                   max_evaluations=max_evaluations, **precise)
