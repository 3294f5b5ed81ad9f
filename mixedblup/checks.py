"""Data checks with lme4-style switches (``lmerControl(check.* = ...)``).

Each check has a level: ``"error"`` (raise), ``"warn"`` (typed warning),
``"note"`` (recorded in ``result.diagnostics`` only, like lme4's "message") or
``"ignore"``; ``fit(..., checks={"nlev_gt_1": "warn"})`` overrides the defaults.
The switches are validated themselves: an unknown check name or level is an error
(lme4 tests "invalid control level" the same way).  Every check that triggers (at
any level but ignore) is recorded in ``result.diagnostics`` with its message.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .covariance import BoundCovariance
from .design import Design
from .errors import (
    DataError,
    DataWarning,
    MixedBlupError,
    RankDeficiencyWarning,
    ScaleWarning,
    preview,
)

__all__ = ["CHECKS", "LEVELS", "Finding", "resolve_checks", "run_checks"]

#: Levels of a check, from strictest to off.
LEVELS = ("error", "warn", "note", "ignore")

#: Check name -> (default level, what it guards against).
CHECKS: dict[str, tuple[str, str]] = {
    "nlev_gt_1": ("error", "a grouping factor has a single level (B1)"),
    "nlev_gte_5": ("note", "a grouping factor has fewer than 5 levels: its variance is poorly estimated (B2)"),
    "nobs_vs_nlev": ("error", ("a term has at least as many levels as observations and is confounded with "
                               "the residual (B3; for a relationship matrix only when it is diagonal)")),
    "nobs_vs_nre": ("error", "an independent term has at least as many random effects as observations (B4)"),
    "rank_x": ("warn", "the fixed-effect design is rank deficient; columns are dropped (A9)"),
    "scale_x": ("warn", "fixed-effect columns on very different scales (A10)"),
    "collinear_x": ("warn", ("fixed-effect columns nearly collinear (condition number of the column-scaled "
                             "X above 1e6): their estimates are very imprecise (A9, issue 8 stress)")),
    "int_covariate": ("note", "an integer column with few values enters as a continuous covariate (A11)"),
    "implicit_nesting": ("note", ("a grouping factor reuses its labels inside each level of another "
                                  "factor: probably nested, not crossed (B7)")),
    "fixed_and_random": ("warn", ("a factor is both a fixed effect and the grouping factor of a random "
                                  "intercept (B9)")),
}


@dataclass(frozen=True)
class Finding:
    """One triggered check: name, level and message."""

    check: str
    level: str
    message: str


def resolve_checks(checks: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults overridden by ``checks``; unknown names and levels are errors.

    Raises
    ------
    MixedBlupError
        ``checks`` is not a mapping, names an unknown check or gives an invalid level.
    """
    levels = {name: default for name, (default, _) in CHECKS.items()}
    if checks is None:
        return levels
    if not isinstance(checks, Mapping):
        raise MixedBlupError(f"checks= must be a dict of check name -> level, e.g. {{'nlev_gt_1': 'warn'}}; "
                             f"got {type(checks).__name__}")
    for name, level in checks.items():
        if name not in CHECKS:
            raise MixedBlupError(f"unknown check {name!r}; the checks are {sorted(CHECKS)}")
        if not isinstance(level, str) or level not in LEVELS:
            raise MixedBlupError(f"invalid level {level!r} for check {name!r}; use one of {LEVELS}")
        levels[name] = level
    return levels


def _emit(findings: list[Finding], name: str, level: str, message: str,
          category: type[Warning] = DataWarning, error: type[MixedBlupError] = DataError,
          problems: pd.DataFrame | None = None) -> None:
    if level == "ignore":
        return
    findings.append(Finding(name, level, message))
    if level == "error":
        raise error(f"{message} (switch this check with checks={{{name!r}: 'warn'}})", problems=problems)
    if level == "warn":
        warnings.warn(f"{message} (check {name!r})", category, stacklevel=4)


def run_checks(design: Design, covariances: list[BoundCovariance], levels: Mapping[str, str],
               estimating: bool, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Run the data checks on a design; raise, warn and record as configured.

    Identifiability checks (B3, B4) apply only when variances are estimated: with
    known variances the BLUP of any term is well defined.

    Parameters
    ----------
    design : Design
    covariances : list of BoundCovariance
        One per term of ``design``.
    levels : mapping
        Output of :func:`resolve_checks`.
    estimating : bool
        Whether variances are estimated (B3, B4 apply).
    data : pandas.DataFrame, optional
        The caller's data (A11 looks at column dtypes, B7 at the grouping columns).

    Returns
    -------
    pandas.DataFrame
        ``check, level, message`` of every triggered check.
    """
    findings: list[Finding] = []
    n = design.n
    if not design.fixed_kept.all() and levels.get("rank_x", "warn") != "ignore":
        # raised or warned by the design stage (which drops the columns); recorded here
        dropped = [nm for nm, k in zip(design.fixed_names, design.fixed_kept) if not k]
        findings.append(Finding("rank_x", levels["rank_x"],
                                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                                f"column(s): {preview(dropped)}"))
    for term, cov in zip(design.terms, covariances):
        observed = term.n_observed
        if observed < 2 and cov.is_identity:
            only = [lvl for lvl, has in zip(term.levels, _observed_mask(term)) if has] or ["(none)"]
            _emit(findings, "nlev_gt_1", levels["nlev_gt_1"],
                  f"grouping factor {term.name!r} has a single observed level {only[0]!r}; a random "
                  "effect needs more than one level: drop the term or use data with more levels",
                  problems=pd.DataFrame({"term": [term.name], "level": [only[0]]}))
        elif observed < 5:
            _emit(findings, "nlev_gte_5", levels["nlev_gte_5"],
                  f"grouping factor {term.name!r} has only {observed} observed levels; its variance "
                  "may be poorly estimated (consider a fixed effect instead)")
        if not estimating:
            continue
        if observed >= n and (cov.is_identity or _diagonal_on_observed(term, cov)):
            what = "" if cov.is_identity else (" and its relationship matrix is diagonal on the observed "
                                               "levels (unrelated animals)")
            _emit(findings, "nobs_vs_nlev", levels["nobs_vs_nlev"],
                  f"the number of levels of {term.name!r} ({observed}) is not below the number of "
                  f"observations ({n}){what}; its variance is confounded with the residual: give known "
                  "variances= or remove the term")
        elif cov.is_identity and observed * term.k >= n:
            _emit(findings, "nobs_vs_nre", levels["nobs_vs_nre"],
                  f"the number of observations ({n}) is not above the number of random effects of "
                  f"{term.name!r} ({observed * term.k}); the variance parameters are probably "
                  "unidentifiable: simplify the term (e.g. (1 | g) or (x || g)) or give known variances=")
    _scale_check(design, findings, levels["scale_x"])
    _collinear_check(design, findings, levels.get("collinear_x", "warn"))
    if data is not None:
        _int_covariates(design, data, findings, levels["int_covariate"])
        _implicit_nesting(design, data, findings, levels["implicit_nesting"])
    _fixed_and_random(design, findings, levels["fixed_and_random"])
    return pd.DataFrame([f.__dict__ for f in findings], columns=["check", "level", "message"])


def _observed_mask(term) -> np.ndarray:
    return np.asarray(abs(term.Z).sum(axis=0)).ravel().reshape(len(term.levels), term.k).any(axis=1)


def _diagonal_on_observed(term, cov: BoundCovariance) -> bool:
    """B3 for a relationship matrix: K^-1 diagonal with equal entries on the observed levels.

    A diagonal ``K^-1`` means a diagonal ``K``; with equal entries the term is
    ``sigma^2 I`` on the records, exactly the residual's structure.
    """
    P = sp.csc_matrix(cov.precision)
    if (P - sp.diags(P.diagonal())).count_nonzero():
        return False
    d = P.diagonal()[_observed_mask(term)]
    return len(d) > 0 and np.ptp(d) <= 1e-12 * max(abs(d).max(), 1.0)


def _scale_check(design: Design, findings: list[Finding], level: str) -> None:
    """A10: lme4's check.scaleX (SD ratio of numeric columns beyond 1e3)."""
    if level == "ignore" or design.p == 0:
        return
    X = design.X
    if sp.issparse(X):
        return  # large categorical designs: indicator columns, nothing to rescale
    names = [nm for nm, k in zip(design.fixed_names, design.fixed_kept) if k]
    sd = X.std(axis=0)
    constant = sd <= 1e-10 * np.maximum(np.abs(X).max(axis=0), 1.0)
    binary = np.array([np.isin(np.unique(X[:, j]), (0.0, 1.0)).all() for j in range(X.shape[1])])
    use = ~constant & ~binary
    if use.sum() < 1:
        return
    ratio = sd[use].max() / sd[use].min()
    extreme = np.abs(np.log10(sd[use])) > 3
    if ratio > 1e3 or extreme.any():
        cols = [f"{nm} (sd {s:.3g})" for nm, s, u in zip(names, sd, use) if u]
        _emit(findings, "scale_x", level,
              f"some fixed-effect columns are on very different scales: {', '.join(cols)}; consider "
              "rescaling them", category=ScaleWarning)


#: Condition number of the column-scaled X above which fixed effects are called collinear.
COLLINEAR_COND = 1e6


def _collinear_check(design: Design, findings: list[Finding], level: str) -> None:
    """Near-collinear kept columns: cond(X D) > 1e6 (D scales columns to unit length).

    The rank test (A9) drops exactly dependent columns; this names columns that are
    kept but nearly dependent, whose estimates lose about ``2 log10(cond)`` digits
    in the normal equations and have huge standard errors.
    """
    p = design.p
    if level == "ignore" or p < 2 or p > 2000 or sp.issparse(design.X):
        return
    X = np.asarray(design.X, dtype=float)
    norms = np.linalg.norm(X, axis=0)
    if not (norms > 0).all():
        return
    S = X.T @ X / np.outer(norms, norms)
    vals, vecs = np.linalg.eigh((S + S.T) / 2.0)
    top = vals[-1]
    small = vals[0]
    cond = np.sqrt(top / small) if small > 0 else np.inf
    if cond <= COLLINEAR_COND:
        return
    names = [nm for nm, k in zip(design.fixed_names, design.fixed_kept) if k]
    v = np.abs(vecs[:, 0])
    involved = [names[j] for j in np.flatnonzero(v > 0.1 * v.max())]
    _emit(findings, "collinear_x", level,
          f"fixed-effect columns {preview(involved)} are nearly collinear (condition number {cond:.3g} with "
          "every column scaled to unit length); their estimates and standard errors are very imprecise: "
          "centre covariates (e.g. year - 2000 before squaring), or drop or combine one of them",
          category=RankDeficiencyWarning)


def _int_covariates(design: Design, data: pd.DataFrame, findings: list[Finding], level: str) -> None:
    """A11: integer columns with few values used as continuous covariates."""
    if level == "ignore":
        return
    columns = set(data.columns)  # a set: 10^4 herd-year names are not looked up in a pandas Index one by one
    for name in design.fixed_names:
        if name in columns and pd.api.types.is_integer_dtype(data[name].dtype) \
                and not pd.api.types.is_bool_dtype(data[name].dtype):
            k = data[name].nunique()
            if k <= 20:
                _emit(findings, "int_covariate", level,
                      f"integer column {name!r} with {k} distinct values enters as a continuous "
                      f"covariate; write C({name}) if it is a factor")


def _implicit_nesting(design: Design, data: pd.DataFrame, findings: list[Finding], level: str) -> None:
    """B7: ``(1|batch) + (1|cask)`` fitted as crossed while cask labels repeat in every batch.

    Flags the pair when every label of ``inner`` occurs under two or more levels of
    ``outer`` and every ``outer`` level holds two or more ``inner`` labels, and the
    formula has no ``outer:inner`` term.  Data alone cannot tell a reused label
    (cask "a" of batch 1 is not cask "a" of batch 2: nested) from a truly crossed
    design (sample "A" on every plate), so the default level is ``"note"``; the fix
    for nesting is ``(1|outer/inner)``.
    """
    if level == "ignore":
        return
    single = [t for t in design.terms if len(t.term.factors) == 1 and t.term.kind == "levels"
              and t.term.factors[0] in data.columns and t.levels is not None]
    covered = {frozenset(t.term.factors) for t in design.terms if len(t.term.factors) > 1}
    if len(single) < 2 or not data.index.is_unique:
        return
    rows = data.loc[design.index]
    for inner in single:
        for outer in single:
            a, b = outer.term.factors[0], inner.term.factors[0]
            if a == b or frozenset((a, b)) in covered:
                continue
            pairs = rows[[a, b]].astype(str).drop_duplicates()
            if pairs[b].nunique() < 2 or pairs[b].nunique() >= pairs[a].nunique():
                continue  # the nested factor is the one with fewer (reused) labels
            if (pairs.groupby(b)[a].nunique() >= 2).all() and (pairs.groupby(a)[b].nunique() >= 2).all():
                _emit(findings, "implicit_nesting", level,
                      f"the labels of {b!r} ({preview(sorted(pairs[b].unique()), 5)}) recur within several "
                      f"levels of {a!r}, and {b!r} is fitted as crossed with {a!r}: equal labels are one "
                      f"level across {a!r}; if {b} is nested in {a} (cask 'a' of batch 1 is not cask 'a' of "
                      f"batch 2), write (1|{a}/{b}) or (1|{a}:{b})", problems=None)
                return


def _fixed_and_random(design: Design, findings: list[Finding], level: str) -> None:
    """B9: a factor both as a fixed main effect and as a random intercept's grouping factor."""
    formula = getattr(design.fixed_spec, "formula", None)
    if level == "ignore" or formula is None:
        return
    terms = list(formula)
    mains = set()
    for t in terms:
        if len(t.factors) == 1:
            expr = t.factors[0].expr.strip()
            mains.add(expr.strip("`"))
            if expr.startswith("C(") and expr.endswith(")"):
                mains.add(expr[2:-1].split(",")[0].strip().strip("`"))
    both = [t.name for t in design.terms if len(t.term.factors) == 1 and t.term.factors[0] in mains
            and "(Intercept)" in t.columns]
    for name in both:
        _emit(findings, "fixed_and_random", level,
              f"{name!r} appears as both a fixed effect and a grouping factor; its random-effect "
              "variance is not identifiable and its BLUPs are confounded with the fixed effects: "
              f"remove {name!r} from the fixed part or from the random part")
