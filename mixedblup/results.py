"""The results object: built once from the solved equations, complete and frozen.

Tables are numeric pandas objects; formatting happens only in
:mod:`mixedblup.summary`.  Per-row outputs are Series indexed like the input rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import Design
from .errors import EstimationError
from .mme import CrossProducts, Solution, fixed_level_equations
from .variances import RESIDUAL

__all__ = ["MMEView", "MixedModelResults", "random_effect_labels"]


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

    @property
    def coefficient_matrix(self) -> pd.DataFrame:
        """The coefficient matrix ``C`` (same as ``coefficients``)."""
        return self.coefficients

    @property
    def right_hand_side(self) -> pd.Series:
        """The right-hand side (same as ``rhs``)."""
        return self.rhs

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


class _Lazy:
    """A dataclass field that is computed on first read unless it was given (a data descriptor).

    ``__init__`` stores a given value; the field's default (the descriptor itself) means
    "compute with ``method`` when first read, then keep".  Assignment by users is still
    refused (the dataclass is frozen), so the results stay immutable from the outside.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_lazy_{name}"

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.slot]
        except KeyError:
            value = getattr(obj, self.method)()
            obj.__dict__[self.slot] = value
            return value

    def __set__(self, obj: Any, value: Any) -> None:
        if value is self:  # the default: computed on first read
            obj.__dict__.pop(self.slot, None)
        else:
            obj.__dict__[self.slot] = value


@dataclass(frozen=True)
class MixedModelResults:
    """A fitted linear mixed model.

    Build it with :func:`mixedblup.fit`.  The object is immutable.  What only inference
    needs -- Satterthwaite's df and p-values in ``fixed_effects``, the standard errors in
    ``variance_components`` and ``vcov_variance_components`` (one numerical Hessian of the
    criterion, see :func:`mixedblup.inference.varpar_info`) -- is computed on first
    access and kept, so ``fit`` costs one optimisation and one solve.

    Attributes
    ----------
    formula : str
        The model formula.
    method : str
        ``"REML"`` or ``"ML"``: the likelihood reported in ``loglik``.
    variances_known : bool
        True when the variance components were given (BLUP with known variances).
    fixed_effects : pandas.DataFrame
        Indexed by fixed-effect name: ``estimate, std_error, df, statistic, p_value,
        ci_lower, ci_upper, dropped``.  Dropped (rank-deficient) columns are NaN.
        With estimated variances the statistic is a ``t`` with Satterthwaite's
        denominator df (lmerTest's) and a 95% ``t`` interval; with known variances a
        ``z`` (Wald) statistic with ``df = inf``.
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
        Every check of the fit that triggered: ``check, level, message``.  Problems met
        by the inference computed on first use (Satterthwaite's df unavailable) are
        warned about then and noted in :meth:`summary`.
    optimizer : OptSummary or None
        The optimisation record when variances were estimated (``None`` when given).
    vcov_variance_components : pandas.DataFrame or None
        Asymptotic covariance of the variance-component estimates (inverse observed
        information, rows and columns labelled ``(group, term1, term2)`` like
        ``variance_components``); ``None`` when the variances were given.
    npar : int
        Number of parameters counted by AIC and BIC: fixed effects (genetic groups fitted as
        fixed included) plus covariance parameters (the residual variance included).
    solver_info : SolverInfo or None
        How the equations were solved when ``fit(..., solver="pcg")`` iterated
        (:class:`~mixedblup.iterative.SolverInfo`: iterations, achieved accuracy,
        convergence, time, preconditioner); ``None`` for the direct solver.  A PCG fit has
        no inverse of the coefficient matrix: standard errors, PEV, exact reliabilities
        and ``loglik``/``aic``/``bic`` are NaN, and ``random_effects()`` adds
        ``reliability_approx`` for one-column pedigree terms.
    """

    formula: str
    method: str
    variances_known: bool
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
    _random: pd.DataFrame = field(repr=False)
    _design: Design = field(repr=False)
    _cp: CrossProducts = field(repr=False)
    _solution: Solution = field(repr=False)
    _sigmas: tuple[np.ndarray, ...] = field(repr=False)
    _residual: float = field(repr=False)
    _terms_info: pd.DataFrame = field(repr=False)
    npar: int = 0
    _minus_two_ll: float = field(default=np.nan, repr=False)
    fixed_effects: pd.DataFrame = field(default=_Lazy("_compute_fixed_effects"), repr=False, kw_only=True)
    variance_components: pd.DataFrame = field(default=_Lazy("_compute_variance_components"), repr=False,
                                              kw_only=True)
    vcov_variance_components: pd.DataFrame | None = field(default=_Lazy("_compute_vcov_vc"), repr=False,
                                                          kw_only=True)
    _varpar: Any = field(default=_Lazy("_compute_varpar"), repr=False, kw_only=True)
    _frame: pd.DataFrame | None = field(default=None, repr=False)
    _structures: tuple[Any, ...] | None = field(default=None, repr=False)
    _backend: str = field(default="auto", repr=False)
    _fixed_terms: tuple[tuple[str, list[int], frozenset[str]], ...] = field(default=(), repr=False)
    solver_info: Any = None

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
            Columns ``group, level, term, estimate, std_error, pev, var_blup, reliability,
            accuracy, cond_sd, has_records``.  ``var_blup`` is ``var(u_hat)``, the diagonal
            of ``G - C22`` (prior variance minus PEV).  ``std_error`` is the SEP
            (``sqrt(PEV)``, PEV from ``C22``); ``reliability = 1 - PEV / (sigma_jj K_ii)``;
            ``cond_sd`` is lme4's conditional SD (fixed effects taken as known).  For a fit
            with ``solver="pcg"`` the columns from ``C^-1`` are NaN and ``reliability_approx``
            holds approximate reliabilities of one-column pedigree terms (see
            :func:`mixedblup.reliability.approximate_reliability`; NaN for other terms).
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

    # ------------------------------------------------------------- lazy inference
    @cached_property
    def _varpar_result(self) -> tuple[Any, list[str]]:
        """``(VarParInfo or None, notes)``: the one variance-parameter Hessian (first use only)."""
        from .inference import results_varpar

        return results_varpar(self)

    def _compute_varpar(self) -> Any:
        return self._varpar_result[0]

    @property
    def _inference_notes(self) -> list[str]:
        """Why Satterthwaite's df are missing (when they were computed and are)."""
        if "_varpar_result" not in self.__dict__:
            return []
        return list(self._varpar_result[1])

    def _compute_fixed_effects(self) -> pd.DataFrame:
        from .inference import fixed_effects_table

        design = self._design
        fe = fixed_effects_table(self._solution.beta, self.vcov_fixed.to_numpy(), list(self.vcov_fixed.index),
                                 self._varpar).reindex(pd.Index(design.fixed_names, name="term"))
        fe["dropped"] = ~np.asarray(design.fixed_kept, dtype=bool)
        return fe

    def _compute_vcov_vc(self) -> pd.DataFrame | None:
        if self.variances_known or self.optimizer is None:
            return None
        from .estimate import vc_labels
        from .inference import variance_component_vcov

        labels = pd.MultiIndex.from_tuples(vc_labels(self._design), names=["group", "term1", "term2"])
        info = self._varpar
        if info is None:
            V = np.full((len(labels), len(labels)), np.nan)
        else:
            V = variance_component_vcov(self._design, info, boundary=getattr(self.optimizer, "boundary", ()))
        return pd.DataFrame(V, index=labels, columns=labels)

    def _compute_variance_components(self) -> pd.DataFrame:
        vc = _variance_table(self._design, list(self._sigmas), self._residual)
        V = self.vcov_variance_components
        if V is not None and V.shape[0] == len(vc):
            vc["std_error"] = np.sqrt(np.diag(V.to_numpy()))
        return vc

    @cached_property
    def _kenward_roger(self) -> Any:
        """Kenward-Roger ingredients (dense; computed on first use)."""
        from .kenward_roger import compute_parts

        return compute_parts(self)

    # ----------------------------------------------------------- broom vocabulary
    def tidy(self, effects: str | Sequence[str] = ("fixed", "ran_pars"), *, conf_int: bool = False,
             conf_level: float = 0.95, scales: str = "sdcor") -> pd.DataFrame:
        """One row per estimate, in broom.mixed's vocabulary.

        Parameters
        ----------
        effects : str or sequence of str
            Any of ``"fixed"`` (fixed effects: ``estimate, std_error, statistic, df,
            p_value``), ``"ran_pars"`` (variance parameters: ``sd__(Intercept)``,
            ``cor__(Intercept).Days``, ``sd__Observation``) and ``"ran_vals"``
            (BLUPs per level with their SEP).
        conf_int : bool
            Add ``conf_low, conf_high`` (Wald; ``t`` with Satterthwaite df for fixed effects).
        conf_level : float
            Coverage of the intervals.
        scales : {"sdcor", "vcov"}
            Report ran_pars as SDs and correlations, or variances and covariances.

        Returns
        -------
        pandas.DataFrame
            Columns ``effect, group, level, term, estimate, std_error, statistic, df,
            p_value`` (those that apply), RangeIndex.
        """
        from .tidy import tidy

        return tidy(self, effects, conf_int=conf_int, conf_level=conf_level, scales=scales)

    def glance(self) -> pd.DataFrame:
        """One-row model summary: ``nobs, sigma, logLik, AIC, BIC, deviance/REMLcrit, df_residual ...``."""
        from .tidy import glance

        return glance(self)

    def augment(self, data: pd.DataFrame | None = None) -> pd.DataFrame:
        """The data with ``.fitted, .resid, .fixed, .resid_fixed`` added, indexed like the input rows.

        Parameters
        ----------
        data : pandas.DataFrame, optional
            The data the model was fitted to (any extra columns are kept); rows dropped
            for missing values are left out.  Without it, the model's own columns.

        Returns
        -------
        pandas.DataFrame
            ``.fitted`` is the conditional prediction ``X beta + Z u``, ``.fixed`` the
            marginal (population) prediction ``X beta``; ``.resid = y - .fitted`` and
            ``.resid_fixed = y - .fixed``.
        """
        from .tidy import augment

        return augment(self, data)

    # ------------------------------------------------------------------ inference
    def anova(self, type: str = "III", ddf: str = "Satterthwaite") -> pd.DataFrame:
        """F tests of the fixed-effect terms (lmerTest's ``anova``).

        Parameters
        ----------
        type : {"III", "I", "marginal"}
            ``"I"``: sequential (lmerTest's type I).  ``"III"``/``"marginal"``: every
            coefficient of a term is zero given all other terms; identical to lmerTest's
            type III when no term is contained in another (``"III"`` refuses otherwise,
            ``"marginal"`` tests the coefficients as coded).
        ddf : {"Satterthwaite", "Kenward-Roger", "none"}
            Denominator degrees of freedom (``"none"``: chi-squared tests, ``den_df = inf``).
            With known variances every test is chi-squared.

        Returns
        -------
        pandas.DataFrame
            Indexed by term: ``sum_sq, mean_sq, num_df, den_df, statistic (F), p_value``.
        """
        from .inference import anova

        return anova(self, type=type, ddf=ddf)

    def contrast(self, L: Any, ddf: str = "Satterthwaite") -> pd.Series:
        """Wald F test of ``L beta = 0`` for a contrast matrix over the estimable fixed effects.

        Parameters
        ----------
        L : array-like, pandas.Series or pandas.DataFrame
            One row per hypothesis; labelled objects are aligned by fixed-effect name.
        ddf : {"Satterthwaite", "Kenward-Roger", "none"}
            Denominator degrees of freedom.

        Returns
        -------
        pandas.Series
            ``statistic (F), num_df, den_df, p_value`` (and ``estimate``, ``std_error``,
            ``t`` for a single row).
        """
        from .inference import contrast_series

        return contrast_series(self, L, ddf)

    def confint(self, level: float = 0.95, method: str = "Wald", *,
                parm: Sequence[str] | None = None, scales: str = "vcov") -> pd.DataFrame:
        """Confidence intervals for fixed effects and variance components.

        Parameters
        ----------
        level : float
            Coverage.
        method : {"Wald", "profile"}
            ``"Wald"``: ``t`` intervals (Satterthwaite df) for fixed effects and
            normal intervals (observed information, delta method for SDs and
            correlations) for variance components, truncated at zero for variances and SDs
            and to ``[-1, 1]`` for correlations.  ``"profile"``: fixed effects as Wald,
            every variance, covariance (or correlation) and the residual variance by
            profile likelihood: ``{v : -2 log L(v) - min <= chi2_1(level)}`` with the
            other components at their conditional optimum, using the criterion of the
            fit (REML or ML; lme4's ``confint(method = "profile")`` always uses ML, so
            compare an ML fit with it).
        parm : sequence of str, optional
            Row labels to keep (only those are profiled).
        scales : {"vcov", "sdcor"}
            Variance components as variances and covariances (``var(...)``, ``cov(...)``)
            or as SDs and correlations (``sd(...)``, ``cor(...)``, lme4's scale).  A
            profile interval of an SD is the square root of the variance's; a
            correlation is profiled itself (not the covariance).

        Returns
        -------
        pandas.DataFrame
            Indexed by fixed-effect names and variance-component labels (``var(<term>)``,
            ``var(<term>:<column>)``, ``cov(<term>:<c1>,<c2>)``, ``var(Residual)``, or the
            ``sd``/``cor`` forms): ``estimate, lower, upper, method``.
        """
        from .inference import confint

        return confint(self, level=level, method=method, parm=parm, scales=scales)

    def profile(self, what: str, *, n: int = 21, width: float = 3.0) -> pd.DataFrame:
        """Profile ``-2 log L`` of one variance parameter over a grid.

        Parameters
        ----------
        what : str
            A variance-component label of :meth:`confint` (``"var(Subject:Days)"``,
            ``"cov(Subject:(Intercept),Days)"``, ``"cor(...)"``, ``"var(Residual)"``), a
            one-column term's name (its variance), ``"residual"`` or ``"h2:<term>"`` /
            ``"h2:<term>:<column>"`` (a variance's share of the total variance, see
            :meth:`heritability`).
        n : int
            Grid points.
        width : float
            The grid spans the values where ``|zeta| <= width``.

        Returns
        -------
        pandas.DataFrame
            ``value, deviance, zeta`` with ``zeta`` the signed square root of the
            deviance increase (lme4's ``profile``).
        """
        from .inference import profile

        return profile(self, what, n=n, width=width)

    def ratio(self, numerator: Any, over: Sequence[Any] | None = None, *, level: float = 0.95,
              residual_class: str | None = None) -> pd.Series:
        """A variance component as a share of a sum of components, with a delta-method SE.

        Parameters
        ----------
        numerator : str or tuple
            A term name (its variance; ``(term, column)`` for multi-column terms) or
            ``"residual"`` (with residual classes ``"residual:<class>"`` or
            ``("residual", class)``).
        over : sequence, optional
            Components summed in the denominator (the numerator is always included);
            default every variance, residual included.
        level : float
            Coverage of the Wald interval.
        residual_class : str, optional
            With ``residual_groups=``: the class whose residual variance is in the default
            denominator (required then, unless the numerator is a class's residual).
            Held components (``fixed_variances=``) count as known in the SE.

        Returns
        -------
        pandas.Series
            ``estimate, std_error, ci_lower, ci_upper`` (SE NaN with known variances).
        """
        from .inference import ratio_estimate

        return ratio_estimate(self, numerator, over, level=level, residual_class=residual_class)

    def heritability(self, term: str | None = None, over: Sequence[Any] | None = None, *,
                     level: float = 0.95, method: str = "delta", residual_class: str | None = None) -> pd.Series:
        """Heritability ``sigma2_term / (sum of variances)``, with SE and interval.

        Parameters
        ----------
        term : str, optional
            The genetic term; default the only term with a pedigree or relationship matrix.
        over : sequence, optional
            Denominator components (default: every variance, residual included).
        level : float
            Coverage of the interval.
        method : {"delta", "profile"}
            Wald interval from the delta method, or a profile-likelihood interval
            (default denominator; ``term`` may be ``(term, column)`` for one column of a
            multi-column or joint term; not with residual classes).
        residual_class : str, optional
            With ``residual_groups=``: the class whose residual variance is in the
            denominator (the heritability of records of that class); required then.

        Returns
        -------
        pandas.Series
            ``estimate, std_error, ci_lower, ci_upper``.
        """
        from .inference import heritability

        return heritability(self, term, over, level=level, method=method, residual_class=residual_class)

    # ------------------------------------------------------------------ prediction
    def predict(self, newdata: pd.DataFrame | None = None, *, include_random: bool = True,
                new_levels: str = "error", se: bool = False) -> pd.Series | pd.DataFrame:
        """Predictions for new (or the training) data, encoded like the training data.

        Parameters
        ----------
        newdata : pandas.DataFrame, optional
            Rows to predict; the training data when omitted (``predict()`` equals
            ``fitted``).  Rows with missing values in the needed columns are predicted
            as NaN (with a warning): the output always has one row per row of ``newdata``.
        include_random : bool
            Conditional predictions ``X beta + Z u`` (True) or marginal ``X beta``.
        new_levels : {"error", "population", "nan"}
            Levels of a grouping factor not seen in training (and not defined by its
            pedigree or relationship matrix): raise, predict them at the population
            level (random effect zero), or return NaN for those rows.
        se : bool
            Also return prediction standard errors: the SE of ``x'beta`` (marginal) or
            the root prediction error variance of ``x'beta + z'u`` (conditional; a new
            level adds its prior variance).

        Returns
        -------
        pandas.Series or pandas.DataFrame
            Indexed like ``newdata`` (same rows, same order); a DataFrame ``prediction, se``
            when ``se=True``.
        """
        from .predict import predict

        return predict(self, newdata, include_random=include_random, new_levels=new_levels, se=se)

    # ------------------------------------------------------------------ breeding
    def breeding_values(self, term: str | None = None) -> pd.DataFrame:
        """BLUP, PEV, SEP, reliability and accuracy per level of a random term.

        Parameters
        ----------
        term : str, optional
            Term name; default the only term with a pedigree or relationship matrix
            (or the only term).

        Returns
        -------
        pandas.DataFrame
            Indexed by level (``level, coefficient`` for multi-column terms):
            ``blup, pev, sep, reliability, accuracy, has_records``.
        """
        from .breeding import breeding_values

        return breeding_values(self, term)

    def ebv_decomposition(self, term: str | None = None, pedigree: Any = None) -> pd.DataFrame:
        """Split each animal's EBV into parent average, own records and progeny (Mrode 3.5).

        Parameters
        ----------
        term : str, optional
            A one-column pedigree term; default the only pedigree term.
        pedigree : Pedigree, optional
            The pedigree used in the fit (needed when the results do not carry it).

        Returns
        -------
        pandas.DataFrame
            Indexed by animal: ``ebv, parent_average, yield_deviation, progeny_contribution``,
            their weights ``w_pa, w_yd, w_pc`` (summing to 1) and ``n_records``, with
            ``ebv = w_pa * parent_average + w_yd * yield_deviation + w_pc * progeny_contribution``.
        """
        from .breeding import ebv_decomposition

        return ebv_decomposition(self, term, pedigree)

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path) -> Path:
        """Write the results as JSON (parameters, tables' metadata) + NPZ (arrays); no pickle.

        Parameters
        ----------
        path : str or pathlib.Path
            ``x`` or ``x.json``: writes ``x.json`` and ``x.npz``.

        Returns
        -------
        pathlib.Path
            The JSON file; load it with :func:`mixedblup.load`.

        Raises
        ------
        DataError
            Before writing anything, when the results cannot be stored exactly (a fit with
            ``solver="pcg"``; see :func:`mixedblup.io.check_savable`).
        """
        from .io import save

        return save(self, path)

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
    data: pd.DataFrame | None = None,
    structures: Sequence[Any] | None = None,
    backend: str = "auto",
    fixed_terms: Sequence[tuple[str, list[int], frozenset[str]]] | None = None,
    residual_variances: dict[str, float] | None = None,
    varpar: Any = None,
) -> MixedModelResults:
    """Assemble a :class:`MixedModelResults` from the solved equations.

    Parameters
    ----------
    formula, method, variances_known, design, cp, solution, sigmas, residual, minus_two_ll
        The fitted model (see :func:`mixedblup.fit`).
    n_cov_params : int
        Covariance parameters counted by AIC/BIC (residual included).
    diagnostics : pandas.DataFrame
        Checks that triggered (``check, level, message``); inference adds its own.
    covariance_kinds : list of str
        ``BoundCovariance.kind`` per term.
    optimizer : OptSummary, optional
        The estimation record (``None`` with known variances).
    vc_covariance : numpy.ndarray, optional
        Asymptotic covariance of the variance components.
    data : pandas.DataFrame, optional
        The data passed to ``fit``; its model columns are kept (``augment``, ``save``
        and ``predict`` after ``load``).
    structures : sequence, optional
        The covariance structure of every term (``Pedigree`` objects are used by
        :meth:`MixedModelResults.ebv_decomposition`).
    backend : str
        Factorisation back end, for later evaluations.
    fixed_terms : sequence, optional
        ``(label, columns, factors)`` of every fixed-part term (read from the formula
        encoding when omitted; :func:`mixedblup.load` passes the stored ones).
    residual_variances : dict, optional
        Residual variance per class (``fit(residual_groups=...)``): the table gets one
        ``Residual`` row per class (``term1`` = the class); ``residual`` is then the
        reference class's variance, the scale of ``cp`` (weights ``w_i / rho_g``).
    varpar : VarParInfo, optional
        Satterthwaite's information computed by estimation (held components or residual
        classes: :attr:`mixedblup.estimate.VarianceFit.varpar`); otherwise computed on
        first use by :func:`mixedblup.inference.results_varpar`.
    """
    from .inference import fixed_terms as _terms_of

    p = cp.p
    factor = solution.factor
    n_eq = factor.n
    # var(beta_hat) = C11 (relative form: times sigma_e^2)
    c11 = factor.inverse_block(np.arange(p)) * residual
    fixed_names = [n for n, k in zip(design.fixed_names, design.fixed_kept) if k]
    # fixed_effects (Satterthwaite df), the variance-component SEs and their covariance are
    # computed on first access (MixedModelResults._compute_*), from one Hessian

    # PEV: diagonal blocks of C^-1 over each level's r coefficients, mapped back by Lambda
    starts, sizes = _partition(p, cp, solution.ranks)
    blocks = factor.block_diagonal(starts, sizes) if n_eq > p else np.zeros((n_eq, 0))
    if n_eq > p:
        zz = solution.random_block_factor()
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
            "var_blup": np.clip(prior - pev, 0, None).ravel(),
            "reliability": rel.ravel(),
            "accuracy": np.sqrt(rel).ravel(),
            "cond_sd": np.sqrt(np.clip(cvar, 0, None)).ravel(),
            "has_records": np.repeat(observed, k),
        })
        rows.append(frame)
    random = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["group", "level", "term", "estimate", "std_error", "pev", "var_blup", "reliability",
                 "accuracy", "cond_sd", "has_records"]))

    vc = _variance_table(design, sigmas, residual)
    if residual_variances is not None:
        vc = pd.concat([vc[vc["group"] != RESIDUAL], pd.DataFrame(
            [{"group": RESIDUAL, "term1": str(level), "term2": "", "estimate": float(value), "std_error": np.nan,
              "sdcor": float(np.sqrt(value))} for level, value in residual_variances.items()])], ignore_index=True)
    vcov_vc = None
    if vc_covariance is not None:
        labels = pd.MultiIndex.from_frame(vc[["group", "term1", "term2"]])
        vcov_vc = pd.DataFrame(vc_covariance, index=labels, columns=labels)
        vc["std_error"] = np.sqrt(np.diag(vc_covariance))
    lazy_vc = vc_covariance is None and not variances_known and residual_variances is None
    vc_fields: dict[str, Any] = {} if lazy_vc else {"variance_components": vc, "vcov_variance_components": vcov_vc}
    if varpar is not None:
        vc_fields["_varpar"] = varpar
    Xb = design.X @ solution.beta
    Zu = design.Z @ solution.u if design.terms else np.zeros(design.n)
    fitted = pd.Series(Xb + Zu, index=design.index, name="fitted")
    resid = pd.Series(design.y - fitted.to_numpy(), index=design.index, name="residuals")
    npar = p + len(fixed_level_equations(cp)) + n_cov_params  # fixed genetic groups are fixed effects
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
        **vc_fields,
        vcov_fixed=pd.DataFrame(c11, index=fixed_names, columns=fixed_names),
        loglik=loglik, aic=-2 * loglik + 2 * npar, bic=-2 * loglik + npar * np.log(design.n),
        nobs=design.n, fitted=fitted, residuals=resid, dropped_rows=design.dropped_rows,
        diagnostics=diagnostics, optimizer=optimizer,
        _random=random, _design=design, _cp=cp, _solution=solution,
        _sigmas=tuple(np.atleast_2d(np.asarray(x, dtype=float)) for x in sigmas), _residual=float(residual),
        _terms_info=info, npar=int(npar), _minus_two_ll=float(minus_two_ll),
        _frame=_model_frame(data, design, formula), _structures=None if structures is None else tuple(structures),
        _backend=backend,
        _fixed_terms=tuple(fixed_terms) if fixed_terms is not None else tuple(_terms_of(design)),
    )


def _model_frame(data: pd.DataFrame | None, design: Design, formula: str) -> pd.DataFrame | None:
    """The model's columns of the kept rows (what ``augment``, ``save`` and ``predict`` reuse)."""
    if data is None:
        return None
    from .design import kept_rows
    from .formula import parse_formula

    cols = list(parse_formula(formula, data.columns).variables)
    return kept_rows(data, design)[cols].copy()


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
