"""The results object: built once from the solved equations, complete and frozen.

Tables are numeric pandas objects; formatting happens only in
:mod:`mixedblup.summary`.  Per-row outputs are Series indexed like the input rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .design import Design
from .errors import EstimationError
from .mme import CrossProducts, Solution
from .variances import RESIDUAL

__all__ = ["MixedModelResults", "MMEView", "random_effect_labels"]


def random_effect_labels(design: Design) -> list[str]:
    """Labels of the random-effect equations: ``term[level]`` or ``term[level]:column``."""
    labels: list[str] = []
    for t in design.terms:
        for level in t.levels:
            if t.k == 1:
                labels.append(f"{t.name}[{level}]")
            else:
                labels.extend(f"{t.name}[{level}]:{c}" for c in t.columns)
    return labels


@dataclass(frozen=True)
class MMEView:
    """Henderson's mixed model equations, labelled, as in the textbooks.

    ``coefficients @ solution = rhs`` with

        coefficients = [[X'R^-1X, X'R^-1Z], [Z'R^-1X, Z'R^-1Z + G^-1]]

    where ``R = sigma_e^2 W^-1`` and ``G = blockdiag(K_t (x) Sigma_t)``.  Rows and
    columns are labelled by the fixed-effect names and ``term[level]`` (with
    ``:column`` for terms with several columns).

    Attributes
    ----------
    coefficients : pandas.DataFrame
        The coefficient matrix ``C``.
    rhs : pandas.Series
        The right-hand side.
    solution : pandas.Series
        BLUE then BLUP.
    n_fixed : int
        Number of fixed-effect equations (the ``C11`` block is ``[:n_fixed, :n_fixed]``).
    residual_variance : float
        ``sigma_e^2``; ``coefficients * sigma_e^2`` is the "lambda" form
        ``[[X'X, X'Z], [Z'X, Z'Z + A^-1 lambda]]`` of the course notes (no weights).
    """

    coefficients: pd.DataFrame
    rhs: pd.Series
    solution: pd.Series
    n_fixed: int
    residual_variance: float

    def inverse(self) -> pd.DataFrame:
        """``C^-1``: ``C11 = var(beta_hat)``, ``C22 = PEV = var(u_hat - u)``."""
        inv = np.linalg.inv(self.coefficients.to_numpy())
        return pd.DataFrame((inv + inv.T) / 2, index=self.coefficients.index, columns=self.coefficients.columns)

    def scaled(self) -> tuple[pd.DataFrame, pd.Series]:
        """The equations multiplied by ``sigma_e^2`` (the "lambda" form of the notes)."""
        s = self.residual_variance
        return self.coefficients * s, self.rhs * s

    def blocks(self) -> dict[str, pd.DataFrame | pd.Series]:
        """The labelled blocks ``C11, C12, C21, C22, r1, r2``."""
        k = self.n_fixed
        C = self.coefficients
        return {
            "C11": C.iloc[:k, :k], "C12": C.iloc[:k, k:], "C21": C.iloc[k:, :k], "C22": C.iloc[k:, k:],
            "r1": self.rhs.iloc[:k], "r2": self.rhs.iloc[k:],
        }


@dataclass(frozen=True)
class MixedModelResults:
    """A fitted linear mixed model.

    Build it with :func:`mixedblup.fit`.  Every attribute is computed at
    construction; the object is immutable.

    Attributes
    ----------
    formula : str
        The model formula.
    method : str
        ``"REML"`` or ``"ML"``: the likelihood reported in ``loglik``.
    variances_known : bool
        True when the variance components were given (BLUP with known variances).
    fixed_effects : pandas.DataFrame
        Indexed by fixed-effect name: ``estimate, std_error, statistic, p_value,
        ci_lower, ci_upper, dropped``.  Dropped (rank-deficient) columns are NaN.
        With known variances the statistic is a z (Wald) statistic.
    variance_components : pandas.DataFrame
        Long table ``group, term1, term2, estimate, std_error, sdcor`` (``term2`` empty
        for variances; ``sdcor`` is the SD for a variance and the correlation for a
        covariance); the residual row has group ``"Residual"``.
    vcov_fixed : pandas.DataFrame
        ``var(beta_hat) = C11`` over the estimable fixed effects.
    loglik : float
        Log-likelihood (REML or ML, lme4's convention) at the variance components.
    aic, bic : float
        ``-2 loglik + 2 npar`` and ``-2 loglik + npar log(nobs)`` with ``npar`` the
        number of fixed effects plus covariance parameters (lme4's count).
    nobs : int
        Observations used.
    fitted : pandas.Series
        Conditional fitted values ``X beta_hat + Z u_hat``, indexed like the input rows.
    residuals : pandas.Series
        ``y - fitted``.
    dropped_rows : pandas.Index
        Labels of input rows dropped for missing values.
    diagnostics : pandas.DataFrame
        Every check that triggered: ``check, level, message``.
    optimizer : OptSummary or None
        The optimisation record when variances were estimated (``None`` when given).
    vcov_variance_components : pandas.DataFrame or None
        Asymptotic covariance of the variance-component estimates (inverse observed
        information, rows and columns labelled ``(group, term1, term2)`` like
        ``variance_components``); ``None`` when the variances were given.
    """

    formula: str
    method: str
    variances_known: bool
    fixed_effects: pd.DataFrame
    variance_components: pd.DataFrame
    vcov_fixed: pd.DataFrame
    loglik: float
    aic: float
    bic: float
    nobs: int
    fitted: pd.Series
    residuals: pd.Series
    dropped_rows: pd.Index
    diagnostics: pd.DataFrame
    optimizer: Any
    vcov_variance_components: pd.DataFrame | None
    _random: pd.DataFrame = field(repr=False)
    _design: Design = field(repr=False)
    _cp: CrossProducts = field(repr=False)
    _solution: Solution = field(repr=False)
    _sigmas: tuple[np.ndarray, ...] = field(repr=False)
    _residual: float = field(repr=False)
    _terms_info: pd.DataFrame = field(repr=False)

    # ------------------------------------------------------------------ tables
    def random_effects(self, group: str | None = None) -> pd.DataFrame:
        """BLUPs with their prediction error variances, one row per level and coefficient.

        Parameters
        ----------
        group : str, optional
            A term name (``"dam"``); all terms when omitted.

        Returns
        -------
        pandas.DataFrame
            Columns ``group, level, term, estimate, std_error, pev, reliability,
            accuracy, cond_sd, has_records``.  ``std_error`` is the SEP
            (``sqrt(PEV)``, PEV from ``C22``); ``reliability = 1 - PEV / (sigma_jj K_ii)``;
            ``cond_sd`` is lme4's conditional SD (fixed effects taken as known).
        """
        table = self._random
        if group is None:
            return table.copy()
        names = list(self._terms_info.index)
        if group not in names:
            raise KeyError(f"no random term {group!r}; the terms are {names}")
        return table[table["group"] == group].reset_index(drop=True)

    @property
    def terms(self) -> pd.DataFrame:
        """One row per random term: ``columns, covariance, n_levels, n_observed, k``."""
        return self._terms_info.copy()

    @property
    def residual_variance(self) -> float:
        """``sigma_e^2``."""
        return self._residual

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(np.sqrt(self._residual))

    @property
    def blup(self) -> dict[str, pd.DataFrame]:
        """BLUPs per term as wide DataFrames (levels x columns)."""
        out = {}
        for name in self._terms_info.index:
            t = self.random_effects(name)
            out[name] = t.pivot(index="level", columns="term", values="estimate").reindex(
                index=pd.unique(t["level"]), columns=pd.unique(t["term"]))
        return out

    @cached_property
    def mme(self) -> MMEView:
        """Henderson's equations, labelled (dense; for teaching and checking small models)."""
        design, cp = self._design, self._cp
        size = cp.p + cp.ZtZ.shape[0]
        if size > 5000:
            raise EstimationError(
                f"the MME view is dense and this model has {size} equations; it is meant for "
                "small, teaching-size models"
            )
        s2 = self._residual
        ginv = []
        for cov, sigma in zip(cp.covariances, self._sigmas):
            try:
                np.linalg.cholesky(sigma)
                sinv = np.linalg.inv(sigma)
            except np.linalg.LinAlgError:
                raise EstimationError(
                    "Henderson's form needs G^-1, but a term's covariance matrix is singular "
                    f"({sigma.tolist()}); the relative-factor form used for fitting handles it"
                ) from None
            ginv.append(sp.kron(cov.precision, sinv).toarray())
        Ginv = np.zeros((0, 0)) if not ginv else sp.block_diag(ginv).toarray()
        C = np.block([[cp.XtX, cp.XtZ], [cp.XtZ.T, cp.ZtZ.toarray() + s2 * Ginv]]) / s2
        rhs = np.concatenate([cp.Xty, cp.Zty]) / s2
        names = [n for n, k in zip(design.fixed_names, design.fixed_kept) if k]
        labels = names + random_effect_labels(design)
        sol = np.concatenate([self._solution.beta, self._solution.u])
        return MMEView(
            coefficients=pd.DataFrame(C, index=labels, columns=labels),
            rhs=pd.Series(rhs, index=labels),
            solution=pd.Series(sol, index=labels),
            n_fixed=len(names),
            residual_variance=s2,
        )

    # --------------------------------------------------------------- rendering
    def summary(self) -> Any:
        """A statsmodels-style report (``str()`` for text, HTML in notebooks)."""
        from .summary import results_summary

        return results_summary(self)

    def _repr_html_(self) -> str:
        return self.summary().as_html()

    def __repr__(self) -> str:
        return (f"<MixedModelResults {self.formula!r}: nobs={self.nobs}, "
                f"{self.method} logLik={self.loglik:.4f}>")


def build_results(
    *,
    formula: str,
    method: str,
    variances_known: bool,
    design: Design,
    cp: CrossProducts,
    solution: Solution,
    sigmas: list[np.ndarray],
    residual: float,
    minus_two_ll: float,
    n_cov_params: int,
    diagnostics: pd.DataFrame,
    covariance_kinds: list[str],
    optimizer: Any = None,
    vc_covariance: np.ndarray | None = None,
) -> MixedModelResults:
    """Assemble a :class:`MixedModelResults` from the solved equations."""
    p = cp.p
    factor = solution.factor
    n_eq = factor.n
    # var(beta_hat) = C11 (relative form: times sigma_e^2)
    c11 = factor.inverse_columns(np.arange(p), np.arange(p)) * residual if p else np.zeros((0, 0))
    c11 = (c11 + c11.T) / 2
    fixed_names = [n for n, k in zip(design.fixed_names, design.fixed_kept) if k]
    se = np.sqrt(np.clip(np.diag(c11), 0, None))
    z = solution.beta / se
    crit = stats.norm.ppf(0.975)
    fe = pd.DataFrame(
        {"estimate": solution.beta, "std_error": se, "statistic": z,
         "p_value": 2 * stats.norm.sf(np.abs(z)),
         "ci_lower": solution.beta - crit * se, "ci_upper": solution.beta + crit * se},
        index=pd.Index(fixed_names, name="term"),
    ).reindex(pd.Index(design.fixed_names, name="term"))
    fe["dropped"] = ~design.fixed_kept

    # PEV: diagonal blocks of C^-1 over each level's r coefficients, mapped back by Lambda
    starts, sizes = _partition(p, cp, solution.ranks)
    blocks = factor.block_diagonal(starts, sizes) if n_eq > p else np.zeros((n_eq, 0))
    if n_eq > p:
        zz = _zz_factor(solution)
        cblocks = zz.block_diagonal(starts[p:] - p, sizes[p:])
    rows = []
    offset_b = p
    for t_i, (term, cov, sigma) in enumerate(zip(design.terms, cp.covariances, sigmas)):
        q, k = len(term.levels), term.k
        lam = _lambda_of(solution, t_i, cp)
        r = lam.shape[1]
        u = solution.u[cp.offsets[t_i]: cp.offsets[t_i] + q * k].reshape(q, k)
        if r:
            blk = blocks[offset_b: offset_b + q * r, :r].reshape(q, r, r)
            pev = np.einsum("im,jmn,in->ji", lam, blk, lam) * residual  # (q, k) diagonal of Lam B Lam'
            cblk = cblocks[offset_b - p: offset_b - p + q * r, :r].reshape(q, r, r)
            cvar = np.einsum("im,jmn,in->ji", lam, cblk, lam) * residual
        else:
            pev = np.zeros((q, k))
            cvar = np.zeros((q, k))
        offset_b += q * r
        prior = cov.diagonal[:, None] * np.diag(sigma)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(prior > 0, 1.0 - pev / prior, np.nan)
        rel = np.clip(rel, 0.0, 1.0)
        observed = np.asarray(np.abs(term.Z).sum(axis=0)).ravel().reshape(q, k).any(axis=1)
        frame = pd.DataFrame({
            "group": term.name,
            "level": np.repeat(np.asarray(term.levels, dtype=object), k),
            "term": np.tile(np.asarray(term.columns, dtype=object), q),
            "estimate": u.ravel(),
            "std_error": np.sqrt(np.clip(pev, 0, None)).ravel(),
            "pev": np.clip(pev, 0, None).ravel(),
            "reliability": rel.ravel(),
            "accuracy": np.sqrt(rel).ravel(),
            "cond_sd": np.sqrt(np.clip(cvar, 0, None)).ravel(),
            "has_records": np.repeat(observed, k),
        })
        rows.append(frame)
    random = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["group", "level", "term", "estimate", "std_error", "pev", "reliability",
                 "accuracy", "cond_sd", "has_records"]))

    vc = _variance_table(design, sigmas, residual)
    vcov_vc = None
    if vc_covariance is not None:
        labels = pd.MultiIndex.from_frame(vc[["group", "term1", "term2"]])
        vcov_vc = pd.DataFrame(vc_covariance, index=labels, columns=labels)
        vc["std_error"] = np.sqrt(np.diag(vc_covariance))
    Xb = design.X @ solution.beta
    Zu = design.Z @ solution.u if design.terms else np.zeros(design.n)
    fitted = pd.Series(Xb + Zu, index=design.index, name="fitted")
    resid = pd.Series(design.y - fitted.to_numpy(), index=design.index, name="residuals")
    npar = p + n_cov_params
    loglik = -0.5 * minus_two_ll
    info = pd.DataFrame(
        {"columns": [t.columns for t in design.terms],
         "covariance": covariance_kinds,
         "n_levels": [len(t.levels) for t in design.terms],
         "n_observed": [t.n_observed for t in design.terms],
         "correlated": [t.term.correlated for t in design.terms]},
        index=pd.Index([t.name for t in design.terms], name="group"),
    )
    return MixedModelResults(
        formula=formula, method=method, variances_known=variances_known,
        fixed_effects=fe, variance_components=vc,
        vcov_fixed=pd.DataFrame(c11, index=fixed_names, columns=fixed_names),
        loglik=loglik, aic=-2 * loglik + 2 * npar, bic=-2 * loglik + npar * np.log(design.n),
        nobs=design.n, fitted=fitted, residuals=resid, dropped_rows=design.dropped_rows,
        diagnostics=diagnostics, optimizer=optimizer,
        vcov_variance_components=vcov_vc, _random=random, _design=design, _cp=cp, _solution=solution,
        _sigmas=tuple(sigmas), _residual=residual, _terms_info=info,
    )


def _lambda_of(solution: Solution, t_i: int, cp: CrossProducts) -> np.ndarray:
    """Recover ``Lambda_t`` from ``T`` (its first diagonal block)."""
    k = cp.ks[t_i]
    r = solution.ranks[t_i]
    row0 = cp.offsets[t_i]
    col0 = int(sum(len(c.levels) * rr for c, rr in zip(cp.covariances[:t_i], solution.ranks[:t_i])))
    return solution.T[row0: row0 + k, col0: col0 + r].toarray()


def _partition(p: int, cp: CrossProducts, ranks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Block start and size for every equation: singletons for the fixed part, then r_t-blocks per level."""
    starts = [np.arange(p, dtype=np.int64)]  # fixed equations: C11 is computed separately
    sizes = [np.ones(p, dtype=np.int64)]
    pos = p
    for cov, r in zip(cp.covariances, ranks):
        q = len(cov.levels)
        if r == 0:
            continue
        first = pos + np.arange(q) * r
        starts.append(np.repeat(first, r))
        sizes.append(np.full(q * r, r, dtype=np.int64))
        pos += q * r
    return np.concatenate(starts), np.concatenate(sizes)


def _zz_factor(solution: Solution):
    """Factor of the random-effect block alone (lme4's conditional variances)."""
    from .factor import factorize

    p = len(solution.beta)
    C = solution.coefficient_matrix
    return factorize(C[p:, p:], solution.factor.backend)


def _variance_table(design: Design, sigmas: list[np.ndarray], residual: float) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for term, sigma in zip(design.terms, sigmas):
        cols = term.columns
        for i, c in enumerate(cols):
            rows.append({"group": term.name, "term1": c, "term2": "", "estimate": sigma[i, i],
                         "std_error": np.nan, "sdcor": np.sqrt(sigma[i, i])})
        if term.term.correlated:
            for i in range(len(cols)):
                for j in range(i + 1, len(cols)):
                    denom = np.sqrt(sigma[i, i] * sigma[j, j])
                    rows.append({"group": term.name, "term1": cols[i], "term2": cols[j],
                                 "estimate": sigma[i, j], "std_error": np.nan,
                                 "sdcor": sigma[i, j] / denom if denom > 0 else np.nan})
    rows.append({"group": RESIDUAL, "term1": "", "term2": "", "estimate": residual,
                 "std_error": np.nan, "sdcor": np.sqrt(residual)})
    return pd.DataFrame(rows, columns=["group", "term1", "term2", "estimate", "std_error", "sdcor"])
