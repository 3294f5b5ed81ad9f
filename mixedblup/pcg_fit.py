"""The iterative path of :func:`mixedblup.fit`: ``solver="pcg"`` (known variances).

``fit(..., variances=..., solver="pcg")`` solves Henderson's equations by
preconditioned conjugate gradients (:func:`mixedblup.iterative.solve_pcg`) instead of
factorising them.  Cross products are not formed and nothing is factorised: the
operator is built from the :class:`~mixedblup.design.Design` (records) and the
covariance structures, a pedigree through its parent positions (``A^-1`` is never
assembled).  Memory stays close to the data.

The results are those of the direct path -- BLUE, BLUP, fitted values, residuals,
predictions -- except what needs the inverse of the coefficient matrix: standard errors
and tests of fixed effects, PEV, exact reliabilities and the log-likelihood (AIC, BIC)
are NaN (``vcov_fixed`` is a table of NaN, empty beyond :data:`VCOV_MAX` fixed
effects), with a :class:`~mixedblup.iterative.PCGInferenceWarning` at fit time and a
note in ``summary()``; what cannot be computed at all (``predict(se=True)``, ``mme``,
type I ``anova``, ``save``) raises :class:`~mixedblup.errors.EstimationError` naming
``solver="pcg"``.  One-column pedigree terms get approximate reliabilities
(:func:`mixedblup.reliability.approximate_reliability`) in a column
``reliability_approx``.  ``res.solver_info`` (:class:`~mixedblup.iterative.SolverInfo`)
records the iteration.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._arrays import distinct
from ._logging import progress_log
from .covariance import BoundCovariance, Identity, PedigreeCovariance
from .design import Design, kept_rows
from .errors import ConvergenceWarning, CovarianceError, EstimationError
from .iterative import (
    DEFAULT_TOL,
    PCGInferenceWarning,
    PCGResult,
    SolverInfo,
    choose_solver,
    solve_pcg,
)
from .results import MixedModelResults

__all__ = ["SOLVER_OPTIONS", "VCOV_MAX", "parse_solver_options", "resolve_solver", "fit_pcg",
           "IterativeSolution"]

logger = logging.getLogger("mixedblup.iterative")

#: Keys of ``fit(..., solver_options=...)`` and their defaults.
SOLVER_OPTIONS: dict[str, Any] = {
    "tol": DEFAULT_TOL,
    "max_iter": None,
    "preconditioner": "auto",
    "warm_start": None,
    "callback": None,
    "engine": "auto",
    "reorder": True,
    "log_interval": 10.0,
    "max_seconds": None,
    "reliability": True,
}

#: Largest number of fixed effects for which ``vcov_fixed`` is a ``p x p`` table of NaN
#: (empty beyond).
VCOV_MAX = 2000

_UNAVAILABLE = (
    "{what} is not available from a fit with solver='pcg', which neither assembles nor factorises the "
    "mixed model equations (standard errors, PEV, prediction errors, likelihoods and tests need them); "
    "refit with solver='direct' (feasible up to about 10^5 equations)"
)


def parse_solver_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``solver_options`` completed with the defaults of :data:`SOLVER_OPTIONS`.

    Parameters
    ----------
    options : mapping, optional
        ``fit(..., solver_options=...)``.

    Returns
    -------
    dict
        Every key of :data:`SOLVER_OPTIONS`.

    Raises
    ------
    ValueError
        An unknown key (the message lists the valid ones).
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise ValueError(f"unknown solver_options {unknown}; the options are {sorted(SOLVER_OPTIONS)}")
    return {**SOLVER_OPTIONS, **options}


def _is_positive_definite(sigma: np.ndarray) -> bool:
    sigma = np.atleast_2d(np.asarray(sigma, dtype=float))
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        return False
    return bool(np.diag(chol).min() ** 2 > 1e-12 * np.diag(sigma).max())


def resolve_solver(solver: str, design: Design, variances_known: bool,
                   sigmas: Sequence[np.ndarray] | None = None) -> str:
    """``"direct"`` or ``"pcg"`` for a fit (see :func:`~mixedblup.iterative.choose_solver`).

    ``"auto"`` takes PCG from :data:`~mixedblup.iterative.PCG_MIN_EQUATIONS` equations
    on when the variances are known and every term's covariance matrix is positive
    definite (Henderson's equations need ``Sigma^-1``; the direct solver does not).

    Parameters
    ----------
    solver : {"auto", "direct", "pcg"}
    design : Design
    variances_known : bool
    sigmas : sequence of numpy.ndarray, optional
        The given ``Sigma_t``, checked for ``"auto"``.

    Returns
    -------
    str
    """
    n_equations = design.p + sum(t.Z.shape[1] for t in design.terms)
    chosen = choose_solver(n_equations, requested=solver, variances_known=variances_known)
    if solver == "auto" and chosen == "pcg" and sigmas is not None and not all(
            _is_positive_definite(s) for s in sigmas):
        logger.info("solver='auto': %d equations but a singular covariance matrix; using the direct "
                    "solver", n_equations)
        return "direct"
    if solver == "auto":
        logger.info("solver='auto': %d equations, %s solver", n_equations, chosen)
    return chosen


# --------------------------------------------------------------------------------------
# stand-ins for the factorised equations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IterativeSolution:
    """The solutions of a PCG fit, in the place of :class:`~mixedblup.mme.Solution`.

    Attributes
    ----------
    beta : numpy.ndarray
        Estimable fixed effects (columns of ``X``).
    u : numpy.ndarray
        Random effects in ``Z``'s column order.
    result : PCGResult
        The solver's record.

    Notes
    -----
    There is no factor: ``factor``, ``T`` and ``ranks`` raise
    :class:`~mixedblup.errors.EstimationError` naming ``solver="pcg"``.
    """

    beta: np.ndarray
    u: np.ndarray
    result: PCGResult

    @property
    def x(self) -> np.ndarray:
        """``[beta, u]`` (a warm start for another solve)."""
        return np.concatenate([self.beta, self.u])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise EstimationError(_UNAVAILABLE.format(what=f"the factorisation ({name!r})"))


@dataclass(frozen=True, eq=False)
class _NoCrossProducts:
    """Stands in for :class:`~mixedblup.mme.CrossProducts` on the PCG path (none are formed)."""

    p: int
    n: int
    offsets: tuple[int, ...]
    ks: tuple[int, ...]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise EstimationError(_UNAVAILABLE.format(what=f"the cross products ({name!r})"))


@dataclass(frozen=True)
class _Kind:
    """What :func:`~mixedblup.checks.run_checks` reads of a bound covariance (no ``A^-1`` built)."""

    kind: str

    @property
    def is_identity(self) -> bool:
        return self.kind == "identity"


# --------------------------------------------------------------------------------------
# the fit
# --------------------------------------------------------------------------------------


def _warm_start(value: Any, n_equations: int) -> np.ndarray | None:
    """``[beta, u]`` from a previous result, a PCGResult or a vector."""
    if value is None:
        return None
    if isinstance(value, MixedModelResults):
        x = np.concatenate([value._solution.beta, value._solution.u])
    elif isinstance(value, (PCGResult, IterativeSolution)):
        x = value.x
    else:
        x = np.asarray(value, dtype=float).ravel()
    if x.shape != (n_equations,):
        raise ValueError(
            f"warm_start has {x.shape[0]} values; the equations have order {n_equations} (give the "
            "results of a fit of the same model and data, or [beta, u] in their order)"
        )
    return x


def _pcg_covariance(structure: Any, levels: pd.Index) -> tuple[Any, str]:
    """What :func:`solve_pcg` gets for a term, and the term's covariance kind.

    A pedigree is passed as such (applied from parent positions, ``A^-1`` not
    assembled); identity as ``None``; other structures are bound to the levels.
    """
    if isinstance(structure, Identity):
        return None, "identity"
    if type(structure) is PedigreeCovariance:
        return structure, "pedigree"
    bound = structure.bind(pd.Index(levels, dtype=object))
    if not isinstance(bound, BoundCovariance):
        raise CovarianceError(f"{type(structure).__name__}.bind did not return a BoundCovariance")
    return bound, bound.kind


def _contemporary_groups(design: Design, data: pd.DataFrame | None, t_i: int, animal_pos: np.ndarray,
                         sigmas: Sequence[np.ndarray]) -> tuple[np.ndarray | None, float | None, float | None]:
    """Contemporary groups, their variance (random groups) and a permanent-environment variance.

    The group is the factor with the most levels among the fixed factors that are data
    columns and the other one-column intercept terms with independent levels; an
    independent term whose levels each belong to one animal is a permanent environment.
    """
    from .inference import fixed_terms

    candidates: list[tuple[int, np.ndarray, float | None]] = []
    pe = None
    for j, term in enumerate(design.terms):
        if j == t_i or term.k != 1 or term.columns != ("(Intercept)",) or term.term.kind != "levels":
            continue
        Z = term.Z.tocsr()
        if not np.all(np.diff(Z.indptr) == 1):
            continue
        codes = Z.indices.astype(np.int64)
        sigma = float(np.atleast_2d(sigmas[j])[0, 0])
        if not sigma > 0:
            continue
        pairs = distinct(codes * (int(animal_pos.max()) + 1) + animal_pos)
        n_levels = distinct(codes).size
        if pe is None and len(pairs) == n_levels:  # nested in animals
            pe = sigma
            continue
        candidates.append((int(n_levels), codes, sigma))
    if data is not None:
        for _label, cols, factors in fixed_terms(design):
            if len(factors) != 1 or len(cols) < 2:
                continue
            (factor,) = tuple(factors)
            if factor in data.columns:
                codes = pd.factorize(kept_rows(data, design)[factor])[0]
                if (codes >= 0).all():
                    candidates.append((int(codes.max()) + 1, codes, None))
    if not candidates:
        return None, None, pe
    _, codes, variance = max(candidates, key=lambda c: c[0])
    return codes, variance, pe


def _approximate_reliabilities(design: Design, structures: Sequence[Any], sigmas: Sequence[np.ndarray],
                               residual: float, data: pd.DataFrame | None) -> dict[int, np.ndarray]:
    """``reliability_approx`` per level of every one-column pedigree term (intercept only)."""
    from .reliability import approximate_reliability_from_positions

    out: dict[int, np.ndarray] = {}
    for t_i, (term, structure) in enumerate(zip(design.terms, structures)):
        if (type(structure) is not PedigreeCovariance or term.k != 1 or term.columns != ("(Intercept)",)
                or term.term.kind != "levels" or term.members):
            continue
        Z = term.Z.tocsr()
        if not (np.all(np.diff(Z.indptr) == 1) and np.all(Z.data == 1.0)):
            continue
        additive = float(np.atleast_2d(sigmas[t_i])[0, 0])
        if not additive > 0:
            continue
        positions = Z.indices.astype(np.int64)
        groups, group_variance, pe = _contemporary_groups(design, data, t_i, positions, sigmas)
        table = approximate_reliability_from_positions(
            structure.pedigree, positions, additive=additive, residual=residual, groups=groups,
            group_variance=group_variance, pe=pe, weights=design.weights,
        )
        out[t_i] = table["approx_reliability"].to_numpy()
    return out


def fit_pcg(
    *,
    formula: str,
    method: str,
    design: Design,
    structures: Sequence[Any],
    variances: Mapping[str, Any],
    data: pd.DataFrame | None,
    check_levels: Mapping[str, str],
    options: Mapping[str, Any] | None = None,
    verbose: bool = False,
) -> MixedModelResults:
    """Fit a model with known variances by PCG (the ``solver="pcg"`` branch of :func:`mixedblup.fit`).

    Parameters
    ----------
    formula, method : str
        As given to ``fit``.
    design : Design
        The model's design (dense or sparse ``X``; rank-deficient columns already dropped).
    structures : sequence
        The covariance structure of every term of ``design`` (unbound).
    variances : mapping
        Known variance components (``variances=`` of ``fit``).
    data : pandas.DataFrame, optional
        The data passed to ``fit`` (checks, ``augment``, contemporary groups of the
        approximate reliabilities).
    check_levels : mapping
        Levels of the data checks.
    options : mapping, optional
        ``solver_options`` of ``fit``; see :data:`SOLVER_OPTIONS`.
    verbose : bool
        Show the solver's progress messages on stderr (``logging``).

    Returns
    -------
    MixedModelResults
        With ``solver_info`` set and NaN for quantities that need ``C^-1``.
    """
    from .checks import run_checks
    from .inference import fixed_terms as _terms_of
    from .results import _model_frame, _variance_table
    from .variances import parse_variances

    opts = parse_solver_options(options)
    sigmas, residual = parse_variances(variances, design.terms)
    pcg_covs, kinds = [], []
    for term, structure in zip(design.terms, structures):
        cov, kind = _pcg_covariance(structure, term.levels)
        pcg_covs.append(cov)
        kinds.append(kind)
    diagnostics = run_checks(design, [_Kind(k) for k in kinds], check_levels, estimating=False, data=data)
    n_eq = design.p + sum(t.Z.shape[1] for t in design.terms)
    x0 = _warm_start(opts["warm_start"], n_eq)
    with progress_log(logger, verbose):
        result = solve_pcg(
            design, pcg_covs, sigmas, residual, tol=float(opts["tol"]), max_iter=opts["max_iter"], x0=x0,
            preconditioner=opts["preconditioner"], callback=opts["callback"], engine=opts["engine"],
            reorder=bool(opts["reorder"]), log_interval=float(opts["log_interval"]),
            max_seconds=opts["max_seconds"],
        )
    if not result.converged:
        why = ("was stopped early (callback, max_seconds or interrupt)" if result.interrupted
               else f"did not converge in {result.iterations} iterations")
        warnings.warn(
            f"PCG {why}: achieved accuracy ||b - Cx||^2/||b||^2 = {result.accuracy:.3e} > tol = "
            f"{result.tol:.1e} at iteration {result.iterations}; the estimates are an intermediate "
            "iterate (pass the results as solver_options={'warm_start': res} to continue, or raise "
            "max_iter)",
            ConvergenceWarning,
            stacklevel=3,
        )
    approx = _approximate_reliabilities(design, structures, sigmas, residual, data) if opts["reliability"] else {}
    from .reliability import METHOD

    info = SolverInfo.from_result(result, reliability=METHOD if approx else None)
    message = ("solver='pcg': standard errors and tests of fixed effects, PEV, exact reliabilities and "
               "the log-likelihood (AIC, BIC) need the inverse of the coefficient matrix and are NaN")
    if approx:
        message += "; approximate reliabilities are in random_effects()['reliability_approx']"
    warnings.warn(message, PCGInferenceWarning, stacklevel=3)

    p = design.p
    beta, u = result.beta, result.u
    fixed_names = [n for n, k in zip(design.fixed_names, design.fixed_kept) if k]
    nan_beta = np.full(p, np.nan)
    fe = pd.DataFrame(
        {"estimate": beta, "std_error": nan_beta, "df": np.full(p, np.inf), "statistic": nan_beta,
         "p_value": nan_beta, "ci_lower": nan_beta, "ci_upper": nan_beta},
        index=pd.Index(fixed_names, name="term"),
    ).reindex(pd.Index(design.fixed_names, name="term"))
    fe["dropped"] = ~design.fixed_kept
    # var(beta_hat) is unknown; a p x p table of NaN only while it is small (30,000 herd-years
    # would make it 7 GB): beyond VCOV_MAX fixed effects it is empty
    vcov = (pd.DataFrame(np.full((p, p), np.nan), index=fixed_names, columns=fixed_names) if p <= VCOV_MAX
            else pd.DataFrame(index=pd.Index([], dtype=object), columns=pd.Index([], dtype=object), dtype=float))

    rows = []
    offset = 0
    offsets = []
    for t_i, term in enumerate(design.terms):
        q, k = len(term.levels), term.k
        offsets.append(offset)
        u_t = u[offset: offset + q * k]
        offset += q * k
        observed = np.asarray(abs(term.Z).sum(axis=0)).ravel().reshape(q, k).any(axis=1)
        nan = np.full(q * k, np.nan)
        rel = approx.get(t_i)
        rows.append(pd.DataFrame({
            "group": term.name,
            # one column per level: no copies of 10^6 labels (the frame converts them once)
            "level": np.asarray(term.levels, dtype=object) if k == 1 else np.repeat(
                np.asarray(term.levels, dtype=object), k),
            "term": term.columns[0] if k == 1 else np.tile(np.asarray(term.columns, dtype=object), q),
            "estimate": u_t,
            "std_error": nan, "pev": nan, "var_blup": nan, "reliability": nan, "accuracy": nan,
            "cond_sd": nan,
            "has_records": np.repeat(observed, k),
            "reliability_approx": nan if rel is None else np.repeat(rel, k),
        }))
    random = (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["group", "level", "term", "estimate", "std_error", "pev", "var_blup", "reliability",
                 "accuracy", "cond_sd", "has_records", "reliability_approx"]))

    vc = _variance_table(design, sigmas, residual)
    Xb = np.asarray(design.X @ beta).ravel()
    Zu = np.zeros(design.n)
    for term, off in zip(design.terms, offsets):
        Zu += np.asarray(term.Z @ u[off: off + term.Z.shape[1]]).ravel()
    fitted = pd.Series(Xb + Zu, index=design.index, name="fitted")
    resid = pd.Series(design.y - fitted.to_numpy(), index=design.index, name="residuals")
    n_cov = sum(t.k * (t.k + 1) // 2 if t.term.correlated else t.k for t in design.terms) + 1
    npar = p + n_cov
    terms_info = pd.DataFrame(
        {"columns": [t.columns for t in design.terms],
         "covariance": kinds,
         "n_levels": [len(t.levels) for t in design.terms],
         "n_observed": [t.n_observed for t in design.terms],
         "correlated": [t.term.correlated for t in design.terms]},
        index=pd.Index([t.name for t in design.terms], name="group"),
    )
    solution = IterativeSolution(beta=beta, u=u, result=result)
    cp = _NoCrossProducts(p=p, n=design.n, offsets=tuple(offsets), ks=tuple(t.k for t in design.terms))
    return MixedModelResults(
        formula=formula, method=method, variances_known=True,
        fixed_effects=fe, variance_components=vc,
        vcov_fixed=vcov,
        loglik=np.nan, aic=np.nan, bic=np.nan,
        nobs=design.n, fitted=fitted, residuals=resid, dropped_rows=design.dropped_rows,
        diagnostics=diagnostics, optimizer=None, vcov_variance_components=None,
        _random=random, _design=design, _cp=cp, _solution=solution,
        _sigmas=tuple(np.atleast_2d(np.asarray(x, dtype=float)) for x in sigmas), _residual=float(residual),
        _terms_info=terms_info, npar=int(npar), _minus_two_ll=np.nan, _varpar=None,
        _frame=_model_frame(data, design, formula), _structures=tuple(structures), _backend="pcg",
        _fixed_terms=tuple(_terms_of(design)), solver_info=info,
    )
