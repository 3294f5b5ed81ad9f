"""Tidy tables in broom.mixed's vocabulary: ``tidy``, ``glance``, ``augment``.

Column names follow broom.mixed with underscores (``std_error``, ``p_value``,
``conf_low``); the random-effect parameters are named ``sd__(Intercept)``,
``cor__(Intercept).Days`` and ``sd__Observation`` (or ``var__``/``cov__`` with
``scales="vcov"``).  Everything is numeric; formatting belongs to :mod:`mixedblup.summary`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .design import kept_rows
from .errors import DataError

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["EFFECTS", "augment", "glance", "tidy"]

#: What ``tidy(effects=...)`` accepts.
EFFECTS = ("fixed", "ran_pars", "ran_vals")

_COLUMNS = ["effect", "group", "level", "term", "estimate", "std_error", "statistic", "df", "p_value"]


def _fixed(res: MixedModelResults, conf_int: bool, conf_level: float) -> pd.DataFrame:
    fe = res.fixed_effects[~res.fixed_effects["dropped"]]
    out = pd.DataFrame({
        "effect": "fixed", "group": None, "term": list(fe.index),
        "estimate": fe["estimate"].to_numpy(), "std_error": fe["std_error"].to_numpy(),
        "statistic": fe["statistic"].to_numpy(), "df": fe["df"].to_numpy(), "p_value": fe["p_value"].to_numpy(),
    })
    if conf_int:
        ci = res.confint(level=conf_level).loc[list(fe.index)]
        out["conf_low"], out["conf_high"] = ci["lower"].to_numpy(), ci["upper"].to_numpy()
    return out


def _ran_pars(res: MixedModelResults, conf_int: bool, conf_level: float, scales: str) -> pd.DataFrame:
    if scales not in ("sdcor", "vcov"):
        raise ValueError(f"scales must be 'sdcor' or 'vcov'; got {scales!r}")
    vc = res.variance_components.reset_index(drop=True)
    V = None if res.vcov_variance_components is None else res.vcov_variance_components.to_numpy()
    est = vc["estimate"].to_numpy()
    key = {(g, a, b): i for i, (g, a, b) in enumerate(zip(vc["group"], vc["term1"], vc["term2"]))}
    rows = []
    for i, row in vc.iterrows():
        resid = row["group"] == "Residual"
        is_var = row["term2"] == ""
        grad = np.zeros(len(vc))
        if is_var:
            name = "Observation" if resid else row["term1"]
            if scales == "vcov":
                term, value = f"var__{name}", est[i]
                grad[i] = 1.0
            else:
                value = np.sqrt(est[i])
                term = f"sd__{name}"
                grad[i] = 0.5 / value if value > 0 else np.nan
        else:
            j = key[(row["group"], row["term1"], "")]
            k = key[(row["group"], row["term2"], "")]
            if scales == "vcov":
                term, value = f"cov__{row['term1']}.{row['term2']}", est[i]
                grad[i] = 1.0
            else:
                term = f"cor__{row['term1']}.{row['term2']}"
                denom = np.sqrt(est[j] * est[k])
                value = est[i] / denom if denom > 0 else np.nan
                grad[i] = 1.0 / denom if denom > 0 else np.nan
                grad[j] = -value / (2 * est[j]) if est[j] > 0 else np.nan
                grad[k] = -value / (2 * est[k]) if est[k] > 0 else np.nan
        se = np.nan
        if V is not None:
            used = np.nonzero(grad)[0]
            g = grad[used]
            sub = V[np.ix_(used, used)]
            if np.isfinite(g).all() and np.isfinite(sub).all():
                se = float(np.sqrt(max(g @ sub @ g, 0.0)))
        rows.append({"effect": "ran_pars", "group": row["group"], "term": term, "estimate": float(value),
                     "std_error": se})
    out = pd.DataFrame(rows)
    if conf_int:
        z = stats.norm.ppf(0.5 + conf_level / 2)
        low = out["estimate"] - z * out["std_error"]
        high = out["estimate"] + z * out["std_error"]
        positive = out["term"].str.startswith(("sd__", "var__")).to_numpy()
        cor = out["term"].str.startswith("cor__").to_numpy()
        out["conf_low"] = np.where(positive, np.maximum(low, 0.0), np.where(cor, np.maximum(low, -1.0), low))
        out["conf_high"] = np.where(cor, np.minimum(high, 1.0), high)
    return out


def _ran_vals(res: MixedModelResults, conf_int: bool, conf_level: float) -> pd.DataFrame:
    re = res.random_effects()
    out = pd.DataFrame({
        "effect": "ran_vals", "group": re["group"].to_numpy(), "level": re["level"].to_numpy(),
        "term": re["term"].to_numpy(), "estimate": re["estimate"].to_numpy(),
        "std_error": re["std_error"].to_numpy(),
    })
    if conf_int:
        z = stats.norm.ppf(0.5 + conf_level / 2)
        out["conf_low"] = out["estimate"] - z * out["std_error"]
        out["conf_high"] = out["estimate"] + z * out["std_error"]
    return out


def tidy(res: MixedModelResults, effects: str | Sequence[str] = ("fixed", "ran_pars"), *,
         conf_int: bool = False, conf_level: float = 0.95, scales: str = "sdcor") -> pd.DataFrame:
    """One row per estimate (see :meth:`MixedModelResults.tidy`)."""
    wanted = [effects] if isinstance(effects, str) else list(effects)
    bad = [e for e in wanted if e not in EFFECTS]
    if bad or not wanted:
        raise ValueError(f"effects must be among {EFFECTS}; got {effects!r}")
    parts = []
    for e in wanted:
        if e == "fixed":
            parts.append(_fixed(res, conf_int, conf_level))
        elif e == "ran_pars":
            parts.append(_ran_pars(res, conf_int, conf_level, scales))
        else:
            parts.append(_ran_vals(res, conf_int, conf_level))
    parts = [p for p in parts if len(p)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=_COLUMNS)
    cols = list(_COLUMNS)
    if "ran_vals" not in wanted:
        cols.remove("level")
    if "fixed" not in wanted:
        cols = [c for c in cols if c not in ("statistic", "df", "p_value")]
    if conf_int:
        cols += ["conf_low", "conf_high"]
    out = out.reindex(columns=cols)
    for c in ("estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high"):
        if c in out.columns:
            out[c] = out[c].astype(float)
    return out


def glance(res: MixedModelResults) -> pd.DataFrame:
    """One-row model summary (see :meth:`MixedModelResults.glance`)."""
    crit = -2.0 * res.loglik
    opt = res.optimizer
    row = {
        "nobs": res.nobs,
        "npar": res.npar,
        "sigma": res.sigma,
        "logLik": res.loglik,
        "AIC": res.aic,
        "BIC": res.bic,
        "REMLcrit" if res.method == "REML" else "deviance": crit,
        "df_residual": res.nobs - res.npar,
        "method": res.method,
        "variances_known": res.variances_known,
        "converged": bool(opt.converged) if opt is not None else True,
        "singular": bool(opt.boundary) if opt is not None else False,
    }
    return pd.DataFrame([row])


def augment(res: MixedModelResults, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """The data with fitted values and residuals (see :meth:`MixedModelResults.augment`)."""
    design = res._design
    index = design.index
    if data is not None:
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame; got {type(data).__name__}")
        frame = kept_rows(data, design).copy()
    elif res._frame is not None:
        frame = res._frame.copy()
    else:
        frame = pd.DataFrame({design.response: design.y}, index=index)
    fixed = pd.Series(design.X @ res._solution.beta, index=index)
    y = pd.Series(design.y, index=index)
    frame[".fitted"] = res.fitted.to_numpy()
    frame[".resid"] = res.residuals.to_numpy()
    frame[".fixed"] = fixed.to_numpy()
    frame[".resid_fixed"] = (y - fixed).to_numpy()
    if design.weights is not None:
        frame[".weights"] = design.weights
    return frame
