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

:func:`fit_variance_components` extends this to components *held* at given values
(``fit(fixed_variances=...)``: ``sigma_e^2`` is then a parameter of the unprofiled
criterion, because a held absolute variance fixes the scale) and to one residual
variance per class (``fit(residual_groups=...)``: ``log(sigma^2_g / sigma^2)`` join the
parameters, the cross-products are recombined per evaluation by
:mod:`mixedblup.residual_groups`).  Levels that are fixed effects inside a random term
(unknown parent groups, ``BoundCovariance.n_fixed_levels``) count in ``p`` everywhere
(:func:`_criterion_logdet`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import optimize

from ._logging import progress_log
from .design import Design
from .errors import ConvergenceWarning, EstimationError, SingularFitWarning
from .factor import factorize
from .ai_reml import ai_reml_or_none
from .mme import (CrossProducts, Solution, fixed_level_equations, fixed_level_logdet, relative_factor,
                  solve_mme)

__all__ = ["OptSummary", "ThetaMap", "VarianceFit", "profiled_criterion", "estimate_variances", "vc_labels",
           "variance_labels", "fit_variance_components", "variance_component_covariance", "minus_two_loglik_at"]

logger = logging.getLogger("mixedblup.estimate")

#: Relative size below which a diagonal theta element is snapped to zero.
SNAP_TOL = 1e-4
#: Criterion increase tolerated by snapping.
SNAP_FTOL = 1e-6
#: Smallest relative pivot of the equations at the estimates for a fit to count as converged:
#: below it fewer than about five significant digits survive in the criterion (E7).
PRECISION_PIVOT = 1e-11
#: Lower bound of the relative SD of a term with fixed levels (genetic groups as fixed).
FIXED_LEVEL_MIN_THETA = 1e-4


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
    parameters : tuple of str
        Names of the optimised parameters when they are not ``theta`` alone (held
        components or residual classes: ``theta[i]``, ``log(rho[class])``,
        ``log(sigma2)``); empty otherwise.  ``theta_start`` is then in these
        parameters and ``theta`` the relative factors of every term at the estimates.
    held : tuple of str
        Components held at given values (``variances=`` given in part).
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
    parameters: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


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
    value, s2, _ = _profiled_solution(cp, tmap, theta, reml, backend)
    return value, s2


def _profiled_solution(cp: CrossProducts, tmap: ThetaMap, theta: np.ndarray, reml: bool,
                       backend: str) -> tuple[float, float, Solution]:
    """:func:`profiled_criterion` and the solved equations it came from."""
    lambdas = tmap.lambdas(theta)
    sol = solve_mme(cp, lambdas, backend)
    dof, logdet = _criterion_logdet(cp, sol, lambdas, reml)
    s2 = sol.pwrss / dof
    if not s2 > 0:
        raise EstimationError("the model fits the data exactly (zero residual sum of squares)")
    value = dof * (1.0 + np.log(2 * np.pi * s2)) + logdet + sol.logdet_K - cp.log_w
    return float(value), float(s2), sol


def _criterion_logdet(cp: CrossProducts, sol: Solution, lambdas: Sequence[np.ndarray],
                      reml: bool) -> tuple[int, float]:
    """Degrees of freedom and log-determinant term of ``-2 log L``.

    REML: ``n - p`` and ``log|C|``; ML: ``n`` and ``log|C_zz|``.  Levels of a term that
    are fixed effects (unknown parent groups fitted as fixed,
    ``BoundCovariance.n_fixed_levels``) count in ``p``; for REML ``log|C|`` loses the
    scaling of their equations by ``Lambda_t`` (``sum_t g_t log|Lambda_t Lambda_t'|``), which
    makes it the ``log|C|`` of the model with the groups as explicit fixed-effect
    columns ``Z Q``; for ML they leave ``C_zz``.
    """
    fixed = fixed_level_equations(cp)
    if reml:
        dof = cp.n - cp.p - len(fixed)
        logdet = sol.logdet_C - fixed_level_logdet(cp, lambdas) if len(fixed) else sol.logdet_C
    elif not sol.b.size:
        dof, logdet = cp.n, 0.0
    elif len(fixed):
        keep = np.setdiff1d(np.arange(cp.p, sol.factor.n), fixed)
        C = sp.csc_matrix(sol.coefficient_matrix)
        dof, logdet = cp.n, factorize(C[keep][:, keep], "auto").logdet()
    else:
        dof, logdet = cp.n, sol.random_block_factor().logdet()
    if dof <= 0:
        raise EstimationError(f"no residual degrees of freedom are left ({cp.n} observations)")
    return dof, float(logdet)


def _theta_map(cp: CrossProducts, design: Design) -> ThetaMap:
    """The design's :class:`ThetaMap`; diagonal elements of terms with fixed levels (genetic
    groups as fixed effects) are bounded by :data:`FIXED_LEVEL_MIN_THETA` instead of zero:
    at ``Lambda = 0`` their equations are singular (the groups lose their scale)."""
    tmap = ThetaMap.for_design(design)
    bounded = [i for i, cov in enumerate(cp.covariances) if getattr(cov, "n_fixed_levels", 0)]
    if not bounded:
        return tmap
    lower = tmap.lower.copy()
    mask = np.isin(tmap.terms_of(), bounded) & np.isfinite(lower)
    lower[mask] = FIXED_LEVEL_MIN_THETA
    start = np.where(mask, np.maximum(tmap.start, FIXED_LEVEL_MIN_THETA), tmap.start)
    return dataclasses.replace(tmap, lower=lower, start=start)


def _at_lower(lower: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Diagonal elements at their lower bound (a zero variance, or the fixed-level bound)."""
    finite = np.isfinite(lower)
    return finite & (x <= np.where(finite, lower, 0.0) * (1.0 + 1e-9))


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



def _warn_outcome(on_boundary: Sequence[str], converged: bool, message: str, gnorm: float,
                  evaluations: int) -> None:
    """The warnings of a fit: a SingularFitWarning per boundary term, a ConvergenceWarning."""
    for name in on_boundary:
        warnings.warn(
            f"boundary (singular) fit: a variance of term {name!r} is estimated as exactly zero; "
            "ratios involving it (heritability) are 0 on the boundary: use "
            "heritability(method='profile') for an interval, or simplify the model",
            SingularFitWarning, stacklevel=4,
        )
    if not converged:
        warnings.warn(
            f"the optimiser did not converge ({message}); max |gradient| = {gnorm:.3g} after "
            f"{evaluations} evaluations; the estimates are returned but may not be the optimum "
            "(result.optimizer): try other start= values, rescale the response or simplify the "
            "random-effect structure", ConvergenceWarning, stacklevel=4,
        )

def estimate_variances(cp: CrossProducts, design: Design, *, method: str = "REML",
                       backend: str = "auto", start: np.ndarray | None = None,
                       term_names: Sequence[str] | None = None, verbose: bool = False,
                       max_evaluations: int = 2000,
                       ) -> tuple[list[np.ndarray], float, OptSummary]:
    """Maximise the REML or ML likelihood over the variance components.

    REML uses average-information Newton steps with analytic gradients
    (:func:`mixedblup.ai_reml.ai_reml`: a handful of factorisations plus selected
    inversions) whenever the back end supports them (:func:`mixedblup.ai_reml.supported`).
    Otherwise (ML, fixed genetic groups, CHOLMOD), and from AI-REML's best point when it
    stops without converging, the optimiser is COBYQA (a derivative-free trust-region
    method with quadratic models and bounds, the successor of Powell's BOBYQA that lme4
    uses) on the profiled criterion; each evaluation is one factorisation.  A fit whose
    equations at the estimates have a relative pivot below :data:`PRECISION_PIVOT` is
    not reported as converged.

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
    tmap = _theta_map(cp, design)
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

    with progress_log(logger, verbose):
        # AI-REML (analytic gradient, average information) where supported; COBYQA
        # otherwise, or from AI-REML's best point when it stops without converging
        # (not with fixed levels -- genetic groups as fixed: AI-REML's criterion does not count
        # them).  It runs first so that its first factorisation is also f(theta0).
        ai = None if len(fixed_level_equations(cp)) else ai_reml_or_none(
            cp, tmap, theta0, reml=reml, backend=backend, record=lambda _theta, value: history.append(value),
            max_evaluations=max_evaluations)
        f0 = history[0] if ai is not None and history and np.isfinite(history[0]) else f(theta0)
        if not np.isfinite(f0):
            # E8: one rescaled retry before giving up
            theta0 = theta0 * 0.1
            f0 = f(theta0)
        if not np.isfinite(f0):
            if len(fixed_level_equations(cp)):
                raise EstimationError(
                    "the mixed model equations are singular with the genetic groups as fixed effects: "
                    "they are confounded with the fixed part (when every animal's group contributions "
                    "sum to 1, any fixed part spanning the constant column -- an intercept, or all "
                    "levels of a factor -- is confounded with the groups' sum); set a reference group "
                    "(GroupedPedigree(ped, reference=code)), or fit the groups as random "
                    "(GroupedPedigree(ped, groups='random'))"
                )
            raise EstimationError(
                "the criterion cannot be evaluated at the starting values; the model may not be "
                "supported by the data or may be poorly scaled (try rescaling the response)"
            )
        finite_big = 10.0 * abs(f0) + 1e6  # a finite penalty keeps the quadratic models sane (E9)

        def g(theta: np.ndarray) -> float:
            value = f(theta)
            return value if np.isfinite(value) else finite_big

        bounds = optimize.Bounds(tmap.lower, np.full(tmap.size, np.inf))
        out = ai if ai is not None and ai.success and _small_gradient(ai.gradient, ai.value) else optimize.minimize(
            g, theta0 if ai is None or not np.isfinite(ai.value) else ai.theta, method="COBYQA", bounds=bounds,
            options={"maxfev": max(1, max_evaluations - len(history)), "final_tr_radius": 1e-9,
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
        grad = (out.gradient if out is ai and np.array_equal(theta, ai.theta)
                else _projected_gradient(g, theta, tmap))
    gnorm = float(np.abs(grad).max()) if grad.size else 0.0
    converged = bool(out.success) and _small_gradient(grad, best)
    term_of = tmap.terms_of()
    on_boundary = sorted({names[term_of[i]] for i in np.nonzero(_at_lower(tmap.lower, theta))[0]})
    value, s2, sol = _profiled_solution(cp, tmap, theta, reml, backend)
    sigmas = [s2 * lam @ lam.T for lam in tmap.lambdas(theta)]
    message = str(out.message)
    pivot = float(getattr(sol.factor, "min_pivot", np.nan))
    if converged and pivot < PRECISION_PIVOT:
        # E7: at the estimates the equations keep fewer than ~5 significant digits, so the
        # criterion is rounding noise there and its "optimum" is not a maximum of the likelihood
        converged = False
        message = (f"the mixed model equations at the estimates are singular to within rounding "
                   f"(smallest relative pivot {pivot:.2g}), so the criterion cannot locate the optimum")
    _warn_outcome(on_boundary, converged, message, gnorm, len(history))
    summary = OptSummary(
        method=method, optimizer="AI-REML" if out is ai else "COBYQA", theta_start=theta0, theta=theta,
        criterion=value, converged=converged, iterations=int(getattr(out, "nit", 0)),
        evaluations=len(history), gradient_norm=gnorm, history=tuple(history),
        boundary=tuple(on_boundary), message=message, seconds=time.perf_counter() - t0,
    )
    return sigmas, s2, summary


def _small_gradient(grad: np.ndarray, value: float) -> bool:
    """The convergence test on the projected gradient: ``max |g| < 1e-3 sqrt(max(1, |value|))``."""
    return not grad.size or float(np.abs(grad).max()) < 1e-3 * max(1.0, abs(value)) ** 0.5


def _projected_gradient(f, theta: np.ndarray, tmap: ThetaMap, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient, with one-sided differences at the zero bound and
    components pointing out of the feasible region (at a bound) set to zero."""
    grad = np.zeros_like(theta)
    f0 = f(theta)
    for i in range(len(theta)):
        step = h * max(1.0, abs(theta[i]))
        up = theta.copy()
        up[i] += step
        low = tmap.lower[i] if tmap.diagonal()[i] else -np.inf
        if tmap.diagonal()[i] and theta[i] - step < low:
            grad[i] = (f(up) - f0) / step
            if theta[i] <= low * (1.0 + 1e-9) and grad[i] > 0:
                grad[i] = 0.0
        else:
            down = theta.copy()
            down[i] -= step
            grad[i] = (f(up) - f(down)) / (2 * step)
    return grad


def _hessian_warning(H: np.ndarray, labels: Sequence[Any]) -> None:
    """E6: the observed information is not positive definite; name the parameters involved."""
    names = [lab if isinstance(lab, str) else ("/".join(x for x in lab if x) or "?") for lab in labels]
    involved: list[str] = []
    if np.isfinite(H).all() and H.size:
        vals, vecs = np.linalg.eigh((H + H.T) / 2.0)
        for k in np.flatnonzero(vals <= 1e-10 * max(np.abs(vals).max(), 1e-300)):
            v = np.abs(vecs[:, k])
            involved.extend(names[j] for j in np.flatnonzero(v > 0.2 * v.max()) if names[j] not in involved)
    else:
        involved = [nm for nm, row in zip(names, H) if not np.isfinite(row).all()] or names
    warnings.warn(
        "the Hessian of -2 log L in the variance components is not positive definite at the "
        f"estimates (parameters involved: {', '.join(involved) or ', '.join(names)}); their standard "
        "errors are reported as NaN: the model may be nearly unidentifiable (too few levels, or "
        "components confounded); use profile intervals (confint(method='profile')) or simplify the model",
        ConvergenceWarning, stacklevel=4,
    )


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

    One implementation with Satterthwaite's df: the Hessian of ``-2 log L`` in the
    variance parameters ``(theta, sigma)`` (:func:`mixedblup.inference.varpar_info`),
    carried to the components (rows of :func:`vc_labels`) by the delta method
    (:func:`mixedblup.inference.variance_component_vcov`).  Components of terms on the
    boundary are left out (their rows and columns are NaN).
    """
    from .inference import theta_from_sigmas, variance_component_vcov, varpar_info

    theta = theta_from_sigmas(design, sigmas, residual)
    info = varpar_info(cp, design, theta, residual, reml, backend)
    return variance_component_vcov(design, info, boundary)


# --------------------------------------------------------------------------------------
# Held components and heterogeneous residual variances


@dataclass(frozen=True)
class VarianceFit:
    """Variance components of a model with held components or residual classes.

    Attributes
    ----------
    sigmas : list of numpy.ndarray
        ``Sigma_t`` per term (held ones as given).
    residual : float
        ``sigma^2`` of the reference residual class: the scale of the equations.
    residual_variances : dict or None
        Residual variance per class (``None`` without ``residual_groups``).
    cp : CrossProducts
        Cross-products at the estimates (weights ``w_i / rho_{g(i)}`` with classes).
    optimizer : OptSummary or None
        The estimation record (``None`` when every component was given).
    vc_covariance : numpy.ndarray or None
        Asymptotic covariance of the components (rows of :func:`variance_labels`);
        held components have NaN rows.
    n_cov_params : int
        Covariance parameters counted by AIC/BIC (the estimated ones; all of them when
        every component was given).
    known : bool
        Whether every component was given.
    held : tuple of str
        Names of the held components (``"Residual"`` or ``"Residual:<class>"`` for residuals).
    varpar : VarParInfo or None
        The information behind ``vc_covariance`` (Hessian of ``-2 log L`` in the free
        components and the derivatives of ``var(beta_hat)`` in them), for Satterthwaite's
        df (:func:`_component_info`); ``None`` when nothing was estimated.
    """

    sigmas: list[np.ndarray]
    residual: float
    residual_variances: dict[str, float] | None
    cp: CrossProducts
    optimizer: OptSummary | None
    vc_covariance: np.ndarray | None
    n_cov_params: int
    known: bool
    held: tuple[str, ...]
    varpar: Any = None


def variance_labels(design: Design, residual_levels: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """:func:`vc_labels` with one residual row per class: ``("Residual", class, "")``."""
    labels = vc_labels(design)
    if residual_levels is None:
        return labels
    return labels[:-1] + [("Residual", str(level), "") for level in residual_levels]


class _FreeMap:
    """Bounds and diagonal mask of the optimised vector (what ``_snap`` and the gradient need)."""

    def __init__(self, lower: np.ndarray, diagonal: np.ndarray) -> None:
        self.lower = lower
        self._diagonal = diagonal

    def diagonal(self) -> np.ndarray:
        return self._diagonal


class _Criterion:
    """``-2 log L`` of a model with held components and/or residual classes.

    The optimised vector is ``x = (theta_free, eta, tau)``: the relative factors of
    the estimated terms, ``eta_g = log(sigma^2_g / sigma^2)`` of the estimated
    non-reference residual classes, and ``tau = log sigma^2`` when ``sigma^2`` (the
    reference class's residual variance) is estimated but cannot be profiled out
    (some component is held at an absolute value).  With nothing held, ``sigma^2``
    is profiled out as in :func:`profiled_criterion`.
    """

    def __init__(self, cp: CrossProducts, design: Design, held, grouped, reml: bool, backend: str) -> None:
        self.cp, self.design, self.held, self.grouped = cp, design, held, grouped
        self.reml, self.backend = reml, backend
        self.tmap = _theta_map(cp, design)
        term_of = self.tmap.terms_of()
        self.free_theta = ~np.isin(term_of, np.array(sorted(held.terms), dtype=int))
        self.levels = tuple(held.residual_levels)
        free_levels = [g for g, lab in enumerate(self.levels) if lab not in held.residual]
        self.ref = free_levels[0] if free_levels else 0
        self.profiled = held.empty
        self.free_groups = [g for g in free_levels if g != self.ref]
        self.has_tau = (not self.profiled) and (self.levels[self.ref] not in held.residual)
        self.m_theta = int(self.free_theta.sum())
        self.size = self.m_theta + len(self.free_groups) + int(self.has_tau)

    # ---------------------------------------------------------------- layout
    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float | None]:
        m, e = self.m_theta, len(self.free_groups)
        return x[:m], x[m: m + e], (float(x[m + e]) if self.has_tau else None)

    def names(self) -> list[str]:
        out = [f"theta[{i}]" for i in np.nonzero(self.free_theta)[0]]
        out += [f"log(rho[{self.levels[g]}])" for g in self.free_groups]
        return out + (["log(sigma2)"] if self.has_tau else [])

    def free_map(self, tau0: float) -> _FreeMap:
        lower = np.concatenate([self.tmap.lower[self.free_theta], np.full(len(self.free_groups), -25.0),
                                [tau0 - 40.0] if self.has_tau else []])
        diag = np.concatenate([self.tmap.diagonal()[self.free_theta], np.zeros(self.size - self.m_theta, bool)])
        return _FreeMap(lower, diag)

    def upper(self, tau0: float) -> np.ndarray:
        return np.concatenate([np.full(self.m_theta, np.inf), np.full(len(self.free_groups), 25.0),
                               [tau0 + 40.0] if self.has_tau else []])

    def held_sigma2(self) -> float | None:
        lab = self.levels[self.ref]
        return self.held.residual.get(lab)

    # ------------------------------------------------------------- evaluation
    def _cp_at(self, rho: np.ndarray) -> CrossProducts:
        return self.cp if self.grouped is None else self.grouped.at(rho)

    def solve(self, lambdas: Sequence[np.ndarray], rho: np.ndarray) -> tuple[CrossProducts, Solution, int, float]:
        cp = self._cp_at(rho)
        sol = solve_mme(cp, lambdas, self.backend)
        if self.grouped is not None:
            self.grouped.remember(cp)
        dof, logdet = _criterion_logdet(cp, sol, lambdas, self.reml)
        return cp, sol, dof, logdet

    def parts(self, x: np.ndarray, s2_given: float | None = None) -> dict:
        """Evaluate at ``x`` (with ``sigma^2 = s2_given`` if given: the start's fixed point)."""
        th, eta, tau = self.split(np.asarray(x, dtype=float))
        rho = np.ones(len(self.levels))
        rho[self.free_groups] = np.exp(eta)
        theta = self.tmap.start.copy()
        theta[self.free_theta] = th
        lambdas = self.tmap.lambdas(theta)
        if self.profiled and s2_given is None:
            cp, sol, dof, logdet = self.solve(lambdas, rho)
            s2 = sol.pwrss / dof
            if not s2 > 0:
                raise EstimationError("the model fits the data exactly (zero residual sum of squares)")
            value = dof * (1.0 + np.log(2 * np.pi * s2)) + logdet + sol.logdet_K - cp.log_w
        else:
            if s2_given is not None:
                s2 = s2_given
            else:
                s2 = float(np.exp(tau)) if self.has_tau else float(self.held_sigma2())
            for g, lab in enumerate(self.levels):
                if lab in self.held.residual:
                    rho[g] = self.held.residual[lab] / s2
            for i, sigma in self.held.terms.items():
                lambdas[i] = relative_factor(sigma, s2)
            cp, sol, dof, logdet = self.solve(lambdas, rho)
            value = dof * np.log(2 * np.pi * s2) + logdet + sol.logdet_K - cp.log_w + sol.pwrss / s2
        return {"value": float(value), "s2": float(s2), "rho": rho, "lambdas": lambdas, "cp": cp, "sol": sol,
                "dof": dof}

    def at_components(self, sigmas: Sequence[np.ndarray], rvars: np.ndarray) -> float:
        """Unprofiled ``-2 log L`` at absolute components (residual variance per class)."""
        return self.components_parts(sigmas, rvars, want_vcov=False)[0]

    def components_parts(self, sigmas: Sequence[np.ndarray], rvars: np.ndarray,
                         want_vcov: bool = True) -> tuple[float, np.ndarray | None]:
        """Unprofiled ``-2 log L`` and ``var(beta_hat)`` at absolute components.

        Parameters
        ----------
        sigmas : sequence of numpy.ndarray
            ``Sigma_t`` of every term.
        rvars : numpy.ndarray
            Residual variance of every class (one value without classes).
        want_vcov : bool
            Also return ``var(beta_hat) = sigma^2 C^-1[:p, :p]`` (``p`` more solves).

        Returns
        -------
        (float, numpy.ndarray or None)
            ``inf`` and ``None`` when a residual variance is not positive.
        """
        rvars = np.asarray(rvars, dtype=float)
        if not np.all(rvars > 0):
            return np.inf, None
        s2 = float(rvars[self.ref])
        rho = rvars / s2
        lambdas = [relative_factor(s, s2) for s in sigmas]
        cp, sol, dof, logdet = self.solve(lambdas, rho)
        value = float(dof * np.log(2 * np.pi * s2) + logdet + sol.logdet_K - cp.log_w + sol.pwrss / s2)
        if not want_vcov:
            return value, None
        return value, sol.factor.inverse_block(np.arange(cp.p)) * s2


def _start_s2(crit: _Criterion, x0: np.ndarray, s2: float, rounds: int = 6) -> float:
    """Fixed point ``sigma^2 = pwrss / dof`` at the starting relative factors (held parts scaled)."""
    for _ in range(rounds):
        try:
            parts = crit.parts(x0, s2_given=s2)
        except EstimationError:
            break
        new = parts["sol"].pwrss / parts["dof"]
        if not new > 0:
            break
        if abs(new - s2) <= 1e-3 * s2:
            s2 = new
            break
        s2 = new
    return float(s2)


def _held_names(design: Design, held) -> tuple[str, ...]:
    names = [design.terms[i].name for i in sorted(held.terms)]
    for lab in held.residual_levels:
        if lab in held.residual:
            names.append("Residual" if lab == "" else f"Residual:{lab}")
    return tuple(names)


def _count_params(design: Design) -> list[int]:
    return [t.k * (t.k + 1) // 2 if t.term.correlated else t.k for t in design.terms]


def fit_variance_components(cp: CrossProducts, design: Design, held, *, grouped=None, method: str = "REML",
                            backend: str = "auto", start: tuple[list[np.ndarray], np.ndarray] | None = None,
                            verbose: bool = False, max_evaluations: int = 2000,
                            standard_errors: bool = True) -> VarianceFit:
    """Variance components when some are held at given values and/or residuals differ by class.

    Components in ``held`` (:class:`~mixedblup.variances.HeldVariances`) keep their
    values; the others are estimated by REML or ML.  Holding any component at an
    absolute value fixes the scale, so ``sigma^2`` is then a parameter of the
    (unprofiled) criterion instead of being profiled out; the estimated terms keep
    their relative-factor parameters (``Sigma_t = sigma^2 Lambda_t Lambda_t'``), the
    held ones enter as ``Lambda_t = chol(Sigma_t / sigma^2)``.  Residual classes add
    ``log(sigma^2_g / sigma^2)`` for every estimated class but the reference one (the
    first estimated class); their cross-products are recombined per evaluation.

    Parameters
    ----------
    cp : CrossProducts
        The model's cross-products (every residual ratio 1).
    design : Design
        The model's design.
    held : HeldVariances
        What is held (possibly nothing).
    grouped : ResidualGroupCrossProducts, optional
        Per-class cross-products when the design has ``residual_groups``.
    method : {"REML", "ML"}
        Criterion.
    backend : str
        Factorisation back end.
    start : (list of numpy.ndarray, numpy.ndarray), optional
        Starting ``Sigma_t`` per term and residual variance per class (only the estimated
        ones are used).
    verbose : bool
        Log every evaluation.
    max_evaluations : int
        Budget of criterion evaluations.
    standard_errors : bool
        Compute the asymptotic covariance of the estimated components.

    Returns
    -------
    VarianceFit
    """
    reml = method == "REML"
    crit = _Criterion(cp, design, held, grouped, reml, backend)
    levels = crit.levels
    with_classes = grouped is not None
    held_names = _held_names(design, held)
    n_params = _count_params(design)
    if held.complete:
        sigmas = [held.terms[i] for i in range(len(design.terms))]
        rvars = np.array([held.residual[lab] for lab in levels])
        s2 = float(rvars[crit.ref])
        cp_eff = crit._cp_at(rvars / s2)
        return VarianceFit(sigmas, s2, dict(zip(levels, rvars.tolist())) if with_classes else None, cp_eff,
                           None, None, sum(n_params) + len(levels), True, held_names)

    # starting values
    theta0 = crit.tmap.start.copy()
    s2_start = None
    eta0 = np.zeros(len(crit.free_groups))
    if start is not None:
        s_sig, s_res = start
        s_res = np.asarray(s_res, dtype=float)
        ref_start = float(s_res[crit.ref])
        from .inference import theta_from_sigmas

        theta0 = np.asarray(theta_from_sigmas(design, s_sig, ref_start), dtype=float)
        eta0 = np.log(s_res[crit.free_groups] / ref_start)
        s2_start = ref_start
    x0 = np.concatenate([theta0[crit.free_theta], eta0])
    tau0 = 0.0
    if crit.has_tau:
        s2_0 = s2_start if s2_start is not None else max(float(np.var(design.y)) / 2.0, 1e-12)
        s2_0 = _start_s2(crit, np.concatenate([x0, [0.0]]), s2_0)
        tau0 = float(np.log(s2_0))
        x0 = np.concatenate([x0, [tau0]])
    fmap = crit.free_map(tau0)
    upper = crit.upper(tau0)

    history: list[float] = []
    t0 = time.perf_counter()
    last = [t0]

    def f(x: np.ndarray) -> float:
        try:
            value = crit.parts(x)["value"]
        except EstimationError:
            value = np.inf
        if not np.isfinite(value):
            value = np.inf
        history.append(value)
        now = time.perf_counter()
        logger.info("%s evaluation %d: -2logL = %.10g at x = %s (%.3f s)", method, len(history), value,
                    np.array2string(np.asarray(x), precision=5), now - last[0])
        last[0] = now
        return value

    term_of = crit.tmap.terms_of()[crit.free_theta]
    names = [t.name for t in design.terms]
    with progress_log(logger, verbose):
        f0 = f(x0)
        if not np.isfinite(f0) and crit.m_theta:
            x0 = x0.copy()
            x0[:crit.m_theta] *= 0.1
            f0 = f(x0)
        if not np.isfinite(f0):
            raise EstimationError(
                "the criterion cannot be evaluated at the starting values; the model may not be "
                "supported by the data, the held variances may not fit it, or it may be poorly scaled"
            )
        finite_big = 10.0 * abs(f0) + 1e6

        def g(x: np.ndarray) -> float:
            value = f(x)
            return value if np.isfinite(value) else finite_big

        if crit.size:
            bounds = optimize.Bounds(fmap.lower, upper)
            opts = {"maxfev": max_evaluations, "final_tr_radius": 1e-9, "f_target": -np.inf}
            out = optimize.minimize(g, np.clip(x0, fmap.lower, upper), method="COBYQA", bounds=bounds,
                                    options=opts)
            x, best = np.asarray(out.x, dtype=float), float(out.fun)
            x, best = _snap(g, x, fmap, best)
            zero = fmap.diagonal() & (x == 0)
            if zero.any():
                retry = optimize.minimize(g, np.where(zero, 1.0, x), method="COBYQA", bounds=bounds, options=opts)
                if retry.fun < best - SNAP_FTOL * max(1.0, abs(best)):
                    x, best = _snap(g, np.asarray(retry.x, dtype=float), fmap, float(retry.fun))
            grad = _projected_gradient(g, x, fmap)
            success, message, nit = bool(out.success), str(out.message), int(getattr(out, "nit", 0))
        else:
            x, best, grad, success, message, nit = x0, f0, np.zeros(0), True, "nothing to estimate", 0
    gnorm = float(np.abs(grad).max()) if grad.size else 0.0
    converged = success and gnorm < 1e-3 * max(1.0, abs(best)) ** 0.5
    on_boundary = sorted({names[term_of[i]] for i in np.nonzero(_at_lower(fmap.lower, x)[:crit.m_theta])[0]})
    final = crit.parts(x)
    s2, rho, lambdas = final["s2"], final["rho"], final["lambdas"]
    sigmas = [held.terms[i] if i in held.terms else s2 * lam @ lam.T for i, lam in enumerate(lambdas)]
    rvars = rho * s2
    for lab_i, lab in enumerate(levels):
        if lab in held.residual:
            rvars[lab_i] = held.residual[lab]
    _warn_outcome(on_boundary, converged, str(message), gnorm, len(history))
    from .inference import theta_from_sigmas

    theta_full = np.asarray(theta_from_sigmas(design, sigmas, s2), dtype=float)
    summary = OptSummary(
        method=method, optimizer="COBYQA", theta_start=x0, theta=theta_full,
        criterion=final["value"], converged=converged, iterations=nit,
        evaluations=len(history), gradient_norm=gnorm, history=tuple(history),
        boundary=tuple(on_boundary), message=message, seconds=time.perf_counter() - t0,
        parameters=tuple(crit.names()), held=held_names,
    )
    vc_cov, info = None, None
    if standard_errors:
        info, vc_cov = _component_info(crit, design, sigmas, rvars, on_boundary, None if not with_classes else levels)
    free_terms = [i for i in range(len(design.terms)) if i not in held.terms]
    n_cov = sum(n_params[i] for i in free_terms) + sum(lab not in held.residual for lab in levels)
    return VarianceFit(sigmas, float(s2), dict(zip(levels, rvars.tolist())) if with_classes else None,
                       final["cp"], summary, vc_cov, int(n_cov), False, held_names, info)


def _component_info(crit: _Criterion, design: Design, sigmas: Sequence[np.ndarray], rvars: np.ndarray,
                    boundary: Sequence[str], levels: Sequence[str] | None) -> tuple[Any, np.ndarray]:
    """The variance-parameter information of a general fit, in its free components.

    The parameters are the estimated components themselves (variances, covariances and
    residual variances on their own scale; held components and terms on the boundary
    are constants): ``H`` is the Hessian of the unprofiled ``-2 log L`` in them and
    ``dC/dv`` the derivatives of ``C = var(beta_hat)``, both by Richardson-extrapolated
    central differences (:func:`mixedblup.inference.varpar_info_at`).  ``2 H^-1`` is the
    covariance of the components, and the same information gives Satterthwaite's df
    (invariant to the parametrisation at the optimum).

    Returns
    -------
    (VarParInfo or None, numpy.ndarray)
        The information (``None`` when nothing is free) and the covariance of every
        component (rows of :func:`variance_labels`; held and boundary ones NaN).
    """
    from .inference import component_names, varpar_info_at

    labels = variance_labels(design, levels)
    n_terms_vec = len(vc_labels(design)) - 1
    x0 = np.concatenate([_vc_vector(design, sigmas, 0.0)[:-1], rvars])
    term_index = {t.name: i for i, t in enumerate(design.terms)}
    free = np.zeros(len(x0), dtype=bool)
    for j, (group, _t1, _t2) in enumerate(labels):
        if j < n_terms_vec:
            free[j] = term_index[group] not in crit.held.terms and group not in boundary
        else:
            free[j] = crit.levels[j - n_terms_vec] not in crit.held.residual
    scale = np.empty_like(x0)
    for i, (group, t1, t2) in enumerate(labels):
        if t2 == "":
            scale[i] = abs(x0[i])
        else:
            scale[i] = np.sqrt(abs(x0[labels.index((group, t1, ""))] * x0[labels.index((group, t2, ""))]))
    idx = np.nonzero(free)[0]
    cov = np.full((len(x0), len(x0)), np.nan)
    if not len(idx):
        return None, cov

    def parts(v: np.ndarray, want_vcov: bool) -> tuple[float, np.ndarray | None]:
        x = x0.copy()
        x[idx] = v
        s, _ = _vc_unpack(design, np.concatenate([x[:n_terms_vec], [1.0]]))
        try:
            return crit.components_parts(s, x[n_terms_vec:], want_vcov)
        except EstimationError:
            return np.inf, None

    names = component_names(labels)
    try:
        info = varpar_info_at(parts, x0[idx], np.where(scale[idx] > 0, scale[idx], 1.0), [names[i] for i in idx])
    except EstimationError:
        _hessian_warning(np.full((len(idx), len(idx)), np.nan), [labels[i] for i in idx])
        return None, cov
    if info.positive_definite:
        cov[np.ix_(idx, idx)] = info.vcov
    else:
        _hessian_warning(info.hessian, [labels[i] for i in idx])
    return info, cov
