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
from .mme import CrossProducts, minus_two_loglik, solve_mme

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = [
    "DDF_METHODS",
    "VarParInfo",
    "anova",
    "contrast_test",
    "deviance_and_vcov",
    "fixed_effects_table",
    "profile",
    "profile_confint",
    "ratio_estimate",
    "satterthwaite_df",
    "theta_from_sigmas",
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
    """The variance parameters ``(theta, sigma)`` and the derivatives Satterthwaite needs.

    Attributes
    ----------
    names : tuple of str
        ``theta[term:row,col]`` ... and ``sigma``.
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
    lams = []
    for term, sigma in zip(design.terms, sigmas):
        rel = np.atleast_2d(np.asarray(sigma, dtype=float)) / residual
        k = term.k
        lam = np.zeros((k, k))
        # Cholesky without pivoting that tolerates semi-definite matrices (zero columns)
        for j in range(k):
            d = rel[j, j] - lam[j, :j] @ lam[j, :j]
            lam[j, j] = np.sqrt(d) if d > 0 else 0.0
            for i in range(j + 1, k):
                lam[i, j] = (rel[i, j] - lam[i, :j] @ lam[j, :j]) / lam[j, j] if lam[j, j] > 0 else 0.0
        lams.append(lam)
    return tmap.theta(lams)


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


def _c11(factor: Any, p: int) -> np.ndarray:
    """The fixed-effect block of ``C^-1`` by ``p`` solves (no full inverse)."""
    if not p:
        return np.zeros((0, 0))
    units = np.zeros((factor.n, p))
    units[np.arange(p), np.arange(p)] = 1.0
    c11 = np.asarray(factor.solve(units))[:p]
    return (c11 + c11.T) / 2


def deviance_and_vcov(cp: CrossProducts, design: Design, x: np.ndarray, reml: bool,
                      backend: str = "auto") -> tuple[float, np.ndarray]:
    """``-2 log L`` and ``var(beta_hat)`` at ``x = (theta, sigma)`` (not profiled)."""
    from .estimate import ThetaMap

    tmap = ThetaMap.for_design(design)
    theta, sigma = x[:-1], float(x[-1])
    sol = solve_mme(cp, tmap.lambdas(theta), backend)
    p = cp.p
    c11 = _c11(sol.factor, p)
    schur = None
    if not reml:
        schur = -float(np.linalg.slogdet(c11)[1]) if p else 0.0
    dev = minus_two_loglik(cp, sol, sigma ** 2, reml, schur)
    return dev, c11 * sigma ** 2


def _theta_parts(cp: CrossProducts, design: Design, theta: np.ndarray, reml: bool, backend: str,
                 want_c11: bool) -> tuple[float, float, np.ndarray | None]:
    """``L(theta)`` (log-determinants), ``P(theta)`` (pwrss) and optionally ``C1(theta) = C^-1[:p, :p]``.

    ``-2 log L(theta, sigma) = a + dof log sigma^2 + L(theta) + P(theta) / sigma^2`` and
    ``var(beta_hat) = sigma^2 C1(theta)``, so every derivative in ``sigma`` is analytic.
    """
    from .estimate import ThetaMap

    sol = solve_mme(cp, ThetaMap.for_design(design).lambdas(theta), backend)
    p = cp.p
    c11 = _c11(sol.factor, p) if (want_c11 or not reml) else None
    logdet = sol.logdet_K + sol.logdet_C
    if not reml:
        logdet += float(np.linalg.slogdet(c11)[1]) if p else 0.0  # minus log|C11^-1|
    return float(logdet), float(sol.pwrss), c11


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
    dof = cp.n - cp.p if reml else cp.n
    cache: dict[tuple[float, ...], tuple[float, float, np.ndarray | None]] = {}

    def parts(t: np.ndarray, want_c11: bool = False) -> tuple[float, float, np.ndarray | None]:
        key = tuple(np.round(t, 15))
        hit = cache.get(key)
        if hit is None or (want_c11 and hit[2] is None):
            hit = _theta_parts(cp, design, t, reml, backend, want_c11)
            cache[key] = hit
        return hit

    def F(t: np.ndarray) -> float:
        L_, P_, _ = parts(t)
        return L_ + P_ / sigma ** 2

    h_all = _steps(theta, groups[:-1], STEP) if m else np.zeros(0)
    _, P0, C1 = parts(theta, True)
    H = np.zeros((m + 1, m + 1))
    J = np.zeros((m + 1, cp.p, cp.p))
    if m:
        H[:m, :m] = _hessian(F, theta, h_all)

        def P_of(t: np.ndarray) -> float:
            return parts(t)[1]

        def C1_of(t: np.ndarray) -> np.ndarray:
            return parts(t, True)[2]

        dP = _jacobian(lambda t: np.array([P_of(t)]), theta, h_all)[:, 0]
        H[:m, m] = H[m, :m] = -2.0 * dP / sigma ** 3
        J[:m] = _jacobian(C1_of, theta, h_all) * sigma ** 2
    H[m, m] = -2.0 * dof / sigma ** 2 + 6.0 * P0 / sigma ** 4
    J[m] = 2.0 * sigma * C1
    H = (H + H.T) / 2
    try:
        eig = np.linalg.eigvalsh(H)
        pd_ok = bool(eig.min() > 1e-10 * max(abs(eig.max()), 1.0))
    except np.linalg.LinAlgError:
        pd_ok = False
    A = 2.0 * np.linalg.inv(H) if pd_ok else np.full(H.shape, np.nan)
    return VarParInfo(tuple(names), np.concatenate([theta, [sigma]]), H, A, J, pd_ok)


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


def _info_for(res: MixedModelResults, ddf: str) -> VarParInfo | None:
    if ddf == "none" or res.variances_known:
        return None
    return res._varpar


# --------------------------------------------------------------------------- ratios (delta method)
def _component_row(vc: pd.DataFrame, key: Any) -> int:
    """Row of the variance table named by ``key``: a term, ``(term, column)``, ``(term, c1, c2)`` or residual."""
    if isinstance(key, str):
        if key.lower() == "residual":
            sel = vc.index[vc["group"] == "Residual"]
        else:
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


def ratio_estimate(res: MixedModelResults, numerator: Any, over: Sequence[Any] | None = None,
                   level: float = 0.95) -> pd.Series:
    """Ratio of a variance component to a sum of components, with a delta-method SE.

    See :meth:`MixedModelResults.ratio`.
    """
    vc = res.variance_components.reset_index(drop=True)
    num = _component_row(vc, numerator)
    if over is None:
        den = list(vc.index[vc["term2"] == ""])
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
    if res.vcov_variance_components is not None:
        V = res.vcov_variance_components.to_numpy()
        used = np.nonzero(grad)[0]
        sub = V[np.ix_(used, used)]
        if np.isfinite(sub).all():
            se = float(np.sqrt(max(grad[used] @ sub @ grad[used], 0.0)))
        elif values[num] == 0 or not np.isfinite(V[num, num]):
            # a component on the boundary: its own row is NaN; the ratio is 0 with unknown SE
            se = np.nan
    z = stats.norm.ppf(0.5 + level / 2)
    name = _label(vc.loc[num])
    return pd.Series({"estimate": est, "std_error": se, "ci_lower": est - z * se, "ci_upper": est + z * se},
                     name=name)


def _label(row: pd.Series) -> str:
    if row["group"] == "Residual":
        return "Residual"
    return row["group"] if row["term2"] == "" and row["term1"] in ("(Intercept)",) else (
        f"{row['group']}:{row['term1']}" + (f",{row['term2']}" if row["term2"] else ""))


# --------------------------------------------------------------------------- profile likelihood
class _Profiler:
    """``-2 log L`` over absolute variance parameters with one scalar quantity held fixed.

    Free parameters: for each term the lower-triangular elements of its absolute
    Cholesky factor ``L_t`` (``Sigma_t = L_t L_t'``), then ``log sigma_e^2``.
    ``warm`` keeps the last inner solution (warm starts along a profile).
    """

    def __init__(self, res: Any, reml: bool) -> None:
        self.res = res
        self.reml = reml
        self.warm: np.ndarray | None = None

    def pack(self) -> np.ndarray:
        theta = theta_from_sigmas(self.res._design, self.res._sigmas, self.res._residual)
        return np.concatenate([theta * np.sqrt(self.res._residual), [np.log(self.res._residual)]])

    def sigmas(self, x: np.ndarray) -> tuple[list[np.ndarray], float]:
        from .estimate import ThetaMap

        tmap = ThetaMap.for_design(self.res._design)
        lams = tmap.lambdas(x[:-1])
        return [lam @ lam.T for lam in lams], float(np.exp(x[-1]))

    def deviance(self, x: np.ndarray) -> float:
        from .estimate import minus_two_loglik_at

        sig, res = self.sigmas(x)
        if not res > 0 or not np.isfinite(res):
            return np.inf
        try:
            return minus_two_loglik_at(self.res._cp, self.res._design, sig, res, self.reml)
        except (EstimationError, np.linalg.LinAlgError, ZeroDivisionError):
            return np.inf


def _scalar_terms(res: MixedModelResults) -> dict[str, int]:
    """Term name -> position in theta of the single element of every one-column term."""
    out, pos = {}, 0
    for term in res._design.terms:
        n = term.k * (term.k + 1) // 2 if term.term.correlated else term.k
        if term.k == 1:
            out[term.name] = pos
        pos += n
    return out


def _profile_setup(res: MixedModelResults, what: str) -> tuple[_Profiler, Callable[[np.ndarray, float], np.ndarray],
                                                               int, float, Callable[[np.ndarray], float]]:
    """Map a target value into the full parameter vector for ``what``.

    ``what`` is a one-column term name (its variance), ``"residual"``, or
    ``"h2:<term>"`` (the term's share of the total variance).
    """
    if res.variances_known or res.optimizer is None:
        raise MixedBlupError("profile likelihood needs estimated variance components; these were given")
    prof = _Profiler(res, res.method == "REML")
    x_hat = prof.pack()
    scalar = _scalar_terms(res)
    m = len(x_hat)
    diag_mask = np.zeros(m, bool)
    from .estimate import ThetaMap

    diag_mask[:-1] = ThetaMap.for_design(res._design).diagonal()

    if what.lower() == "residual":
        fixed = m - 1

        def embed(free: np.ndarray, value: float) -> np.ndarray:
            return np.insert(free, fixed, np.log(value))

        def target(x: np.ndarray) -> float:
            return float(np.exp(x[-1]))
        return prof, embed, fixed, res._residual, target
    h2 = what.startswith("h2:")
    name = what[3:] if h2 else what
    if name not in scalar:
        raise MixedBlupError(
            f"profiles are available for the variance of one-column terms {sorted(scalar)}, 'residual' "
            f"and 'h2:<term>'; got {what!r}"
        )
    fixed = scalar[name]

    def total_other(x_full: np.ndarray) -> float:
        sig, r = prof.sigmas(x_full)
        return float(sum(np.trace(s) for i, s in enumerate(sig) if res._design.terms[i].name != name) + r)

    if not h2:
        def embed(free: np.ndarray, value: float) -> np.ndarray:
            return np.insert(free, fixed, np.sqrt(max(value, 0.0)))

        def target(x: np.ndarray) -> float:
            return float(x[fixed] ** 2)
        return prof, embed, fixed, float(x_hat[fixed] ** 2), target

    def embed(free: np.ndarray, value: float) -> np.ndarray:
        x = np.insert(free, fixed, 0.0)
        v = min(max(value, 0.0), 1 - 1e-12)
        x[fixed] = np.sqrt(v / (1 - v) * total_other(x))
        return x

    def target(x: np.ndarray) -> float:
        v = x[fixed] ** 2
        return float(v / (v + total_other(x)))
    return prof, embed, fixed, target(x_hat), target


def profile(res: MixedModelResults, what: str, *, n: int = 21, width: float = 3.0) -> pd.DataFrame:
    """Profile ``-2 log L`` for one variance parameter (see :meth:`MixedModelResults.profile`)."""
    prof, embed, fixed, est, _ = _profile_setup(res, what)
    x_hat = prof.pack()
    d_hat = prof.deviance(x_hat)
    lo, hi = _profile_bounds(res, what, prof, embed, fixed, est, d_hat, width ** 2, rtol=1e-2)
    grid = np.unique(np.concatenate([np.linspace(lo, hi, n), [est]]))
    rows = []
    for v in grid:
        d = _profiled_deviance(prof, embed, fixed, v, x_hat)
        delta = max(d - d_hat, 0.0)
        rows.append({"value": v, "deviance": d, "zeta": np.sign(v - est) * np.sqrt(delta)})
    return pd.DataFrame(rows)


def _profiled_deviance(prof: _Profiler, embed: Callable, fixed: int, value: float, x_start: np.ndarray) -> float:
    """Minimise ``-2 log L`` over the other parameters with the target held at ``value``."""
    from .estimate import ThetaMap

    free0 = np.delete(x_start, fixed)
    warm = prof.warm
    if warm is not None and len(warm) == len(free0) and np.isfinite(prof.deviance(embed(warm, value))):
        free0 = warm
    tmap_lower = np.concatenate([ThetaMap.for_design(prof.res._design).lower, [-np.inf]])
    lower = np.delete(tmap_lower, fixed)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def f(free: np.ndarray) -> float:
        return prof.deviance(embed(free, value))

    if len(free0) == 0:
        return f(free0)
    out = optimize.minimize(f, free0, method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": 500})
    prof.warm = np.asarray(out.x, dtype=float)
    return float(out.fun)


def _profile_bounds(res, what, prof, embed, fixed, est, d_hat, cutoff, rtol: float = 1e-5) -> tuple[float, float]:
    """Values on each side where the profile deviance rises by ``cutoff`` (or the parameter's limit)."""
    x_hat = prof.pack()
    upper_limit = 1.0 if what.startswith("h2:") else np.inf

    def excess(v: float) -> float:
        return _profiled_deviance(prof, embed, fixed, v, x_hat) - d_hat - cutoff

    # lower side (a variance may reach zero; the residual variance may not)
    lo = 0.0
    if what.lower() == "residual":
        lo = est / 2
        for _ in range(60):
            if excess(lo) > 0:
                break
            lo /= 2
        lo = optimize.brentq(excess, lo, est, xtol=rtol * est, rtol=max(rtol / 10, 1e-12))
    elif est > 0 and excess(0.0) > 0:
        lo = optimize.brentq(excess, 0.0, est, xtol=rtol * max(est, 1e-12), rtol=max(rtol / 10, 1e-12))
    # upper side: expand until the deviance rises by the cutoff
    step = max(est, 1e-3 if upper_limit == 1.0 else np.sqrt(res._residual) * 1e-2)
    hi = est + step
    for _ in range(60):
        if hi >= upper_limit:
            hi = upper_limit - 1e-9
            break
        if excess(hi) > 0:
            break
        hi = est + 2 * (hi - est)
    if hi < upper_limit - 1e-9 and excess(hi) > 0:
        hi = optimize.brentq(excess, est, hi, xtol=rtol * max(est, 1e-12), rtol=max(rtol / 10, 1e-12))
    return lo, hi


def profile_confint(res: MixedModelResults, what: str, level: float = 0.95) -> tuple[float, float]:
    """Profile-likelihood interval ``{v : -2 log L(v) - min <= chi2_1(level)}`` for one parameter."""
    prof, embed, fixed, est, _ = _profile_setup(res, what)
    d_hat = prof.deviance(prof.pack())
    return _profile_bounds(res, what, prof, embed, fixed, est, d_hat, float(stats.chi2.ppf(level, 1)))


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
    ks = {t.name: t.k for t in design.terms}
    out = []
    for _, row in vc.iterrows():
        if row["group"] == "Residual":
            out.append("var(Residual)")
        elif row["term2"] == "":
            out.append(f"var({row['group']})" if ks.get(row["group"], 1) == 1
                       else f"var({row['group']}:{row['term1']})")
        else:
            out.append(f"cov({row['group']}:{row['term1']},{row['term2']})")
    return out


def confint(res: MixedModelResults, level: float = 0.95, method: str = "Wald",
            parm: Sequence[str] | None = None) -> pd.DataFrame:
    """Confidence intervals (see :meth:`MixedModelResults.confint`)."""
    if method not in ("Wald", "profile"):
        raise ValueError(f"method must be 'Wald' or 'profile'; got {method!r}")
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
    vc = res.variance_components
    names = _vc_names(vc, res._design)
    z = stats.norm.ppf(0.5 + level / 2)
    est = vc["estimate"].to_numpy()
    vse = vc["std_error"].to_numpy()
    lower = est - z * vse
    is_var = (vc["term2"] == "").to_numpy()
    lower = np.where(is_var, np.maximum(lower, 0.0), lower)
    vrows = pd.DataFrame({"estimate": est, "lower": lower, "upper": est + z * vse, "method": "Wald"}, index=names)
    if method == "profile":
        scalar = _scalar_terms(res)
        for i, row in vc.reset_index(drop=True).iterrows():
            key = "residual" if row["group"] == "Residual" else row["group"]
            if key != "residual" and key not in scalar:
                continue
            if parm is not None and names[i] not in parm:
                continue
            lo, hi = profile_confint(res, key, level)
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
                 level: float = 0.95, method: str = "delta") -> pd.Series:
    """Heritability with a delta-method or profile interval (see :meth:`MixedModelResults.heritability`)."""
    term = default_genetic_term(res) if term is None else term
    out = ratio_estimate(res, term, over, level=level)
    out.name = f"h2({term})"
    if method == "profile":
        if over is not None:
            raise MixedBlupError("profile intervals for heritability use the default denominator; drop over=")
        lo, hi = profile_confint(res, f"h2:{term}", level)
        out["ci_lower"], out["ci_upper"] = lo, hi
    elif method != "delta":
        raise ValueError(f"method must be 'delta' or 'profile'; got {method!r}")
    return out
