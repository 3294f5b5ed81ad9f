"""Data checks with lme4-style switches (``lmerControl(check.* = ...)``).

Each check has a level: ``"error"`` (raise), ``"warn"`` (typed warning) or
``"ignore"``; ``fit(..., checks={"nlev_gt_1": "warn"})`` overrides the defaults.
Every check that triggers (at any level but ignore) is recorded in
``result.diagnostics`` with its message.
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
from .errors import DataError, DataWarning, MixedBlupError, ScaleWarning

__all__ = ["CHECKS", "LEVELS", "resolve_checks", "run_checks", "Finding"]

LEVELS = ("error", "warn", "ignore")

#: Check name -> (default level, what it guards against).
CHECKS: dict[str, tuple[str, str]] = {
    "nlev_gt_1": ("error", "a grouping factor has a single level (B1)"),
    "nlev_gte_5": ("ignore", "a grouping factor has fewer than 5 levels: its variance is poorly estimated (B2)"),
    "nobs_vs_nlev": ("error", "an independent term has at least as many levels as observations (B3)"),
    "nobs_vs_nre": ("error", "an independent term has at least as many random effects as observations (B4)"),
    "scale_x": ("warn", "fixed-effect columns on very different scales (A10)"),
    "int_covariate": ("ignore", "an integer column with few values enters as a continuous covariate (A11)"),
}


@dataclass(frozen=True)
class Finding:
    """One triggered check: name, level and message."""

    check: str
    level: str
    message: str


def resolve_checks(checks: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults overridden by ``checks``; unknown names and levels are errors."""
    levels = {name: default for name, (default, _) in CHECKS.items()}
    for name, level in (checks or {}).items():
        if name not in CHECKS:
            raise ValueError(f"unknown check {name!r}; the checks are {sorted(CHECKS)}")
        if level not in LEVELS:
            raise ValueError(f"invalid level {level!r} for check {name!r}; use one of {LEVELS}")
        levels[name] = level
    return levels


def _emit(findings: list[Finding], name: str, level: str, message: str,
          category: type[Warning] = DataWarning, error: type[MixedBlupError] = DataError) -> None:
    if level == "ignore":
        return
    findings.append(Finding(name, level, message))
    if level == "error":
        raise error(f"{message} (switch this check with checks={{{name!r}: 'warn'}})")
    warnings.warn(message, category, stacklevel=4)


def run_checks(design: Design, covariances: list[BoundCovariance], levels: Mapping[str, str],
               estimating: bool, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """Run the data checks on a design; raise, warn and record as configured.

    Identifiability checks (B3, B4) apply only when variances are estimated: with
    known variances the BLUP of any term is well defined.

    Returns
    -------
    pandas.DataFrame
        ``check, level, message`` of every triggered check.
    """
    findings: list[Finding] = []
    n = design.n
    for term, cov in zip(design.terms, covariances):
        observed = term.n_observed
        if observed < 2 and cov.is_identity:
            only = [lvl for lvl, has in zip(term.levels, _observed_mask(term)) if has]
            _emit(findings, "nlev_gt_1", levels["nlev_gt_1"],
                  f"grouping factor {term.name!r} has a single observed level {only[0]!r}; a random "
                  "effect needs more than one level")
        elif observed < 5:
            _emit(findings, "nlev_gte_5", levels["nlev_gte_5"],
                  f"grouping factor {term.name!r} has only {observed} observed levels; its variance "
                  "may be poorly estimated")
        if estimating and cov.is_identity:
            if observed >= n:
                _emit(findings, "nobs_vs_nlev", levels["nobs_vs_nlev"],
                      f"the number of levels of {term.name!r} ({observed}) is not below the number of "
                      f"observations ({n}); its variance is confounded with the residual")
            elif observed * term.k >= n:
                _emit(findings, "nobs_vs_nre", levels["nobs_vs_nre"],
                      f"the number of observations ({n}) is not above the number of random effects of "
                      f"{term.name!r} ({observed * term.k}); the variance parameters are probably "
                      "unidentifiable")
    _scale_check(design, findings, levels["scale_x"])
    if data is not None:
        _int_covariates(design, data, findings, levels["int_covariate"])
    return pd.DataFrame([f.__dict__ for f in findings], columns=["check", "level", "message"])


def _observed_mask(term) -> np.ndarray:
    return np.asarray(abs(term.Z).sum(axis=0)).ravel().reshape(len(term.levels), term.k).any(axis=1)


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


def _int_covariates(design: Design, data: pd.DataFrame, findings: list[Finding], level: str) -> None:
    """A11: integer columns with few values used as continuous covariates."""
    if level == "ignore":
        return
    for name in design.fixed_names:
        if name in data.columns and pd.api.types.is_integer_dtype(data[name].dtype):
            k = data[name].nunique()
            if k <= 20:
                _emit(findings, "int_covariate", level,
                      f"integer column {name!r} with {k} distinct values enters as a continuous "
                      f"covariate; write C({name}) if it is a factor")
