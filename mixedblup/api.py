"""``fit``: the one-liner, a literal composition of the stages.

parse -> covariance -> design -> equations -> (objective -> optimise) -> results
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .checks import resolve_checks, run_checks
from .covariance import CovarianceStructure, as_covariance
from .design import build_design, joint_name, term_names
from .errors import CovarianceError, DataWarning, FormulaError
from .formula import FormulaSpec, parse_formula
from .interop import as_pandas
from .mme import cross_products, minus_two_loglik, relative_factor, solve_mme
from .results import MixedModelResults, build_results
from .variances import parse_variances

__all__ = ["fit", "resolve_covariances", "CovarianceSpec", "METHODS"]

#: Likelihoods mixedblup evaluates.
METHODS = ("REML", "ML")


@dataclass(frozen=True)
class CovarianceSpec:
    """Resolved ``cov=``: a structure per term name, and the groups of terms sharing one.

    Attributes
    ----------
    structures : dict
        Term name (and joint-term name) -> covariance structure.
    joint : tuple of tuples of str
        Groups of term names that share one structure with an unstructured covariance
        between them (from tuple keys such as ``("animal", "dam")``).
    """

    structures: dict[str, CovarianceStructure]
    joint: tuple[tuple[str, ...], ...]


def resolve_covariances(spec: FormulaSpec, cov: Mapping[Any, Any] | None) -> CovarianceSpec:
    """Covariance structure of every random term, by term name.

    ``cov`` maps a grouping factor (``"animal"``, ``"cask:batch"``) to a
    :class:`~mixedblup.Pedigree`, a :class:`~mixedblup.Relationship` or ``None``;
    it applies to every term with that grouping factor.  A tuple of grouping factors
    as key, ``cov={("animal", "dam"): ped}``, makes their terms share the structure
    with an unstructured covariance between them (direct-maternal, direct-social
    effects): they become one joint term named ``"animal,dam"``.  Terms not named get
    :class:`~mixedblup.covariance.Identity`.
    """
    def norm(key: str) -> str:
        return "".join(key.split())  # "mates(animal, pen)" == "mates(animal,pen)"

    cov = {(tuple(norm(k) for k in key) if isinstance(key, tuple) else norm(key)): value
           for key, value in dict(cov or {}).items()}
    names = term_names(spec.random)
    groups = [t.group for t in spec.random]
    by_group: dict[str, Any] = {}
    joint: list[tuple[str, ...]] = []
    for key, value in cov.items():
        members = key if isinstance(key, tuple) else (key,)
        for member in members:
            if member not in groups:
                raise CovarianceError(
                    f"cov names {member!r}, which is not a grouping factor of the formula; the "
                    f"grouping factors are {sorted(set(groups))}"
                )
            if member in by_group:
                raise CovarianceError(f"cov gives grouping factor {member!r} twice")
            by_group[member] = value
        if isinstance(key, tuple):
            if len(set(key)) < 2:
                raise CovarianceError(f"cov key {key!r}: a shared covariance needs two or more grouping factors")
            for member in key:
                if groups.count(member) != 1:
                    raise CovarianceError(
                        f"grouping factor {member!r} has {groups.count(member)} terms; a shared "
                        "covariance needs exactly one term per grouping factor"
                    )
            joint.append(tuple(key))
    structures = {name: as_covariance(by_group.get(group), name) for name, group in zip(names, groups)}
    for group in joint:
        structures[joint_name(group)] = structures[group[0]]
        for member in group[1:]:
            structures[member] = structures[group[0]]
    return CovarianceSpec(structures, tuple(joint))


def _warn_fixed_and_random(spec: FormulaSpec) -> list[str]:
    """B9: a factor used both as a fixed effect and as a grouping factor."""
    fixed_tokens = set(spec.fixed.replace("(", " ").replace(")", " ").replace("+", " ")
                       .replace(":", " ").replace("*", " ").split())
    both = sorted({t.group for t in spec.random if len(t.factors) == 1 and t.factors[0] in fixed_tokens})
    for name in both:
        warnings.warn(
            f"{name!r} appears as both a fixed effect and a grouping factor; its random-effect "
            "variance is not identifiable and its BLUPs are confounded with the fixed effects",
            DataWarning,
            stacklevel=3,
        )
    return both


def fit(
    formula: str,
    data: pd.DataFrame,
    *,
    cov: Mapping[str, Any] | None = None,
    variances: Mapping[str, Any] | None = None,
    method: str = "REML",
    weights: str | None = None,
    na_action: str = "drop",
    backend: str = "auto",
    start: Mapping[str, Any] | None = None,
    verbose: bool = False,
    checks: Mapping[str, str] | None = None,
) -> MixedModelResults:
    """Fit a linear mixed model given by an lme4-style formula.

    Parameters
    ----------
    formula : str
        ``"y ~ fixed + (expr | group)"``; see :func:`~mixedblup.formula.parse_formula`.
    data : pandas.DataFrame or polars.DataFrame
        One row per observation.  Only the formula's columns are used.  Other frame
        libraries are converted by :func:`mixedblup.interop.as_pandas`.
    cov : dict, optional
        Grouping factor -> covariance of its levels: a :class:`~mixedblup.Pedigree`
        (numerator relationship matrix through its sparse inverse), a
        :class:`~mixedblup.Relationship` (user G or G-inverse, matched by label) or
        ``None`` (independent levels).  Levels defined by the structure but without
        records (ancestors) get BLUPs.  A tuple key, ``{("animal", "dam"): ped}``,
        makes the terms share the structure with an unstructured covariance between
        them (one joint term ``"animal,dam"``; its variances are given as a matrix).
    variances : dict, optional
        Known variance components: term name -> variance (or ``k x k`` covariance
        matrix for ``(x | g)``), and ``"residual"``.  The textbook BLUP path.
    method : {"REML", "ML"}
        Likelihood reported (and, when variances are estimated, maximised).
    weights : str, optional
        Column of precision weights: ``var(e_i) = sigma_e^2 / w_i``.
    na_action : {"drop", "raise"}
        Rows with missing values in model columns are dropped with a warning, or raise.
    backend : {"auto", "dense", "schur", "ldl", "splu", "cholmod"}
        Factorisation back end of the equations (see :func:`mixedblup.factor.factorize`):
        ``"auto"`` picks dense for small systems, ``"schur"`` when a large term with
        independent levels can be eliminated, CHOLMOD when scikit-sparse is installed,
        otherwise mixedblup's own sparse LDL' (with selected inversion for PEV).
    start : dict, optional
        Starting values for estimation, in the form of ``variances`` (every term and
        ``"residual"``); only their ratios matter (the residual is profiled out).
    verbose : bool
        Log every criterion evaluation to stderr (through ``logging``) while estimating.
    checks : dict, optional
        Levels of the data checks, e.g. ``{"nlev_gt_1": "warn"}``; see
        :data:`mixedblup.checks.CHECKS` for the names and defaults.

    Returns
    -------
    MixedModelResults

    Examples
    --------
    >>> import mixedblup as mb
    >>> pigs = mb.datasets.load("pigs")
    >>> res = mb.fit("weight ~ 0 + sex + (1|dam)", pigs,
    ...              variances={"dam": 0.016, "residual": 0.08})
    >>> res.fixed_effects["estimate"].round(4).tolist()
    [1.7195, 1.4681]
    """
    check_levels = resolve_checks(checks)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    data = as_pandas(data)  # polars and other frames are converted, categoricals and string IDs kept
    spec = parse_formula(formula, data.columns)
    if not spec.random:
        raise FormulaError(
            f"formula {formula!r} contains no random-effect terms such as (1 | group); this is not "
            "a mixed model (use ordinary least squares, e.g. statsmodels' OLS)"
        )
    _warn_fixed_and_random(spec)
    covs = resolve_covariances(spec, cov)
    design = build_design(
        spec, data, levels={name: s.labels for name, s in covs.structures.items()},
        na_action=na_action, weights=weights, joint=covs.joint,
    )
    bound = [covs.structures[t.name].bind(t.levels) for t in design.terms]
    diagnostics = run_checks(design, bound, check_levels, estimating=variances is None, data=data)
    cp = cross_products(design, bound)
    if variances is None:
        from .estimate import estimate_variances, variance_component_covariance

        theta0 = None
        if start is not None:
            from .estimate import ThetaMap

            s_sig, s_res = parse_variances(start, design.terms)
            theta0 = ThetaMap.for_design(design).theta([relative_factor(x, s_res) for x in s_sig])
        sigmas, residual, optimizer = estimate_variances(cp, design, method=method, backend=backend,
                                                         start=theta0, verbose=verbose)
        vc_cov = variance_component_covariance(cp, design, sigmas, residual, method == "REML", backend,
                                               boundary=optimizer.boundary)
        known = False
    else:
        sigmas, residual = parse_variances(variances, design.terms)
        known, optimizer, vc_cov = True, None, None
    lambdas = [relative_factor(s, residual) for s in sigmas]
    sol = solve_mme(cp, lambdas, backend)
    reml = method == "REML"
    logdet_schur = None
    if not reml:
        c11 = sol.factor.inverse_columns(np.arange(cp.p), np.arange(cp.p))
        logdet_schur = -float(np.linalg.slogdet(c11)[1]) if cp.p else 0.0
    m2ll = minus_two_loglik(cp, sol, residual, reml, logdet_schur)
    n_cov = sum(t.k * (t.k + 1) // 2 if t.term.correlated else t.k for t in design.terms) + 1
    return build_results(
        formula=formula, method=method, variances_known=known, design=design, cp=cp,
        solution=sol, sigmas=sigmas, residual=residual, minus_two_ll=m2ll, n_cov_params=n_cov,
        diagnostics=diagnostics, covariance_kinds=[b.kind for b in bound], optimizer=optimizer,
        vc_covariance=vc_cov, data=data, structures=[covs.structures[t.name] for t in design.terms],
        backend=backend,
    )
