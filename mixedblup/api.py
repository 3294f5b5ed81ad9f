"""``fit``: the one-liner, a literal composition of the stages.

parse -> covariance -> design -> equations -> (objective -> optimise) -> results
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .checks import resolve_checks, run_checks
from .covariance import CovarianceStructure, as_covariance
from .design import build_design, joint_name, term_names
from .errors import CovarianceError, FormulaError, MixedBlupError
from .formula import FormulaSpec, parse_formula
from .genetic_groups import confounded_group_references
from .interop import as_pandas
from .mme import cross_products, minus_two_loglik, relative_factor, solve_mme
from .results import MixedModelResults, build_results
from .variances import parse_held_variances, parse_variances

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


#: Smallest relative pivot of the equations below which fit notes the conditioning (E7).
ILL_CONDITIONED_PIVOT = 1e-8


def fit_diagnostics(diagnostics: pd.DataFrame | None, optimizer: Any, terms: Any,
                    structures: Any, cp: Any = None, factor: Any = None) -> pd.DataFrame:
    """Add to ``diagnostics`` what estimation and covariance intake reported (E1, E5, D3/D4).

    Rows: ``covariance_adjustment`` (level ``note``) for every explicit adjustment of a
    user matrix (tune, blend, nearest_pd), ``singular_fit`` for each term on the
    boundary and ``convergence`` when the optimiser did not converge (level ``warn``;
    the warnings themselves were issued by the optimiser), and ``conditioning`` (level
    ``note``) when the smallest relative pivot of the coefficient matrix is below
    :data:`ILL_CONDITIONED_PIVOT` (the equation and about how many digits survive).
    """
    rows = []
    seen: set[int] = set()
    for term, structure in zip(terms, structures):
        if id(structure) in seen:
            continue
        seen.add(id(structure))
        for adj in getattr(structure, "adjustments", ()) or ():
            rows.append({"check": "covariance_adjustment", "level": "note",
                         "message": f"term {term.name!r}: {getattr(adj, 'description', adj)}"})
    for name in getattr(optimizer, "boundary", ()) or ():
        rows.append({"check": "singular_fit", "level": "warn",
                     "message": f"boundary (singular) fit: a variance of term {name!r} is estimated as "
                                "exactly zero; ratios such as heritability are 0 there (use "
                                "method='profile' intervals)"})
    if optimizer is not None and not getattr(optimizer, "converged", True):
        rows.append({"check": "convergence", "level": "warn",
                     "message": f"the optimiser did not converge ({getattr(optimizer, 'message', '')}); "
                                f"max |gradient| = {getattr(optimizer, 'gradient_norm', float('nan')):.3g}"})
    pivot = float(getattr(factor, "min_pivot", np.nan))
    if cp is not None and np.isfinite(pivot) and pivot < ILL_CONDITIONED_PIVOT:
        from .mme import equation_label

        where = equation_label(cp, int(factor.min_pivot_equation))[1]
        rows.append({"check": "conditioning", "level": "note",
                     "message": f"the mixed model equations are ill-conditioned: smallest relative pivot "
                                f"{pivot:.2g} at {where} (about {max(0, int(16 + np.log10(pivot)))} "
                                "significant digits survive in that direction); look for nearly "
                                "confounded effects or extreme variance ratios"})
    if not rows:
        return diagnostics
    extra = pd.DataFrame(rows, columns=["check", "level", "message"])
    if diagnostics is None or diagnostics.empty:
        return extra
    return pd.concat([diagnostics, extra], ignore_index=True)


def fit(
    formula: str,
    data: pd.DataFrame,
    *,
    cov: Mapping[str, Any] | None = None,
    variances: Mapping[str, Any] | None = None,
    method: str = "REML",
    weights: str | None = None,
    residual_groups: str | None = None,
    fixed_variances: Mapping[str, Any] | None = None,
    na_action: str = "drop",
    backend: str = "auto",
    start: Mapping[str, Any] | None = None,
    verbose: bool = False,
    checks: Mapping[str, str] | None = None,
    allow_large: bool = False,
    missing_code: float | None = None,
    solver: str = "auto",
    solver_options: Mapping[str, Any] | None = None,
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
        matrix for ``(x | g)``), and ``"residual"``.  The textbook BLUP path: every
        component must be given (to estimate some, use ``fixed_variances=``).  With
        ``residual_groups=``, ``"residual"`` takes a dict class -> variance.
    method : {"REML", "ML"}
        Likelihood reported (and, when variances are estimated, maximised).
    weights : str, optional
        Column of precision weights: ``var(e_i) = sigma_e^2 / w_i``.
    residual_groups : str, optional
        Column whose classes each have their own residual variance:
        ``var(e_i) = sigma^2_{g(i)} / w_i``.  The variances are estimated (or given in
        ``variances={"residual": {class: value}}``); the variance components table has
        one ``Residual`` row per class (``term1`` = class) and ``res.residual_variance``
        is that of the reference class (the first estimated one).
    fixed_variances : dict, optional
        Components held at given values while the others are estimated by ``method``,
        in the form of ``variances`` but partial, e.g. ``{"dam": 0.3}``,
        ``{"residual": 40}`` or (with ``residual_groups=``) ``{"residual": {"A": 1.0}}``.
        The likelihood is maximised over the other components with these known;
        ``res.optimizer.held`` lists them, their standard errors are NaN and AIC/BIC
        count only the estimated parameters.  Cannot be combined with ``variances``.
        See ``docs/estimation.md``.
    na_action : {"drop", "raise"}
        Rows with missing values in model columns are dropped with a warning, or raise.
    backend : {"auto", "dense", "schur", "ldl", "splu", "cholmod"}
        Factorisation back end of the equations (see :func:`mixedblup.factor.factorize`):
        ``"auto"`` picks dense for small systems, ``"schur"`` when a large term with
        independent levels can be eliminated,
        otherwise mixedblup's own sparse LDL' (with selected inversion for PEV).
    start : dict, optional
        Starting values for estimation, in the form of ``variances`` (every term and
        ``"residual"``); only their ratios matter (the residual is profiled out).
    verbose : bool
        Log every criterion evaluation to stderr (through ``logging``) while estimating.
    checks : dict, optional
        Levels of the data checks, e.g. ``{"nlev_gt_1": "warn"}``; see
        :data:`mixedblup.checks.CHECKS` for the names and defaults.  Levels are
        ``"error"``, ``"warn"``, ``"note"`` (recorded in ``diagnostics`` only) and
        ``"ignore"``; unknown names or levels are an error.
    allow_large : bool
        Build the model even when the design and cross products are estimated to need
        more than :data:`mixedblup.design.MEMORY_LIMIT` bytes (otherwise a
        :class:`~mixedblup.errors.ResourceError` is raised before anything large is
        allocated).
    missing_code : float, optional
        A value meaning "missing" in the numeric model columns (e.g. ``-999``).  There is
        no sentinel by default (only NaN is missing, a measured 0 is a 0); matches are
        counted in a :class:`~mixedblup.errors.DataWarning` and the rows are dropped like
        other missing values.
    solver : {"auto", "direct", "pcg"}
        How the mixed model equations are solved.  ``"direct"`` factorises them (exact
        standard errors, PEV, likelihood; needed to estimate variances).  ``"pcg"``
        iterates (preconditioned conjugate gradients, matrix-free, a pedigree applied
        from parent positions; see :mod:`mixedblup.pcg_fit`): known ``variances=`` only,
        memory close to the data, BLUE and BLUP to the stopping rule, but standard
        errors, PEV, exact reliabilities and ``loglik``/AIC/BIC are NaN (with a
        :class:`~mixedblup.iterative.PCGInferenceWarning`); one-column pedigree terms
        get approximate reliabilities (``random_effects()["reliability_approx"]``) and
        ``res.solver_info`` records the iteration.  ``"auto"``: PCG when the variances
        are known and the equations number at least
        :data:`~mixedblup.iterative.PCG_MIN_EQUATIONS` (100,000), otherwise direct.
    solver_options : dict, optional
        Options of the PCG solver (ignored when the direct solver is used):
        ``tol`` (stopping rule ``||b - Cx||^2 / ||b||^2 <= tol``, default ``1e-12``),
        ``max_iter``, ``preconditioner`` (``"auto"``, ``"diagonal"``, ``"block"``),
        ``warm_start`` (a previous result of the same model and data, a
        :class:`~mixedblup.iterative.PCGResult` or ``[beta, u]``), ``callback``
        (``callback(progress)`` after each iteration, return ``True`` to stop; the
        result is then the partial iterate, with a
        :class:`~mixedblup.errors.ConvergenceWarning`), ``max_seconds``, ``engine``
        (``"auto"``, ``"numba"``, ``"scipy"``), ``reorder``, ``log_interval`` (seconds
        between progress messages on the ``mixedblup.iterative`` logger; ``verbose=True``
        shows them) and ``reliability`` (compute approximate reliabilities, default
        True).  See :func:`mixedblup.iterative.solve_pcg`.

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
        raise MixedBlupError(f"method must be one of {METHODS}; got {method!r}")
    if solver != "auto":  # a bad solver, or pcg without variances, fails before the design is built
        from .iterative import choose_solver

        choose_solver(0, requested=solver, variances_known=variances is not None)
    data = as_pandas(data)  # polars and other frames are converted, categoricals and string IDs kept
    spec = parse_formula(formula, data.columns)
    if not spec.random:
        raise FormulaError(
            f"formula {formula!r} contains no random-effect terms such as (1 | group); this is not "
            "a mixed model (use ordinary least squares, e.g. statsmodels' OLS)"
        )
    covs = resolve_covariances(spec, cov)  # B9 (fixed and random) is the check "fixed_and_random"

    def design_for(covs: CovarianceSpec) -> Any:
        return build_design(
            spec, data, levels={name: s.labels for name, s in covs.structures.items()},
            na_action=na_action, weights=weights, joint=covs.joint,
            rank_deficient=check_levels["rank_x"], allow_large=allow_large, missing_code=missing_code,
            residual_groups=residual_groups,
        )

    design = design_for(covs)
    referenced = confounded_group_references(covs.structures, design.X)
    if referenced:  # fixed genetic groups confounded with the constant: a reference group is zero
        covs = CovarianceSpec({**covs.structures, **referenced}, covs.joint)
        design = design_for(covs)
    rgroups = design.residual_groups
    if variances is not None and fixed_variances is not None:
        raise CovarianceError("give either variances= (every component known) or fixed_variances= (some "
                              "held, the others estimated), not both")
    held = parse_held_variances(variances if variances is not None else fixed_variances, design.terms,
                                None if rgroups is None else rgroups.levels)
    if variances is not None and rgroups is not None and not held.complete:
        need = [t.name for i, t in enumerate(design.terms) if i not in held.terms]
        need += [f"residual[{lab}]" for lab in held.residual_levels if lab not in held.residual]
        raise CovarianceError(
            f"variances must give every component; missing {need} (to hold some components and "
            "estimate the others, pass them as fixed_variances=)"
        )
    general = rgroups is not None or fixed_variances is not None
    if general and solver == "pcg":
        raise ValueError("solver='pcg' needs every variance given and no residual_groups; use solver='direct'")
    if solver != "direct" and not general:
        from .pcg_fit import fit_pcg, resolve_solver

        sigmas_given = None if variances is None else parse_variances(variances, design.terms)[0]
        if resolve_solver(solver, design, variances is not None, sigmas_given) == "pcg":
            return fit_pcg(formula=formula, method=method, design=design,
                           structures=[covs.structures[t.name] for t in design.terms], variances=variances,
                           data=data, check_levels=check_levels, options=solver_options,
                           verbose=verbose)
    bound = [covs.structures[t.name].bind(t.levels) for t in design.terms]
    diagnostics = run_checks(design, bound, check_levels, estimating=not held.complete, data=data)
    cp = cross_products(design, bound)
    residual_variances, varpar = None, None
    n_cov = sum(t.k * (t.k + 1) // 2 if t.term.correlated else t.k for t in design.terms) + 1
    if general:
        from .estimate import fit_variance_components

        grouped = None
        if rgroups is not None:
            from .residual_groups import residual_group_cross_products

            grouped = residual_group_cross_products(design, bound, cp)
        start_values = None
        if start is not None:
            s_held = parse_held_variances(start, design.terms, None if rgroups is None else rgroups.levels)
            if not s_held.complete:
                raise CovarianceError("start must give every component (in the form of variances=)")
            start_values = ([s_held.terms[i] for i in range(len(design.terms))],
                            np.array([s_held.residual[lab] for lab in s_held.residual_levels]))
        vfit = fit_variance_components(cp, design, held, grouped=grouped, method=method, backend=backend,
                                       start=start_values, verbose=verbose)
        sigmas, residual, cp = vfit.sigmas, vfit.residual, vfit.cp
        known, optimizer, vc_cov = vfit.known, vfit.optimizer, vfit.vc_covariance
        residual_variances, n_cov = vfit.residual_variances, vfit.n_cov_params
        varpar = vfit.varpar  # Satterthwaite's information in the free components (one Hessian)
        if residual_variances is not None:  # the equations at the reported variances, as load() rebuilds them
            cp = grouped.at(np.array(list(residual_variances.values()), dtype=float) / residual)
    elif variances is None:
        from .estimate import estimate_variances

        theta0 = None
        if start is not None:
            from .estimate import ThetaMap

            s_sig, s_res = parse_variances(start, design.terms)
            theta0 = ThetaMap.for_design(design).theta([relative_factor(x, s_res) for x in s_sig])
        sigmas, residual, optimizer = estimate_variances(cp, design, method=method, backend=backend,
                                                         start=theta0, verbose=verbose)
        vc_cov = None  # inference (VC covariance, Satterthwaite) is computed on first use by the results
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
    diagnostics = fit_diagnostics(diagnostics, optimizer, design.terms,
                                  [covs.structures[t.name] for t in design.terms], cp, sol.factor)
    return build_results(
        formula=formula, method=method, variances_known=known, design=design, cp=cp,
        solution=sol, sigmas=sigmas, residual=residual, minus_two_ll=m2ll, n_cov_params=n_cov,
        diagnostics=diagnostics, covariance_kinds=[b.kind for b in bound], optimizer=optimizer,
        vc_covariance=vc_cov, data=data, structures=[covs.structures[t.name] for t in design.terms],
        backend=backend, residual_variances=residual_variances, varpar=varpar,
    )
