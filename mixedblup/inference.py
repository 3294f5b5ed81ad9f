"""Tests and intervals: Satterthwaite degrees of freedom, F tests, intervals, ratios.

Satterthwaite's approximation follows lmerTest.  The variance parameters are
``varpar = (theta, sigma)``: the relative-factor elements of every term (the
optimiser's ``theta``, see :class:`~mixedblup.estimate.ThetaMap`) and the residual
standard deviation.  With ``C(varpar) = var(beta_hat)`` and ``A = 2 H^-1`` (``H``
the Hessian of ``-2 log L`` -- REML or ML, as fitted -- in ``varpar``), a contrast
``l`` has

    df = 2 (l' C l)^2 / (g' A g),     g_i = l' (dC / d varpar_i) l.

Multi-row contrasts ``L`` are tested as in lmerTest's ``contestMD``: the eigen
decomposition of ``L C L'`` splits the ``F`` statistic into independent ``t``
statistics, each with its own ``df``, combined into one denominator ``df``.
Derivatives are central differences with Richardson extrapolation.  With known
(given) variances every test is a Wald ``z`` (or chi-squared) test: ``df = inf``.

The same Hessian ``H`` gives the covariance of the variance components by the delta
method (:func:`variance_component_vcov`): one information matrix for Satterthwaite and
for the standard errors.  Fits with held components or residual classes use the
estimated components themselves as parameters (:func:`varpar_info_at`; held components
are constants), and fixed genetic groups count in ``p`` as in estimation.  Profile-likelihood intervals (:func:`profile_confint`) cover
every variance, covariance, correlation, the residual variance and variance ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .design import Design
from .errors import EstimationError, MixedBlupError
from .mme import CrossProducts, solve_mme

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = [
    "DDF_METHODS",
    "ProfileTarget",
    "VarParInfo",
    "anova",
    "components_jacobian",
    "contrast_test",
    "fixed_effects_table",
    "profile",
    "profile_confint",
    "profile_targets",
    "ratio_estimate",
    "results_varpar",
    "satterthwaite_df",
    "theta_from_sigmas",
    "variance_component_vcov",
    "varpar_info",
]

#: Relative finite-difference step for the variance-parameter derivatives (Richardson
#: extrapolation over ``STEP`` and ``STEP / 2`` makes the truncation error ``O(STEP^4)``
#: while keeping rounding noise of the criterion small).
STEP = 1e-2

#: Denominator degrees-of-freedom methods.
DDF_METHODS = ("Satterthwaite", "Kenward-Roger", "none")


# --------------------------------------------------------------------------- derivatives
def _steps(x: np.ndarray, groups: np.ndarray, rel: float) -> np.ndarray:
    """Step per parameter: ``rel`` times the largest magnitude in its group (1 if all zero)."""
    h = np.empty_like(x)
    for g in np.unique(groups):
        sel = groups == g
        scale = np.abs(x[sel]).max()
        h[sel] = rel * (scale if scale > 0 else 1.0)
    return h


def _hessian(f: Callable[[np.ndarray], float], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central-difference Hessian, Richardson-extrapolated over steps ``h`` and ``h/2``."""

    def at(step: np.ndarray) -> np.ndarray:
        m = len(x)
        H = np.zeros((m, m))
        f0 = f(x)
        for i in range(m):
            ei = np.zeros(m)
            ei[i] = step[i]
            H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / step[i] ** 2
            for j in range(i + 1, m):
                ej = np.zeros(m)
                ej[j] = step[j]
                H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                    4 * step[i] * step[j])
        return H

    return (4 * at(h / 2) - at(h)) / 3


def _jacobian(g: Callable[[np.ndarray], np.ndarray], x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Central-difference derivatives of an array-valued ``g`` (Richardson), stacked on axis 0."""

    def at(step: np.ndarray) -> np.ndarray:
        out = []
        for i in range(len(x)):
            e = np.zeros(len(x))
            e[i] = step[i]
            out.append((g(x + e) - g(x - e)) / (2 * step[i]))
        return np.array(out)

    return (4 * at(h / 2) - at(h)) / 3


# --------------------------------------------------------------------------- variance parameters
@dataclass(frozen=True)
class VarParInfo:
    """The variance parameters and the derivatives Satterthwaite needs.

    The parameters are ``(theta, sigma)`` (:func:`varpar_info`), or for fits with held
    components or residual classes the estimated components themselves
    (:func:`varpar_info_at`).

    Attributes
    ----------
    names : tuple of str
        ``theta[term:row,col]`` ... and ``sigma`` (or ``var(...)``, ``cov(...)``,
        ``var(Residual:<class>)``).
    params : numpy.ndarray
        Their values at the estimates.
    hessian : numpy.ndarray
        Hessian of ``-2 log L`` in ``params`` (``m x m``).
    vcov : numpy.ndarray
        ``A = 2 H^-1``, the asymptotic covariance of ``params`` (NaN when ``H`` is
        not positive definite).
    jacobian : numpy.ndarray
        ``dC/dparams_i`` for ``C = var(beta_hat)``, shape ``(m, p, p)``.
    positive_definite : bool
        Whether ``H`` is positive definite (otherwise ``df`` are NaN).
    """

    names: tuple[str, ...]
    params: np.ndarray
    hessian: np.ndarray
    vcov: np.ndarray
    jacobian: np.ndarray
    positive_definite: bool


def theta_from_sigmas(design: Design, sigmas: Sequence[np.ndarray], residual: float) -> np.ndarray:
    """Relative-factor parameters ``theta`` (lower Cholesky of ``Sigma_t / sigma_e^2``)."""
    from .estimate import ThetaMap

    tmap = ThetaMap.for_design(design)
    return tmap.theta([_chol_psd(np.atleast_2d(np.asarray(sigma, dtype=float)) / residual) for sigma in sigmas])


def _parameter_names(design: Design) -> tuple[list[str], np.ndarray]:
    names, groups = [], []
    for t_i, term in enumerate(design.terms):
        k = term.k
        pairs = [(r, c) for r, c in zip(*np.tril_indices(k))] if term.term.correlated else [(j, j) for j in range(k)]
        for r, c in pairs:
            names.append(f"theta[{term.name}:{term.columns[r]}]" if r == c
                         else f"theta[{term.name}:{term.columns[r]},{term.columns[c]}]")
            groups.append(t_i)
    from .estimate import ThetaMap

    tmap = ThetaMap.for_design(design)
    if len(names) != tmap.size:  # a layout this labelling does not know: generic names
        names = [f"theta[{i}]" for i in range(tmap.size)]
        groups = list(tmap.terms_of())
    names.append("sigma")
    groups.append(-1)
    return names, np.array(groups)


def _theta_parts(cp: CrossProducts, design: Design, theta: np.ndarray, reml: bool, backend: str,
                 want_c11: bool) -> tuple[int, float, float, np.ndarray | None]:
    """``dof``, ``L(theta)`` (log-determinants), ``P(theta)`` (pwrss) and optionally ``C1(theta) = C^-1[:p, :p]``.

    ``-2 log L(theta, sigma) = a + dof log sigma^2 + L(theta) + P(theta) / sigma^2`` and
    ``var(beta_hat) = sigma^2 C1(theta)``, so every derivative in ``sigma`` is analytic.
    ``dof`` and ``L`` are those of the estimation criterion
    (:func:`mixedblup.estimate._criterion_logdet`: levels that are fixed effects inside a
    random term -- genetic groups fitted as fixed -- count in ``p``).
    """
    from .estimate import ThetaMap, _criterion_logdet

    lambdas = ThetaMap.for_design(design).lambdas(theta)
    sol = solve_mme(cp, lambdas, backend)
    dof, logdet = _criterion_logdet(cp, sol, lambdas, reml)
    c11 = sol.factor.inverse_block(np.arange(cp.p)) if want_c11 else None
    return dof, float(logdet + sol.logdet_K), float(sol.pwrss), c11


def varpar_info(cp: CrossProducts, design: Design, theta: np.ndarray, residual: float, reml: bool,
                backend: str = "auto") -> VarParInfo:
    """Hessian and ``var(beta)`` derivatives in ``(theta, sigma)`` for Satterthwaite's df.

    Only ``theta`` is differentiated numerically (central differences over steps
    ``h`` and ``h/2``, Richardson-extrapolated); the ``sigma`` rows follow analytically
    from ``-2 log L = a + dof log sigma^2 + L(theta) + P(theta) / sigma^2`` and
    ``var(beta) = sigma^2 C1(theta)``.  Cost: ``1 + 4 m + 4 m (m - 1)`` factorisations
    for ``m`` theta elements.

    Parameters
    ----------
    cp, design : CrossProducts, Design
        The model.
    theta : numpy.ndarray
        Relative-factor parameters at the estimates.
    residual : float
        ``sigma_e^2`` at the estimates.
    reml : bool
        Whether the criterion is REML.
    backend : str
        Factorisation back end.
    """
    names, groups = _parameter_names(design)
    theta = np.asarray(theta, dtype=float)
    sigma = float(np.sqrt(residual))
    m = len(theta)
    cache: dict[tuple[float, ...], tuple[int, float, float, np.ndarray | None]] = {}

    def parts(t: np.ndarray, want_c11: bool = False) -> tuple[int, float, float, np.ndarray | None]:
        key = tuple(np.round(t, 15))
        hit = cache.get(key)
        if hit is None or (want_c11 and hit[3] is None):
            hit = _theta_parts(cp, design, t, reml, backend, want_c11)
            cache[key] = hit
        return hit

    def F(t: np.ndarray) -> float:
        _, L_, P_, _ = parts(t)
        return L_ + P_ / sigma ** 2

    h_all = _steps(theta, groups[:-1], STEP) if m else np.zeros(0)
    dof, _, P0, C1 = parts(theta, True)
    H = np.zeros((m + 1, m + 1))
    J = np.zeros((m + 1, cp.p, cp.p))
    if m:
        def P_of(t: np.ndarray) -> float:
            return parts(t)[2]

        def C1_of(t: np.ndarray) -> np.ndarray:
            return parts(t, True)[3]

        # the derivatives of C1 first: the Hessian's axis points are the same, taken from the cache
        J[:m] = _jacobian(C1_of, theta, h_all) * sigma ** 2
        dP = _jacobian(lambda t: np.array([P_of(t)]), theta, h_all)[:, 0]
        H[:m, m] = H[m, :m] = -2.0 * dP / sigma ** 3
        H[:m, :m] = _hessian(F, theta, h_all)
    H[m, m] = -2.0 * dof / sigma ** 2 + 6.0 * P0 / sigma ** 4
    J[m] = 2.0 * sigma * C1
    A, pd_ok = _information_inverse(H)
    return VarParInfo(tuple(names), np.concatenate([theta, [sigma]]), (H + H.T) / 2, A, J, pd_ok)


def _information_inverse(H: np.ndarray) -> tuple[np.ndarray, bool]:
    """``A = 2 H^-1`` of a symmetrised Hessian, and whether ``H`` is positive definite (NaN if not)."""
    H = (H + H.T) / 2
    try:
        eig = np.linalg.eigvalsh(H)
        pd_ok = bool(np.isfinite(eig).all() and eig.min() > 1e-10 * max(abs(eig.max()), 1.0))
    except np.linalg.LinAlgError:
        pd_ok = False
    return (2.0 * np.linalg.inv(H) if pd_ok else np.full(H.shape, np.nan)), pd_ok


def varpar_info_at(parts: Callable[[np.ndarray, bool], tuple[float, np.ndarray | None]], x: np.ndarray,
                   scale: np.ndarray, names: Sequence[str]) -> VarParInfo:
    """Satterthwaite's information in any parameters ``x`` from ``-2 log L`` and ``var(beta_hat)``.

    Used with the free variance components as parameters (fits with held components or
    residual classes, :func:`mixedblup.estimate._component_info`).  The Hessian of
    ``-2 log L`` and the derivatives of ``var(beta_hat)`` are central differences over
    steps ``STEP * scale`` and half that, Richardson-extrapolated; the Jacobian's points
    are the Hessian's axis points (evaluated once).

    Parameters
    ----------
    parts : callable
        ``parts(x, want_vcov) -> (-2 log L, var(beta_hat) or None)``.
    x : numpy.ndarray
        The parameters at the estimates.
    scale : numpy.ndarray
        Positive magnitude of every parameter (steps are relative to it).
    names : sequence of str
        Parameter names.

    Returns
    -------
    VarParInfo
    """
    x = np.asarray(x, dtype=float)
    cache: dict[tuple[float, ...], tuple[float, np.ndarray | None]] = {}

    def at(v: np.ndarray, want_vcov: bool) -> tuple[float, np.ndarray | None]:
        key = tuple(np.round(v, 15))
        hit = cache.get(key)
        if hit is None or (want_vcov and hit[1] is None):
            hit = parts(v, want_vcov)
            cache[key] = hit
        return hit

    def vcov_of(v: np.ndarray) -> np.ndarray:
        C = at(v, True)[1]
        if C is None:
            raise EstimationError("var(beta_hat) cannot be evaluated next to the estimates")
        return C

    h = STEP * np.asarray(scale, dtype=float)
    J = _jacobian(vcov_of, x, h)
    H = _hessian(lambda v: at(v, False)[0], x, h)
    A, pd_ok = _information_inverse(H)
    return VarParInfo(tuple(names), x, (H + H.T) / 2, A, J, pd_ok)


def component_names(labels: Sequence[tuple[str, str, str]]) -> list[str]:
    """``var(<term>)``, ``var(<term>:<column>)``, ``cov(<term>:<c1>,<c2>)``, ``var(Residual)``
    (``var(Residual:<class>)`` with residual classes) for ``(group, term1, term2)`` labels."""
    ks: dict[str, int] = {}
    for group, _t1, t2 in labels:
        if t2 == "":
            ks[group] = ks.get(group, 0) + 1
    out = []
    for group, t1, t2 in labels:
        if group == "Residual":
            out.append(f"var(Residual:{t1})" if t1 else "var(Residual)")
        elif t2 == "":
            out.append(f"var({group})" if ks[group] == 1 else f"var({group}:{t1})")
        else:
            out.append(f"cov({group}:{t1},{t2})")
    return out


def components_jacobian(design: Design, params: np.ndarray) -> np.ndarray:
    """``d vc / d (theta, sigma)``: the variance components as functions of the variance parameters.

    ``Sigma_t = sigma^2 Lambda_t Lambda_t'`` and ``sigma_e^2 = sigma^2``; rows follow
    :func:`~mixedblup.estimate.vc_labels` (per term its variances, then its covariances;
    the residual last), columns ``params = (theta, sigma)``.

    Parameters
    ----------
    design : Design
        The model (term layout).
    params : numpy.ndarray
        ``(theta, sigma)`` as in :attr:`VarParInfo.params`.

    Returns
    -------
    numpy.ndarray
        ``n_components x len(params)``.
    """
    from .estimate import ThetaMap, vc_labels

    tmap = ThetaMap.for_design(design)
    theta, sigma = np.asarray(params[:-1], dtype=float), float(params[-1])
    m = len(theta)
    J = np.zeros((len(vc_labels(design)), m + 1))
    lams = tmap.lambdas(theta)
    term_of = tmap.terms_of() if m else np.zeros(0, dtype=int)
    row = 0
    for t_i, term in enumerate(design.terms):
        k = term.k
        pairs = [(i, i) for i in range(k)]
        if term.term.correlated:
            pairs += [(i, j) for i in range(k) for j in range(i + 1, k)]
        lam = lams[t_i]
        for l_ in np.nonzero(term_of == t_i)[0]:
            unit = np.zeros(m)
            unit[l_] = 1.0
            E = tmap.lambdas(unit)[t_i]
            dS = sigma ** 2 * (E @ lam.T + lam @ E.T)
            for r, (i, j) in enumerate(pairs):
                J[row + r, l_] = dS[i, j]
        S = lam @ lam.T
        for r, (i, j) in enumerate(pairs):
            J[row + r, m] = 2.0 * sigma * S[i, j]
        row += len(pairs)
    J[row, m] = 2.0 * sigma
    return J


def variance_component_vcov(design: Design, info: VarParInfo, boundary: Sequence[str] = ()) -> np.ndarray:
    """Asymptotic covariance of the variance components from the one variance-parameter Hessian.

    The observed information of :func:`varpar_info` (the Hessian ``H`` of ``-2 log L`` in
    ``(theta, sigma)``, the same matrix Satterthwaite's df use) is carried to the
    variance-component scale by the delta method, ``V = J (2 H^-1) J'`` with
    ``J = d vc / d (theta, sigma)`` (:func:`components_jacobian`); at the optimum, where
    the gradient is zero, this equals ``2 H_vc^-1`` for the Hessian ``H_vc`` in the
    components themselves.  The parameters of terms on the boundary are held at zero
    (left out of ``H``) and their components get NaN rows and columns.

    Parameters
    ----------
    design : Design
        The model.
    info : VarParInfo
        Variance parameters and their Hessian at the estimates.
    boundary : sequence of str
        Names of terms with a variance estimated as zero.

    Returns
    -------
    numpy.ndarray
        Square, rows and columns as :func:`~mixedblup.estimate.vc_labels`; all NaN when the
        information of the free parameters is not positive definite.
    """
    from .estimate import ThetaMap, vc_labels

    labels = vc_labels(design)
    term_of = ThetaMap.for_design(design).terms_of() if len(info.params) > 1 else np.zeros(0, dtype=int)
    names = [t.name for t in design.terms]
    out_terms = [i for i, n in enumerate(names) if n in set(boundary)]
    keep = np.concatenate([~np.isin(term_of, out_terms), [True]])
    comp_free = np.array([lab[0] not in set(boundary) for lab in labels])
    cov = np.full((len(labels), len(labels)), np.nan)
    H = info.hessian[np.ix_(keep, keep)]
    try:
        eig = np.linalg.eigvalsh(H)
    except np.linalg.LinAlgError:
        return cov
    if not (np.isfinite(eig).all() and eig.min() > 1e-10 * max(abs(eig.max()), 1.0)):
        return cov
    J = components_jacobian(design, info.params)[np.ix_(comp_free, keep)]
    sub = J @ (2.0 * np.linalg.inv(H)) @ J.T
    cov[np.ix_(comp_free, comp_free)] = (sub + sub.T) / 2
    return cov


def results_varpar(res: MixedModelResults) -> tuple[VarParInfo | None, list[str]]:
    """The variance-parameter information of a fit, and notes on why it is missing.

    Computed on first use by :class:`~mixedblup.results.MixedModelResults` (one Hessian,
    shared by Satterthwaite's df and the standard errors of the variance components).
    """
    if res.variances_known or not res._design.terms:
        return None, []
    if general_fit(res):
        info = _general_varpar(res)
        if info is None:
            return None, [("Satterthwaite df unavailable: the information in the estimated components could "
                           "not be computed")]
        notes = [] if info.positive_definite else [
            ("the Hessian of the criterion in the estimated components is not positive definite; "
             "Satterthwaite df are NaN and tests fall back to z")]
        return info, notes
    design = res._design
    theta = getattr(res.optimizer, "theta", None)
    from .estimate import ThetaMap

    if theta is None or len(np.atleast_1d(theta)) != ThetaMap.for_design(design).size:
        theta = theta_from_sigmas(design, res._sigmas, res._residual)
    try:
        info = varpar_info(res._cp, design, np.asarray(theta, dtype=float), res._residual, res.method == "REML",
                           res._backend)
    except EstimationError as exc:
        import warnings

        from .errors import ConvergenceWarning

        note = f"Satterthwaite df unavailable: {exc}"
        warnings.warn(note + "; tests fall back to z", ConvergenceWarning, stacklevel=4)
        return None, [note]
    notes = []
    if not info.positive_definite:
        notes.append("the Hessian of the criterion in the variance parameters is not positive definite; "
                     "Satterthwaite df are NaN and tests fall back to z")
        from .estimate import _hessian_warning

        _hessian_warning(info.hessian, list(info.names))  # E6: said, not only recorded
    return info, notes


def general_fit(res: MixedModelResults) -> bool:
    """Whether a fit came from the general estimation path (held components or residual classes)."""
    return bool(getattr(res.optimizer, "held", ())) or res._design.residual_groups is not None


def held_components(res: MixedModelResults) -> np.ndarray:
    """Mask of the rows of ``res.variance_components`` held at given values (``fixed_variances=``)."""
    held = set(getattr(res.optimizer, "held", ()) or ())
    vc = res.variance_components
    out = []
    for group, t1 in zip(vc["group"], vc["term1"]):
        name = (f"Residual:{t1}" if t1 else "Residual") if group == "Residual" else group
        out.append(name in held)
    return np.array(out, dtype=bool)


def _general_varpar(res: MixedModelResults) -> VarParInfo | None:
    """The information of a general fit rebuilt from the results (a fit read by ``load``).

    ``fit`` hands over the information its estimation computed
    (:attr:`~mixedblup.estimate.VarianceFit.varpar`); this rebuilds the same criterion
    (held components and residual classes as fitted) for results that lack it.
    """
    from .estimate import _component_info, _Criterion
    from .variances import HeldVariances

    design, cp = res._design, res._cp
    vc = res.variance_components
    rgroups = design.residual_groups
    levels = ("",) if rgroups is None else tuple(str(x) for x in rgroups.levels)
    rvars = vc.loc[vc["group"] == "Residual", "estimate"].to_numpy(dtype=float)
    held_rows = held_components(res)
    names = [t.name for t in design.terms]
    held_terms = {i: np.asarray(res._sigmas[i]) for i, name in enumerate(names)
                  if name in set(res.optimizer.held)}
    is_res = (vc["group"] == "Residual").to_numpy()
    held_res = {lab: float(v) for lab, v, h in zip(levels, rvars, held_rows[is_res]) if h}
    held = HeldVariances(held_terms, held_res, len(names), levels)
    grouped = None
    if rgroups is not None:
        from .residual_groups import residual_group_cross_products

        grouped = residual_group_cross_products(design, cp.covariances)
        cp = grouped.base
    crit = _Criterion(cp, design, held, grouped, res.method == "REML", res._backend)
    info, _ = _component_info(crit, design, list(res._sigmas), rvars, tuple(res.optimizer.boundary),
                              None if rgroups is None else levels)
    return info


# --------------------------------------------------------------------------- contrasts
def satterthwaite_df(info: VarParInfo | None, vcov_beta: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Satterthwaite denominator df of each row of ``L`` (``inf`` without ``info``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if info is None:
        return np.full(len(L), np.inf)
    out = np.empty(len(L))
    for r, l in enumerate(L):
        var = float(l @ vcov_beta @ l)
        g = np.einsum("i,mij,j->m", l, info.jacobian, l)
        denom = float(g @ info.vcov @ g)
        out[r] = 2 * var ** 2 / denom if info.positive_definite and denom > 0 else np.nan
    return out


def _combined_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: one denominator df from per-direction df."""
    nu = np.asarray(nu, dtype=float)
    if np.isnan(nu).any():
        return np.nan
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    e = float(np.sum(nu / (nu - 2)))
    return 2 * e / (e - len(nu))


@dataclass(frozen=True)
class ContrastTest:
    """Result of a Wald test of ``L beta = 0``.

    Attributes
    ----------
    estimate : numpy.ndarray
        ``L beta`` (rows of the full-rank part of ``L``).
    statistic : float
        ``F`` (a squared ``t`` for one row).
    num_df, den_df : float
        Numerator (rank of ``L``) and denominator degrees of freedom (``inf``: z / chi-squared).
    p_value : float
        Upper tail probability of ``F(num_df, den_df)``.
    """

    estimate: np.ndarray
    statistic: float
    num_df: float
    den_df: float
    p_value: float


def f_pvalue(F: float, num_df: float, den_df: float) -> float:
    """``P(F(num_df, den_df) > F)``; chi-squared ``num_df * F`` when ``den_df`` is infinite."""
    if not np.isfinite(F):
        return np.nan
    if np.isinf(den_df):
        return float(stats.chi2.sf(num_df * F, num_df))
    if not den_df > 0:
        return np.nan
    return float(stats.f.sf(F, num_df, den_df))


def contrast_test(beta: np.ndarray, vcov_beta: np.ndarray, L: np.ndarray,
                  info: VarParInfo | None, tol: float = 1e-8) -> ContrastTest:
    """Test ``L beta = 0`` with an F statistic and Satterthwaite's denominator df.

    Parameters
    ----------
    beta, vcov_beta : numpy.ndarray
        Estimates and their covariance.
    L : numpy.ndarray
        ``q x p`` contrast matrix (rank deficiency is removed).
    info : VarParInfo or None
        Variance-parameter derivatives; ``None`` for known variances (``df = inf``).
    tol : float
        Relative eigenvalue tolerance for the rank of ``L C L'``.
    """
    L = np.atleast_2d(np.asarray(L, dtype=float))
    VL = L @ vcov_beta @ L.T
    VL = (VL + VL.T) / 2
    vals, vecs = np.linalg.eigh(VL)
    keep = vals > tol * max(vals.max(), 0.0) if vals.size and vals.max() > 0 else np.zeros(len(vals), bool)
    if not keep.any():
        raise MixedBlupError("the contrast has zero variance (L is zero or not estimable)")
    vals, vecs = vals[keep][::-1], vecs[:, keep][:, ::-1]
    PL = vecs.T @ L
    est = PL @ beta
    t2 = est ** 2 / vals
    q = len(vals)
    F = float(t2.sum() / q)
    nu = satterthwaite_df(info, vcov_beta, PL)
    ddf = float(np.inf) if info is None else _combined_ddf(nu)
    return ContrastTest(L @ beta, F, float(q), ddf, f_pvalue(F, q, ddf))


def fixed_effects_table(beta: np.ndarray, vcov_beta: np.ndarray, names: Sequence[str],
                        info: VarParInfo | None, level: float = 0.95) -> pd.DataFrame:
    """``estimate, std_error, df, statistic, p_value, ci_lower, ci_upper`` per coefficient.

    With ``info`` the statistic is a ``t`` with Satterthwaite's df; without, a ``z``
    (``df = inf``).  When the df cannot be computed (Hessian not positive definite)
    they are NaN and the test falls back to ``z``.
    """
    p = len(beta)
    se = np.sqrt(np.clip(np.diag(vcov_beta), 0, None)) if p else np.zeros(0)
    df = satterthwaite_df(info, vcov_beta, np.eye(p)) if p else np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = beta / se
    use = np.where(np.isfinite(df) & (df > 0), df, np.inf)
    pval = np.where(np.isinf(use), 2 * stats.norm.sf(np.abs(stat)), 2 * stats.t.sf(np.abs(stat), np.where(
        np.isinf(use), 1.0, use)))
    crit = np.where(np.isinf(use), stats.norm.ppf(0.5 + level / 2), stats.t.ppf(0.5 + level / 2, np.where(
        np.isinf(use), 1.0, use)))
    return pd.DataFrame(
        {"estimate": beta, "std_error": se, "df": df, "statistic": stat, "p_value": pval,
         "ci_lower": beta - crit * se, "ci_upper": beta + crit * se},
        index=pd.Index(list(names), name="term"),
    )


# --------------------------------------------------------------------------- anova
def fixed_terms(design: Design) -> list[tuple[str, list[int], frozenset[str]]]:
    """``(term label, column positions in fixed_names, factor set)`` of every fixed-part term."""
    spec = design.fixed_spec
    if spec is None:
        return []
    out = []
    for term, cols in spec.term_indices.items():
        factors = frozenset(str(f) for f in getattr(term, "factors", ()))
        out.append((str(term), [int(c) for c in cols], factors))
    return out


def _kept_terms(res: MixedModelResults) -> list[tuple[str, list[int], frozenset[str]]]:
    """The fixed terms with column positions among the estimable (kept) columns."""
    kept = res._design.fixed_kept
    kept_pos = np.cumsum(kept) - 1
    out = []
    for label, cols, factors in res._fixed_terms:
        out.append((label, [int(kept_pos[c]) for c in cols if kept[c]], factors))
    return out


def _doolittle_upper(XtX: np.ndarray) -> np.ndarray:
    """Unit upper-triangular ``U`` of ``X'X = U' D U`` (lmerTest's type I contrasts)."""
    R = np.linalg.cholesky(XtX).T  # X'X = R'R, R upper
    return R / np.diag(R)[:, None]


def anova(res: MixedModelResults, type: str = "III", ddf: str = "Satterthwaite") -> pd.DataFrame:
    """F tests of the fixed-effect terms (see :meth:`MixedModelResults.anova`)."""
    if ddf not in DDF_METHODS:
        raise ValueError(f"ddf must be one of {DDF_METHODS}; got {ddf!r}")
    kind = str(type).upper()
    if kind in ("1", "I"):
        kind = "I"
    elif kind in ("3", "III", "MARGINAL"):
        kind = "III" if kind != "MARGINAL" else "MARGINAL"
    else:
        raise ValueError(f"type must be 'I', 'III' or 'marginal'; got {type!r}")
    terms = [t for t in _kept_terms(res) if t[0] != "1" and t[1]]
    if kind == "III":
        for label, _, factors in terms:
            within = [o for o, _, f in terms if o != label and factors < f]
            if within:
                raise MixedBlupError(
                    f"type III tests of {label!r}, which is contained in {within}, depend on the "
                    "contrast coding; use type='marginal' with sum-to-zero contrasts "
                    "(C(x, contr.sum)) for SAS-style type III tests, or type='I'"
                )
    beta = res._solution.beta
    C = res.vcov_fixed.to_numpy()
    info = _info_for(res, ddf)
    if ddf == "Kenward-Roger" and not res.variances_known:
        _kenward_roger_supported(res)
    if kind == "I":
        U = _doolittle_upper(res._cp.XtX)
    rows = []
    for label, cols, _ in terms:
        L = U[cols] if kind == "I" else np.eye(len(beta))[cols]
        if ddf == "Kenward-Roger" and not res.variances_known:
            from .kenward_roger import kenward_roger_test

            test = kenward_roger_test(res, L)
        else:
            test = contrast_test(beta, C, L, info)
        mean_sq = test.statistic * res.residual_variance
        rows.append({"sum_sq": mean_sq * test.num_df, "mean_sq": mean_sq, "num_df": test.num_df,
                     "den_df": test.den_df, "statistic": test.statistic, "p_value": test.p_value})
    return pd.DataFrame(rows, index=pd.Index([t[0] for t in terms], name="term"),
                        columns=["sum_sq", "mean_sq", "num_df", "den_df", "statistic", "p_value"])


def _kenward_roger_supported(res: MixedModelResults) -> None:
    """Refuse Kenward-Roger where its variance parametrisation does not describe the fit."""
    from .mme import fixed_level_equations

    if general_fit(res):
        raise MixedBlupError("Kenward-Roger is not implemented for fits with held components "
                             "(fixed_variances=) or residual classes (residual_groups=); use "
                             "ddf='Satterthwaite'")
    if len(fixed_level_equations(res._cp)):
        raise MixedBlupError("Kenward-Roger is not implemented with genetic groups fitted as fixed effects; "
                             "use ddf='Satterthwaite'")


def _info_for(res: MixedModelResults, ddf: str) -> VarParInfo | None:
    if ddf == "none" or res.variances_known:
        return None
    return res._varpar


# --------------------------------------------------------------------------- ratios (delta method)
def _residual_key(key: Any) -> tuple[bool, str | None]:
    """Whether ``key`` names a residual variance, and the class it names (``None``: not named).

    ``"residual"``, ``"residual:<class>"`` and ``("residual", class)`` (any case).
    """
    if isinstance(key, str):
        head, sep, cls = key.partition(":")
        if head.lower() == "residual":
            return True, (cls if sep else None)
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) and key[0].lower() == "residual":
        return True, str(key[1])
    return False, None


def _residual_row(vc: pd.DataFrame, cls: str | None) -> int:
    """The ``Residual`` row of class ``cls`` (``None``: the only residual variance)."""
    rows = vc.index[vc["group"] == "Residual"]
    classes = [str(c) for c in vc.loc[rows, "term1"]]
    if cls is None:
        if len(rows) == 1:
            return int(rows[0])
        raise KeyError(f"the model has one residual variance per class {classes}: name one as "
                       f"'residual:<class>' or ('residual', class), e.g. 'residual:{classes[0]}'")
    if len(rows) == 1 and classes == [""]:
        raise KeyError(f"the model has one residual variance (no residual classes); name it 'residual', "
                       f"not {cls!r}")
    if cls not in classes:
        raise KeyError(f"no residual class {cls!r}; the classes are {classes}")
    return int(rows[classes.index(cls)])


def _component_row(vc: pd.DataFrame, key: Any) -> int:
    """Row of the variance table named by ``key``.

    A term, ``(term, column)``, ``(term, c1, c2)``, ``"residual"``, or with residual
    classes ``"residual:<class>"`` / ``("residual", class)``.
    """
    is_residual, cls = _residual_key(key)
    if is_residual:
        return _residual_row(vc, cls)
    if isinstance(key, str):
        sel = vc.index[(vc["group"] == key) & (vc["term2"] == "")]
        if len(sel) > 1:
            raise KeyError(f"term {key!r} has several variances {list(vc.loc[sel, 'term1'])}; name one "
                           f"as ({key!r}, column)")
    elif isinstance(key, tuple) and len(key) in (2, 3):
        t2 = key[2] if len(key) == 3 else ""
        sel = vc.index[(vc["group"] == key[0]) & (vc["term1"] == key[1]) & (vc["term2"] == t2)]
    else:
        raise KeyError(f"cannot name a variance component by {key!r}")
    if len(sel) != 1:
        groups = sorted(set(vc["group"]))
        raise KeyError(f"no variance component {key!r}; the groups are {groups}")
    return int(sel[0])


def _default_denominator(vc: pd.DataFrame, num: int, residual_class: str | None) -> list[int]:
    """Every term variance plus the residual variance (of ``residual_class`` with classes)."""
    terms = list(vc.index[(vc["term2"] == "") & (vc["group"] != "Residual")])
    residual_rows = vc.index[vc["group"] == "Residual"]
    if residual_class is None and len(residual_rows) > 1:
        if vc.loc[num, "group"] == "Residual":  # a class's residual: that class's total variance
            residual_class = str(vc.loc[num, "term1"])
        else:
            classes = [str(c) for c in vc.loc[residual_rows, "term1"]]
            raise MixedBlupError(
                f"the model has one residual variance per class {classes}, so the total variance "
                f"differs by class: give residual_class= (one of {classes}; the denominator is then "
                "every term's variance plus that class's residual variance), or list the denominator "
                "in over= with the class's residual as 'residual:<class>'"
            )
    return terms + [_residual_row(vc, residual_class)]


def _components_vcov(res: MixedModelResults) -> np.ndarray | None:
    """``res.vcov_variance_components`` with the held components' rows and columns zero (not NaN):
    they were given, so they contribute no uncertainty to functions of the components."""
    if res.vcov_variance_components is None:
        return None
    V = res.vcov_variance_components.to_numpy().copy()
    held = held_components(res) if general_fit(res) else np.zeros(len(V), dtype=bool)
    V[held, :] = 0.0
    V[:, held] = 0.0
    return V


def ratio_estimate(res: MixedModelResults, numerator: Any, over: Sequence[Any] | None = None,
                   level: float = 0.95, residual_class: str | None = None) -> pd.Series:
    """Ratio of a variance component to a sum of components, with a delta-method SE.

    See :meth:`MixedModelResults.ratio`.
    """
    vc = res.variance_components.reset_index(drop=True)
    num = _component_row(vc, numerator)
    if over is None:
        den = _default_denominator(vc, num, None if residual_class is None else str(residual_class))
    elif residual_class is not None:
        raise MixedBlupError("residual_class= sets the default denominator; with over= name the class's "
                             "residual there ('residual:<class>')")
    else:
        den = sorted({_component_row(vc, k) for k in over} | {num})
    values = vc["estimate"].to_numpy()
    total = values[den].sum()
    if not total > 0:
        raise EstimationError("the denominator of the ratio is zero")
    est = values[num] / total
    grad = np.zeros(len(values))
    grad[den] -= values[num] / total ** 2
    grad[num] += 1.0 / total
    se = np.nan
    V = _components_vcov(res)
    if V is not None:
        used = np.nonzero(grad)[0]
        sub = V[np.ix_(used, used)]
        if np.isfinite(sub).all():  # otherwise a component on the boundary: the SE is unknown
            se = float(np.sqrt(max(grad[used] @ sub @ grad[used], 0.0)))
    z = stats.norm.ppf(0.5 + level / 2)
    name = _label(vc.loc[num])
    return pd.Series({"estimate": est, "std_error": se, "ci_lower": est - z * se, "ci_upper": est + z * se},
                     name=name)


def _label(row: pd.Series) -> str:
    if row["group"] == "Residual":
        return f"Residual:{row['term1']}" if row["term1"] else "Residual"
    return row["group"] if row["term2"] == "" and row["term1"] in ("(Intercept)",) else (
        f"{row['group']}:{row['term1']}" + (f",{row['term2']}" if row["term2"] else ""))


# --------------------------------------------------------------------------- profile likelihood
def _chol_psd(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor without pivoting that tolerates semi-definite matrices (zero columns)."""
    S = np.atleast_2d(np.asarray(S, dtype=float))
    k = S.shape[0]
    lam = np.zeros((k, k))
    for j in range(k):
        d = S[j, j] - lam[j, :j] @ lam[j, :j]
        lam[j, j] = np.sqrt(d) if d > 0 else 0.0
        for i in range(j + 1, k):
            lam[i, j] = (S[i, j] - lam[i, :j] @ lam[j, :j]) / lam[j, j] if lam[j, j] > 0 else 0.0
    return lam


@dataclass(frozen=True)
class ProfileTarget:
    """One scalar function of the variance components to profile.

    Attributes
    ----------
    kind : str
        ``"var"`` (a variance), ``"cov"`` (a covariance), ``"cor"`` (a correlation),
        ``"residual"`` (the residual variance) or ``"h2"`` (a variance's share of the sum
        of every variance, residual included).
    term : int
        Index of the random term (``-1`` for the residual).
    i, j : int
        Columns of the term (``i == j`` for a variance or ``h2``).
    label : str
        The name used in :func:`confint` (``var(...)``, ``cov(...)``, ``cor(...)``, ``h2(...)``).
    """

    kind: str
    term: int
    i: int
    j: int
    label: str


class _Profiler:
    """``-2 log L`` over absolute variance parameters with one scalar quantity held fixed.

    Free parameters: for each term the lower-triangular elements of the absolute Cholesky
    factor ``L_t`` of ``P_t Sigma_t P_t'`` (``P_t`` a permutation that puts the profiled
    columns first, so that a variance is ``L_00^2``, a covariance ``L_00 L_10`` and a
    correlation ``L_10 / sqrt(L_10^2 + L_11^2)``), then ``log sigma_e^2``.  ``warm`` keeps
    the last inner solution (warm starts along a profile).
    """

    def __init__(self, res: Any, reml: bool, perm: dict[int, np.ndarray] | None = None) -> None:
        from .estimate import ThetaMap

        self.res = res
        self.reml = reml
        self.tmap = ThetaMap.for_design(res._design)
        self.perm = dict(perm or {})
        sizes = [len(np.nonzero(self.tmap.terms_of() == t)[0]) for t in range(len(res._design.terms))]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.warm: np.ndarray | None = None

    def pack(self) -> np.ndarray:
        lams = []
        for t, (term, S) in enumerate(zip(self.res._design.terms, self.res._sigmas)):
            P = self.perm.get(t)
            S2 = S[np.ix_(P, P)] if P is not None else S
            lams.append(_chol_psd(S2) if term.term.correlated else np.diag(np.sqrt(np.clip(np.diag(S2), 0, None))))
        return np.concatenate([self.tmap.theta(lams), [np.log(self.res._residual)]])

    def held_mask(self, held: set[str]) -> np.ndarray:
        """Parameters of the components named in ``held`` (terms, ``"Residual"``): kept at their values."""
        mask = np.zeros(self.offsets[-1] + 1, dtype=bool)
        for t, term in enumerate(self.res._design.terms):
            mask[self.offsets[t]: self.offsets[t + 1]] = term.name in held
        mask[-1] = "Residual" in held
        return mask

    def sigmas(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        out = []
        for t, lam in enumerate(self.tmap.lambdas(x[:-1])):
            S = lam @ lam.T
            P = self.perm.get(t)
            if P is not None:
                inv = np.argsort(P)
                S = S[np.ix_(inv, inv)]
            out.append(S)
        return out, float(np.exp(x[-1]))

    def deviance(self, x: np.ndarray) -> float:
        from .estimate import minus_two_loglik_at

        if not np.all(np.isfinite(x)):
            return np.inf
        sig, res = self.sigmas(x)
        if not res > 0 or not np.isfinite(res):
            return np.inf
        try:
            return minus_two_loglik_at(self.res._cp, self.res._design, sig, res, self.reml)
        except (EstimationError, np.linalg.LinAlgError, ZeroDivisionError):
            return np.inf


def profile_targets(res: MixedModelResults) -> list[ProfileTarget]:
    """Every variance component (``var``/``cov``), correlation, residual and ratio that can be profiled."""
    out = []
    for t, term in enumerate(res._design.terms):
        k, cols = term.k, term.columns
        for i in range(k):
            name = term.name if k == 1 else f"{term.name}:{cols[i]}"
            out.append(ProfileTarget("var", t, i, i, f"var({name})"))
            out.append(ProfileTarget("h2", t, i, i, f"h2({name})"))
        if term.term.correlated:
            for i in range(k):
                for j in range(i + 1, k):
                    pair = f"{term.name}:{cols[i]},{cols[j]}"
                    out.append(ProfileTarget("cov", t, i, j, f"cov({pair})"))
                    out.append(ProfileTarget("cor", t, i, j, f"cor({pair})"))
    out.append(ProfileTarget("residual", -1, 0, 0, "var(Residual)"))
    return out


def _resolve_target(res: MixedModelResults, what: Any) -> ProfileTarget:
    """``what``: a :class:`ProfileTarget`, a label of :func:`profile_targets`, a one-column
    term's name (its variance), ``"residual"`` or ``"h2:<term>"`` / ``"h2:<term>:<column>"``."""
    if isinstance(what, ProfileTarget):
        return what
    targets = profile_targets(res)
    by_label = {t.label: t for t in targets}
    key = str(what)
    if key.lower() in ("residual", "sigma", "var(residual)"):
        return by_label["var(Residual)"]
    if key.startswith("h2:"):
        key = f"h2({key[3:]})"
    elif key in {term.name for term in res._design.terms}:
        key = f"var({key})"
    if key in by_label:
        return by_label[key]
    raise MixedBlupError(f"cannot profile {what!r}; the parameters are {[t.label for t in targets]} "
                         "(or a one-column term's name, 'residual', 'h2:<term>')")


class _Setup:
    """What one profile needs: the profiler, the embedding of a target value and its limits."""

    def __init__(self, res: MixedModelResults, target: ProfileTarget) -> None:
        if res.variances_known or res.optimizer is None:
            raise MixedBlupError("profile likelihood needs estimated variance components; these were given")
        _profile_supported(res)
        self.target = target
        design = res._design
        kind, t, i, j = target.kind, target.term, target.i, target.j
        perm: dict[int, np.ndarray] = {}
        if t >= 0 and design.terms[t].term.correlated and design.terms[t].k > 1:
            k = design.terms[t].k
            first = [i] if i == j else [i, j]
            perm[t] = np.array(first + [c for c in range(k) if c not in first])
        self.prof = _Profiler(res, res.method == "REML", perm)
        off = int(self.prof.offsets[t]) if t >= 0 else 0
        correlated = t >= 0 and design.terms[t].term.correlated
        m = len(self.prof.pack())
        S = res._sigmas[t] if t >= 0 else None
        if kind == "residual":
            self.fixed = m - 1
            self.lo, self.hi, self.lo_ok, self.hi_ok = 0.0, np.inf, False, False
            self.est = float(res._residual)
        elif kind in ("var", "h2"):
            self.fixed = off if correlated else off + i
            self.lo, self.lo_ok = 0.0, True
            self.hi, self.hi_ok = (np.inf, False) if kind == "var" else (1.0, False)
        else:  # cov, cor: L_10 after the permutation
            self.fixed = off + 1
            self.i00, self.i11 = off, off + 2
            self.lo, self.hi = (-np.inf, np.inf) if kind == "cov" else (-1.0, 1.0)
            self.lo_ok = self.hi_ok = False
        self.x_hat = self.prof.pack()
        held = self.prof.held_mask(set(getattr(res.optimizer, "held", ()) or ()))
        if held[self.fixed]:
            raise MixedBlupError(f"{target.label} is held at a given value (fixed_variances=); it has no "
                                 "profile")
        self.free_idx = np.nonzero(~held & (np.arange(m) != self.fixed))[0]
        self.est = self.value(self.x_hat)
        if kind == "var":
            self.scale = max(self.est, 1e-2 * res._residual)
        elif kind == "cov":
            self.scale = max(abs(self.est), 0.25 * float(np.sqrt(max(S[i, i] * S[j, j], 0.0))), 1e-8)
        else:
            self.scale = max(abs(self.est), 1e-3)

    def _other(self, x: np.ndarray) -> float:
        """Sum of every variance except the profiled one (``x[fixed]`` set to 0)."""
        sig, r = self.prof.sigmas(x)
        return float(sum(np.trace(s) for s in sig) + r)

    def embed(self, free: np.ndarray, value: float) -> np.ndarray:
        """The full parameter vector with the target at ``value``."""
        kind = self.target.kind
        x = self.x_hat.copy()  # held components keep their values
        x[self.free_idx] = free
        x[self.fixed] = 0.0
        if kind == "residual":
            x[self.fixed] = np.log(value) if value > 0 else -np.inf
        elif kind == "var":
            x[self.fixed] = np.sqrt(max(value, 0.0))
        elif kind == "h2":
            v = min(max(value, 0.0), 1.0)
            x[self.fixed] = np.sqrt(v / (1 - v) * self._other(x)) if v < 1 else np.inf
        elif kind == "cov":
            l00 = x[self.i00]
            x[self.fixed] = value / l00 if l00 > 0 else (0.0 if value == 0 else np.nan)
        else:  # cor
            r = float(np.clip(value, -1.0, 1.0))
            x[self.fixed] = r * x[self.i11] / np.sqrt(1 - r * r) if abs(r) < 1 else np.nan
        return x

    def value(self, x: np.ndarray) -> float:
        """The target at a full parameter vector."""
        sig, r = self.prof.sigmas(x)
        kind, t, i, j = self.target.kind, self.target.term, self.target.i, self.target.j
        if kind == "residual":
            return r
        S = sig[t]
        if kind == "var":
            return float(S[i, i])
        if kind == "h2":
            total = float(sum(np.trace(s) for s in sig) + r)
            return float(S[i, i] / total)
        if kind == "cov":
            return float(S[i, j])
        d = np.sqrt(S[i, i] * S[j, j])
        return float(S[i, j] / d) if d > 0 else 0.0

    def profiled(self, value: float) -> float:
        """Minimise ``-2 log L`` over the other parameters with the target held at ``value``."""
        prof = self.prof
        free0 = self.x_hat[self.free_idx]
        warm = prof.warm
        # start from the better of the last solution and the estimates
        if (warm is not None and len(warm) == len(free0)
                and prof.deviance(self.embed(warm, value)) < prof.deviance(self.embed(free0, value))):
            free0 = warm
        lower = np.concatenate([prof.tmap.lower, [-np.inf]])[self.free_idx]
        bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

        def f(free: np.ndarray) -> float:
            return prof.deviance(self.embed(free, value))

        if len(free0) == 0:
            return f(free0)
        # central-difference gradients: forward differences at scipy's default step are
        # dominated by rounding in -2 log L and stop the search early
        out = optimize.minimize(f, free0, method="L-BFGS-B", jac="3-point", bounds=bounds,
                                options={"ftol": 1e-10, "gtol": 1e-5, "maxiter": 1000})
        if np.isfinite(out.fun):
            prof.warm = np.asarray(out.x, dtype=float)
        return float(out.fun)


def _profile_supported(res: MixedModelResults) -> None:
    """Refuse profiles the profiler cannot compute: one residual variance per class."""
    if res._design.residual_groups is not None:
        raise MixedBlupError(
            "profile likelihood is not available with residual classes (residual_groups=): the profiler "
            "has one residual variance; use Wald intervals (confint(method='Wald')) and delta-method "
            "ratios (heritability(method='delta'))"
        )


def _profile_setup(res: MixedModelResults, what: Any) -> _Setup:
    """The profile of ``what`` (see :func:`_resolve_target`)."""
    _profile_supported(res)
    return _Setup(res, _resolve_target(res, what))


def profile(res: MixedModelResults, what: Any, *, n: int = 21, width: float = 3.0) -> pd.DataFrame:
    """Profile ``-2 log L`` for one variance parameter (see :meth:`MixedModelResults.profile`)."""
    setup = _profile_setup(res, what)
    d_hat = setup.prof.deviance(setup.x_hat)
    lo, hi = _profile_bounds(setup, d_hat, width ** 2, rtol=1e-2)
    est = setup.est
    grid = np.unique(np.concatenate([np.linspace(lo, hi, n), [est]]))
    rows = []
    for v in grid:
        d = setup.profiled(v) if v != est else d_hat
        delta = max(d - d_hat, 0.0)
        rows.append({"value": v, "deviance": d, "zeta": np.sign(v - est) * np.sqrt(delta)})
    return pd.DataFrame(rows)


def _profile_bounds(setup: _Setup, d_hat: float, cutoff: float, rtol: float = 1e-5) -> tuple[float, float]:
    """Values on each side where the profile deviance rises by ``cutoff`` (or the parameter's limit)."""
    est = setup.est
    setup.prof.warm = None

    root_cut = float(np.sqrt(cutoff))

    def excess(v: float) -> float:
        # on the |zeta| scale (square root of the deviance increase), which is close to linear
        # in the parameter, so Brent's method needs few profiled points
        return float(np.sqrt(max(setup.profiled(v) - d_hat, 0.0))) - root_cut

    def root(a: float, b: float, xtol: float) -> float:
        try:
            return optimize.brentq(excess, a, b, xtol=xtol, rtol=1e-12)
        except ValueError:  # the inner optimum moved between evaluations: keep the outer end
            return a if abs(a - est) > abs(b - est) else b

    def side(limit: float, limit_ok: bool) -> float:
        setup.prof.warm = None
        xtol = rtol * max(abs(est), setup.scale * 1e-3)
        if np.isfinite(limit):
            if limit == est:
                return est
            if limit_ok:  # the limit itself can be evaluated (a variance of zero)
                if excess(limit) <= 0:
                    return limit
                return root(*sorted((limit, est)), xtol)
            prev = est
            for k in range(1, 45):  # approach the limit geometrically
                v = limit + (est - limit) * 0.5 ** k
                if excess(v) > 0:
                    return root(*sorted((v, prev)), xtol)
                prev = v
            return limit
        direction = 1.0 if limit > 0 else -1.0
        prev = est
        for k in range(60):
            v = est + direction * setup.scale * 2.0 ** k
            if excess(v) > 0:
                return root(*sorted((prev, v)), xtol)
            prev = v
        return limit

    return side(setup.lo, setup.lo_ok), side(setup.hi, setup.hi_ok)


def profile_confint(res: MixedModelResults, what: Any, level: float = 0.95) -> tuple[float, float]:
    """Profile-likelihood interval ``{v : -2 log L(v) - min <= chi2_1(level)}`` for one parameter.

    Parameters
    ----------
    res : MixedModelResults
        A fit with estimated variance components.
    what : str or ProfileTarget
        A label of :func:`profile_targets` (``"var(Subject:Days)"``, ``"cov(...)"``,
        ``"cor(...)"``, ``"h2(...)"``, ``"var(Residual)"``), a one-column term's name,
        ``"residual"`` or ``"h2:<term>"``.
    level : float
        Coverage.

    Returns
    -------
    (float, float)
        The interval; a bound at the parameter's limit (0 for a variance, +-1 for a
        correlation) when the deviance does not rise enough before it.
    """
    setup = _profile_setup(res, what)
    d_hat = setup.prof.deviance(setup.x_hat)
    return _profile_bounds(setup, d_hat, float(stats.chi2.ppf(level, 1)))


# --------------------------------------------------------------------------- user-facing helpers
def contrast_series(res: MixedModelResults, L: Any, ddf: str = "Satterthwaite") -> pd.Series:
    """Test ``L beta = 0`` (see :meth:`MixedModelResults.contrast`)."""
    if ddf not in DDF_METHODS:
        raise ValueError(f"ddf must be one of {DDF_METHODS}; got {ddf!r}")
    names = list(res.vcov_fixed.index)
    all_names = list(res.fixed_effects.index)
    if isinstance(L, pd.Series):
        L = L.to_frame().T
    if isinstance(L, pd.DataFrame):
        unknown = [c for c in L.columns if c not in all_names]
        if unknown:
            raise KeyError(f"contrast columns {unknown} are not fixed effects; they are {all_names}")
        dropped = [c for c in L.columns if c not in names and (L[c] != 0).any()]
        if dropped:
            raise MixedBlupError(f"the contrast involves dropped (not estimable) fixed effects {dropped}")
        L = L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.shape[1] == len(all_names) and len(all_names) != len(names):
        keep = res.fixed_effects["dropped"].to_numpy() == False
        if np.any(L[:, ~keep] != 0):
            raise MixedBlupError("the contrast involves dropped (not estimable) fixed effects")
        L = L[:, keep]
    if L.shape[1] != len(names):
        raise ValueError(f"L must have {len(names)} columns (the estimable fixed effects {names}); "
                         f"got {L.shape[1]}")
    beta, C = res._solution.beta, res.vcov_fixed.to_numpy()
    if ddf == "Kenward-Roger" and not res.variances_known:
        from .kenward_roger import kenward_roger_test

        _kenward_roger_supported(res)
        test = kenward_roger_test(res, L)
    else:
        test = contrast_test(beta, C, L, _info_for(res, ddf))
    out = {"statistic": test.statistic, "num_df": test.num_df, "den_df": test.den_df, "p_value": test.p_value}
    if len(L) == 1:
        if ddf == "Kenward-Roger" and not res.variances_known:
            from .kenward_roger import kenward_roger_vcov

            C = kenward_roger_vcov(res)
        est = float(L[0] @ beta)
        se = float(np.sqrt(L[0] @ C @ L[0]))
        out = {"estimate": est, "std_error": se, "t": est / se, **out}
    return pd.Series(out, name="contrast")


def _vc_names(vc: pd.DataFrame, design: Design) -> list[str]:
    return component_names(list(zip(vc["group"], vc["term1"], vc["term2"])))


def _sdcor_wald(vc: pd.DataFrame, V: np.ndarray | None, z: float) -> pd.DataFrame:
    """SDs and correlations with delta-method Wald intervals (SD truncated at 0, correlation in [-1, 1])."""
    est = vc["estimate"].to_numpy(dtype=float)
    rows = []
    key = {(g, a, b): r for r, (g, a, b) in enumerate(zip(vc["group"], vc["term1"], vc["term2"]))}
    for r, (g, a, b) in enumerate(zip(vc["group"], vc["term1"], vc["term2"])):
        grad = np.zeros(len(est))
        if b == "":
            value = float(np.sqrt(max(est[r], 0.0)))
            if value > 0:
                grad[r] = 1.0 / (2.0 * value)
        else:
            ia, ib = key[(g, a, "")], key[(g, b, "")]
            d = float(np.sqrt(max(est[ia] * est[ib], 0.0)))
            value = est[r] / d if d > 0 else np.nan
            if d > 0:
                grad[r] = 1.0 / d
                grad[ia] = -value / (2.0 * est[ia])
                grad[ib] = -value / (2.0 * est[ib])
        used = np.nonzero(grad)[0]
        se = np.nan
        if V is not None and len(used):
            sub = V[np.ix_(used, used)]
            if np.isfinite(sub).all():
                se = float(np.sqrt(max(grad[used] @ sub @ grad[used], 0.0)))
        lo, hi = value - z * se, value + z * se
        lo, hi = (max(lo, 0.0), hi) if b == "" else (max(lo, -1.0), min(hi, 1.0))
        rows.append((value, lo, hi))
    return pd.DataFrame(rows, columns=["estimate", "lower", "upper"])


def _sdcor_names(vc: pd.DataFrame, design: Design) -> list[str]:
    return [n.replace("var(", "sd(", 1) if n.startswith("var(") else n.replace("cov(", "cor(", 1)
            for n in _vc_names(vc, design)]


def confint(res: MixedModelResults, level: float = 0.95, method: str = "Wald",
            parm: Sequence[str] | None = None, scales: str = "vcov") -> pd.DataFrame:
    """Confidence intervals (see :meth:`MixedModelResults.confint`)."""
    if method not in ("Wald", "profile"):
        raise ValueError(f"method must be 'Wald' or 'profile'; got {method!r}")
    if scales not in ("vcov", "sdcor"):
        raise ValueError(f"scales must be 'vcov' or 'sdcor'; got {scales!r}")
    fe = res.fixed_effects
    beta = fe.loc[~fe["dropped"], "estimate"]
    se = fe.loc[~fe["dropped"], "std_error"]
    df = fe.loc[~fe["dropped"], "df"].to_numpy()
    use = np.where(np.isfinite(df) & (df > 0), df, np.inf)
    crit = np.array([stats.norm.ppf(0.5 + level / 2) if np.isinf(d) else stats.t.ppf(0.5 + level / 2, d)
                     for d in use])
    rows = pd.DataFrame({"estimate": beta.to_numpy(), "lower": beta.to_numpy() - crit * se.to_numpy(),
                         "upper": beta.to_numpy() + crit * se.to_numpy(), "method": "Wald"},
                        index=list(beta.index))
    vc = res.variance_components.reset_index(drop=True)
    z = stats.norm.ppf(0.5 + level / 2)
    if scales == "vcov":
        names = _vc_names(vc, res._design)
        est = vc["estimate"].to_numpy()
        vse = vc["std_error"].to_numpy()
        lower = est - z * vse
        is_var = (vc["term2"] == "").to_numpy()
        lower = np.where(is_var, np.maximum(lower, 0.0), lower)
        vrows = pd.DataFrame({"estimate": est, "lower": lower, "upper": est + z * vse, "method": "Wald"},
                             index=names)
    else:
        names = _sdcor_names(vc, res._design)
        V = None if res.vcov_variance_components is None else res.vcov_variance_components.to_numpy()
        vrows = _sdcor_wald(vc, V, z).assign(method="Wald")
        vrows.index = names
    held = held_components(res) if general_fit(res) else np.zeros(len(vc), dtype=bool)
    vrows.loc[held, ["lower", "upper"]] = np.nan  # given, not estimated: no interval
    vrows.loc[held, "method"] = "held"
    if method == "profile":
        _profile_supported(res)
        labels = _vc_names(vc, res._design)  # the profiled quantity: var/cov, or var/cor for sdcor
        for i in range(len(vc)):
            if (parm is not None and names[i] not in parm) or held[i]:
                continue
            what = labels[i]
            if scales == "sdcor" and what.startswith("cov("):
                what = "cor(" + what[4:]
            lo, hi = profile_confint(res, what, level)
            if scales == "sdcor" and names[i].startswith("sd("):
                lo, hi = np.sqrt(max(lo, 0.0)), np.sqrt(max(hi, 0.0))
            vrows.iloc[i, [1, 2]] = [lo, hi]
            vrows.iloc[i, 3] = "profile"
    out = pd.concat([rows, vrows])
    out.index.name = "parameter"
    if parm is not None:
        missing = [p_ for p_ in parm if p_ not in out.index]
        if missing:
            raise KeyError(f"unknown parameters {missing}; they are {list(out.index)}")
        out = out.loc[list(parm)]
    return out


def default_genetic_term(res: MixedModelResults) -> str:
    """The only term with a pedigree or relationship matrix (or the only term)."""
    info = res.terms
    genetic = list(info.index[info["covariance"].isin(["pedigree", "relationship"])])
    if len(genetic) == 1:
        return genetic[0]
    if len(info) == 1:
        return str(info.index[0])
    raise MixedBlupError(
        f"name the term: the model has {'several' if genetic else 'no'} terms with a pedigree or "
        f"relationship matrix ({genetic or list(info.index)})"
    )


def heritability(res: MixedModelResults, term: str | None = None, over: Sequence[Any] | None = None, *,
                 level: float = 0.95, method: str = "delta", residual_class: str | None = None) -> pd.Series:
    """Heritability with a delta-method or profile interval (see :meth:`MixedModelResults.heritability`)."""
    term = default_genetic_term(res) if term is None else term
    out = ratio_estimate(res, term, over, level=level, residual_class=residual_class)
    label = ":".join(term) if isinstance(term, tuple) else term
    out.name = f"h2({label})" if residual_class is None else f"h2({label}|Residual:{residual_class})"
    if method == "profile":
        if over is not None:
            raise MixedBlupError("profile intervals for heritability use the default denominator; drop over=")
        lo, hi = profile_confint(res, f"h2:{label}", level)
        out["ci_lower"], out["ci_upper"] = lo, hi
    elif method != "delta":
        raise ValueError(f"method must be 'delta' or 'profile'; got {method!r}")
    return out
