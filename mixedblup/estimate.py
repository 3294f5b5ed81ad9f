"""Estimating variance components by REML or ML (profiled, derivative-based).

The parameters are ``theta``: for each term the lower-triangular elements of its
relative factor ``Lambda_t`` (``Sigma_t = sigma_e^2 Lambda_t Lambda_t'``; only the
diagonal for ``||`` terms).  ``beta`` and ``sigma_e^2`` are profiled out, so the
criterion is a function of ``theta`` alone (lme4's formulation), evaluated from one
factorisation of the mixed model equations:

    REML: -2 l = (n - p)(1 + log(2 pi s2)) + log|C| + sum_t k_t log|K_t| - log|W|,
          s2 = pwrss / (n - p)
    ML:   -2 l = n (1 + log(2 pi s2)) + log|C_zz| + sum_t k_t log|K_t| - log|W|,
          s2 = pwrss / n

Diagonal elements of ``Lambda`` are bounded below by zero, so estimates are never
negative and covariance matrices are positive semi-definite by construction.  After the optimiser
stops, elements that are tiny are snapped to exactly zero when the criterion
does not get worse (MixedModels.jl's rule) and reported as a singular fit.
"""

from __future__ import annotations

import logging
import time
import warnings
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from .design import Design
from .errors import ConvergenceWarning, EstimationError, SingularFitWarning
from .mme import CrossProducts, solve_mme

__all__ = ["OptSummary", "ThetaMap", "profiled_criterion", "estimate_variances", "vc_labels",
           "variance_component_covariance", "minus_two_loglik_at"]

logger = logging.getLogger("mixedblup.estimate")

#: Relative size below which a diagonal theta element is snapped to zero.
SNAP_TOL = 1e-4
#: Criterion increase tolerated by snapping.
SNAP_FTOL = 1e-6


@dataclass(frozen=True)
class ThetaMap:
    """Where each term's ``Lambda`` elements live in the parameter vector ``theta``.

    Attributes
    ----------
    ks : tuple of int
        Columns per term.
    correlated : tuple of bool
        Whether each term has off-diagonal elements.
    lower : numpy.ndarray
        Lower bounds (0 for diagonal elements, -inf otherwise).
    start : numpy.ndarray
        Default starting values (identity factors).
    """

    ks: tuple[int, ...]
    correlated: tuple[bool, ...]
    lower: np.ndarray
    start: np.ndarray
    _slices: tuple[tuple[np.ndarray, np.ndarray], ...] = field(repr=False)

    @classmethod
    def for_design(cls, design: Design) -> ThetaMap:
        """The parameter layout of a design's random terms."""
        slices, lower, start = [], [], []
        for term in design.terms:
            k = term.k
            if term.term.correlated:
                rows, cols = np.tril_indices(k)
            else:
                rows = cols = np.arange(k)
            slices.append((rows, cols))
            lower.extend(0.0 if r == c else -np.inf for r, c in zip(rows, cols))
            start.extend(1.0 if r == c else 0.0 for r, c in zip(rows, cols))
        return cls(tuple(t.k for t in design.terms), tuple(t.term.correlated for t in design.terms),
                   np.array(lower), np.array(start), tuple(slices))

    @property
    def size(self) -> int:
        """Number of parameters."""
        return len(self.lower)

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """``Lambda_t`` for every term."""
        out, pos = [], 0
        for k, (rows, cols) in zip(self.ks, self._slices):
            lam = np.zeros((k, k))
            lam[rows, cols] = theta[pos: pos + len(rows)]
            out.append(lam)
            pos += len(rows)
        return out

    def theta(self, lambdas: Sequence[np.ndarray]) -> np.ndarray:
        """Inverse of :meth:`lambdas`."""
        return np.concatenate([lam[rows, cols] for lam, (rows, cols) in zip(lambdas, self._slices)])

    def diagonal(self) -> np.ndarray:
        """Mask of the diagonal elements (those bounded by zero)."""
        return np.isfinite(self.lower)

    def terms_of(self) -> np.ndarray:
        """Term index of every parameter."""
        return np.concatenate([np.full(len(r), i) for i, (r, _) in enumerate(self._slices)])


@dataclass(frozen=True)
class OptSummary:
    """One record of the optimisation: settings, outcome and history.

    Attributes
    ----------
    method : str
        ``"REML"`` or ``"ML"``.
    optimizer : str
        Name of the algorithm.
    theta_start, theta : numpy.ndarray
        Initial and final relative factors.
    criterion : float
        Final ``-2 log L`` (profiled).
    converged : bool
        Whether the convergence criterion was met.
    iterations, evaluations : int
        Optimiser iterations and criterion evaluations (factorisations).
    gradient_norm : float
        Max-norm of the projected gradient at the end.
    history : tuple of float
        Criterion after each iteration.
    boundary : tuple of str
        Terms with a variance (or a correlation) on the boundary.
    message : str
        The optimiser's own message.
    seconds : float
        Wall time.
    """

    method: str
    optimizer: str
    theta_start: np.ndarray
    theta: np.ndarray
    criterion: float
    converged: bool
    iterations: int
    evaluations: int
    gradient_norm: float
    history: tuple[float, ...]
    boundary: tuple[str, ...]
    message: str
    seconds: float


def profiled_criterion(cp: CrossProducts, tmap: ThetaMap, theta: np.ndarray, reml: bool,
                       backend: str = "auto") -> tuple[float, float]:
    """``-2 log L`` profiled over ``beta`` and ``sigma_e^2``, and the profiled ``sigma_e^2``.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products.
    tmap : ThetaMap
        Parameter layout.
    theta : numpy.ndarray
        Relative-factor parameters.
    reml : bool
        REML (True) or ML.
    backend : str
        Factorisation back end.
    """
    lambdas = tmap.lambdas(theta)
    sol = solve_mme(cp, lambdas, backend)
    n, p = cp.n, cp.p
    dof = n - p if reml else n
    s2 = sol.pwrss / dof
    if not s2 > 0:
        raise EstimationError("the model fits the data exactly (zero residual sum of squares)")
    if reml:
        logdet = sol.logdet_C
    else:
        logdet = sol.random_block_factor().logdet() if sol.b.size else 0.0
    value = dof * (1.0 + np.log(2 * np.pi * s2)) + logdet + sol.logdet_K - cp.log_w
    return float(value), float(s2)


def _snap(f, theta: np.ndarray, tmap: ThetaMap, best: float) -> tuple[np.ndarray, float]:
    """Set tiny diagonal elements (and their rows) to zero if the criterion stays as good."""
    diag = tmap.diagonal()
    scale = max(1.0, np.abs(theta[diag]).max()) if diag.any() else 1.0
    for i in np.nonzero(diag & (np.abs(theta) < SNAP_TOL * scale) & (theta != 0))[0]:
        trial = theta.copy()
        trial[i] = 0.0
        value = f(trial)
        if value <= best + SNAP_FTOL * max(1.0, abs(best)):
            theta, best = trial, min(best, value)
    return theta, best


@contextmanager
def _progress_log(verbose: bool):
    """Send the ``mixedblup`` iteration log to stderr for the duration when ``verbose``."""
    if not verbose or logger.handlers or logging.getLogger("mixedblup").handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def estimate_variances(cp: CrossProducts, design: Design, *, method: str = "REML",
                       backend: str = "auto", start: np.ndarray | None = None,
                       term_names: Sequence[str] | None = None, verbose: bool = False,
                       max_evaluations: int = 2000,
                       ) -> tuple[list[np.ndarray], float, OptSummary]:
    """Maximise the REML or ML likelihood over the variance components.

    The optimiser is COBYQA (a derivative-free trust-region method with quadratic
    models and bounds, the successor of Powell's BOBYQA that lme4 uses), on the
    profiled criterion; each evaluation is one factorisation.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products.
    design : Design
        The model's design (term layout).
    method : {"REML", "ML"}
        Criterion.
    backend : str
        Factorisation back end.
    start : numpy.ndarray, optional
        Starting ``theta`` (default: identity relative factors).
    term_names : sequence of str, optional
        Names used in warnings (default: the design's term names).
    verbose : bool
        Log every evaluation (criterion, parameters, time) to stderr through ``logging``.
    max_evaluations : int
        Budget of criterion evaluations.

    Returns
    -------
    (list of numpy.ndarray, float, OptSummary)
        ``Sigma_t`` per term, ``sigma_e^2`` and the optimiser record.
    """
    reml = method == "REML"
    tmap = ThetaMap.for_design(design)
    theta0 = tmap.start.copy() if start is None else np.asarray(start, dtype=float)
    if theta0.shape != tmap.start.shape:
        raise ValueError(f"start must have {tmap.size} elements (relative factors); got {theta0.shape}")
    names = list(term_names or [t.name for t in design.terms])
    history: list[float] = []
    t0 = time.perf_counter()
    last = [t0]

    def f(theta: np.ndarray) -> float:
        try:
            value = profiled_criterion(cp, tmap, theta, reml, backend)[0]
        except EstimationError:
            value = np.inf
        history.append(value)
        now = time.perf_counter()
        logger.info("%s evaluation %d: -2logL = %.10g at theta = %s (%.3f s)", method, len(history), value,
                    np.array2string(np.asarray(theta), precision=5), now - last[0])
        last[0] = now
        return value

    with _progress_log(verbose):
        f0 = f(theta0)
        if not np.isfinite(f0):
            # E8: one rescaled retry before giving up
            theta0 = theta0 * 0.1
            f0 = f(theta0)
        if not np.isfinite(f0):
            raise EstimationError(
                "the criterion cannot be evaluated at the starting values; the model may not be "
                "supported by the data or may be poorly scaled (try rescaling the response)"
            )
        finite_big = 10.0 * abs(f0) + 1e6  # a finite penalty keeps the quadratic models sane (E9)

        def g(theta: np.ndarray) -> float:
            value = f(theta)
            return value if np.isfinite(value) else finite_big

        bounds = optimize.Bounds(tmap.lower, np.full(tmap.size, np.inf))
        out = optimize.minimize(g, theta0, method="COBYQA", bounds=bounds,
                                options={"maxfev": max_evaluations, "final_tr_radius": 1e-9,
                                         "f_target": -np.inf})
        theta, best = np.asarray(out.x, dtype=float), float(out.fun)
        theta, best = _snap(g, theta, tmap, best)
        # E2: a variance stuck at zero is retried from the interior; keep the better fit
        zero = tmap.diagonal() & (theta == 0)
        if zero.any():
            retry_start = np.where(zero, 1.0, theta)
            retry = optimize.minimize(g, retry_start, method="COBYQA", bounds=bounds,
                                      options={"maxfev": max_evaluations, "final_tr_radius": 1e-9,
                                               "f_target": -np.inf})
            if retry.fun < best - SNAP_FTOL * max(1.0, abs(best)):
                theta, best = _snap(g, np.asarray(retry.x, dtype=float), tmap, float(retry.fun))
        grad = _projected_gradient(g, theta, tmap)
    gnorm = float(np.abs(grad).max()) if grad.size else 0.0
    converged = bool(out.success) and gnorm < 1e-3 * max(1.0, abs(best)) ** 0.5
    term_of = tmap.terms_of()
    on_boundary = sorted({names[term_of[i]] for i in np.nonzero(tmap.diagonal() & (theta == 0))[0]})
    value, s2 = profiled_criterion(cp, tmap, theta, reml, backend)
    sigmas = [s2 * lam @ lam.T for lam in tmap.lambdas(theta)]
    for name in on_boundary:
        warnings.warn(
            f"boundary (singular) fit: a variance of term {name!r} is estimated as exactly zero",
            SingularFitWarning, stacklevel=3,
        )
    if not converged:
        warnings.warn(
            f"the optimiser did not converge ({out.message}); max |gradient| = {gnorm:.3g} after "
            f"{len(history)} evaluations", ConvergenceWarning, stacklevel=3,
        )
    summary = OptSummary(
        method=method, optimizer="COBYQA", theta_start=theta0, theta=theta,
        criterion=value, converged=converged, iterations=int(getattr(out, "nit", 0)),
        evaluations=len(history), gradient_norm=gnorm, history=tuple(history),
        boundary=tuple(on_boundary), message=str(out.message), seconds=time.perf_counter() - t0,
    )
    return sigmas, s2, summary


def _projected_gradient(f, theta: np.ndarray, tmap: ThetaMap, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient, with one-sided differences at the zero bound and
    components pointing out of the feasible region (at a bound) set to zero."""
    grad = np.zeros_like(theta)
    f0 = f(theta)
    for i in range(len(theta)):
        step = h * max(1.0, abs(theta[i]))
        up = theta.copy()
        up[i] += step
        if tmap.diagonal()[i] and theta[i] - step < 0:
            grad[i] = (f(up) - f0) / step
            if theta[i] == 0 and grad[i] > 0:
                grad[i] = 0.0
        else:
            down = theta.copy()
            down[i] -= step
            grad[i] = (f(up) - f(down)) / (2 * step)
    return grad


def vc_labels(design: Design) -> list[tuple[str, str, str]]:
    """``(group, term1, term2)`` of every variance component, residual last (the table's rows)."""
    labels: list[tuple[str, str, str]] = []
    for term in design.terms:
        cols = term.columns
        labels.extend((term.name, c, "") for c in cols)
        if term.term.correlated:
            labels.extend((term.name, cols[i], cols[j]) for i in range(len(cols)) for j in range(i + 1, len(cols)))
    labels.append(("Residual", "", ""))
    return labels


def _vc_vector(design: Design, sigmas: Sequence[np.ndarray], residual: float) -> np.ndarray:
    values: list[float] = []
    for term, sigma in zip(design.terms, sigmas):
        k = term.k
        values.extend(sigma[i, i] for i in range(k))
        if term.term.correlated:
            values.extend(sigma[i, j] for i in range(k) for j in range(i + 1, k))
    values.append(residual)
    return np.array(values)


def _vc_unpack(design: Design, vec: np.ndarray) -> tuple[list[np.ndarray], float]:
    sigmas, pos = [], 0
    for term in design.terms:
        k = term.k
        sigma = np.diag(vec[pos: pos + k]).astype(float)
        pos += k
        if term.term.correlated:
            for i in range(k):
                for j in range(i + 1, k):
                    sigma[i, j] = sigma[j, i] = vec[pos]
                    pos += 1
        sigmas.append(sigma)
    return sigmas, float(vec[pos])


def minus_two_loglik_at(cp: CrossProducts, design: Design, sigmas: Sequence[np.ndarray], residual: float,
                        reml: bool, backend: str = "auto") -> float:
    """``-2 log L`` (not profiled) at given variance components."""
    from .mme import minus_two_loglik, relative_factor

    lambdas = [relative_factor(s, residual) for s in sigmas]
    sol = solve_mme(cp, lambdas, backend)
    schur = None
    if not reml:
        c11 = sol.factor.inverse_columns(np.arange(cp.p), np.arange(cp.p))
        schur = -float(np.linalg.slogdet(c11)[1]) if cp.p else 0.0
    return minus_two_loglik(cp, sol, residual, reml, schur)


def variance_component_covariance(cp: CrossProducts, design: Design, sigmas: Sequence[np.ndarray],
                                  residual: float, reml: bool, backend: str = "auto",
                                  boundary: Sequence[str] = ()) -> np.ndarray:
    """Asymptotic covariance of the variance components: ``2 H^-1`` of ``-2 log L``.

    ``H`` is the observed information, the Hessian of ``-2 log L`` in the variance
    components (rows of :func:`vc_labels`), by central differences.  Components of
    terms on the boundary are left out (their rows and columns are NaN).
    """
    labels = vc_labels(design)
    x0 = _vc_vector(design, sigmas, residual)
    free = np.array([lab[0] not in boundary for lab in labels])
    idx = np.nonzero(free)[0]
    m = len(idx)
    # step: 2e-3 of the component, or of the geometric mean of the two variances for a
    # covariance (smaller steps let rounding in -2 log L dominate the second differences)
    h = np.empty_like(x0)
    for i, (group, t1, t2) in enumerate(labels):
        if t2 == "":
            h[i] = 2e-3 * abs(x0[i])
        else:
            vi = x0[labels.index((group, t1, ""))]
            vj = x0[labels.index((group, t2, ""))]
            h[i] = 2e-3 * np.sqrt(abs(vi * vj))
    h = np.where(h > 0, h, 1e-8)

    def f(x: np.ndarray) -> float:
        s, r = _vc_unpack(design, x)
        return minus_two_loglik_at(cp, design, s, r, reml, backend)

    f0 = f(x0)
    H = np.zeros((m, m))
    for a in range(m):
        i = idx[a]
        ei = np.zeros_like(x0)
        ei[i] = h[i]
        H[a, a] = (f(x0 + ei) - 2 * f0 + f(x0 - ei)) / h[i] ** 2
        for b in range(a + 1, m):
            j = idx[b]
            ej = np.zeros_like(x0)
            ej[j] = h[j]
            H[a, b] = H[b, a] = (f(x0 + ei + ej) - f(x0 + ei - ej) - f(x0 - ei + ej) + f(x0 - ei - ej)) / (
                4 * h[i] * h[j])
    cov = np.full((len(x0), len(x0)), np.nan)
    try:
        sub = 2.0 * np.linalg.inv(H)
        if np.all(np.diag(sub) > 0):
            cov[np.ix_(idx, idx)] = sub
    except np.linalg.LinAlgError:
        pass
    return cov
