"""Diagnostic plots (matplotlib, an optional extra: ``pip install 'mixedblup[plot]'``).

matplotlib is imported only when a plot is drawn.  Every function draws on the
``ax`` given (or a new figure's axes) and returns the axes, so plots compose and
render headless (``matplotlib.use("Agg")``).

* :func:`caterpillar` -- BLUPs of a term, sorted, with prediction intervals (SEP);
* :func:`residuals_vs_fitted` -- conditional residuals against fitted values;
* :func:`qq` -- normal quantile plot of the residuals or of a term's BLUPs;
* :func:`profile_plot` -- a likelihood profile as lme4's signed root deviance ``zeta``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["caterpillar", "profile_plot", "qq", "residuals_vs_fitted"]


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plots need matplotlib, an optional dependency: pip install 'mixedblup[plot]'"
        ) from exc
    return plt


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    plt = _pyplot()
    _, ax = plt.subplots()
    return ax


def caterpillar(res: MixedModelResults, term: str | None = None, *, coefficient: str | None = None,
                level: float = 0.95, ax: Any = None, max_levels: int = 60) -> Any:
    """BLUPs of one term, sorted, with ``level`` prediction intervals (``BLUP +- z SEP``).

    Parameters
    ----------
    res : MixedModelResults
        A fitted model.
    term : str, optional
        Random term; default the first.
    coefficient : str, optional
        Column of a multi-column term (default its first, e.g. ``"(Intercept)"``).
    level : float
        Coverage of the intervals.
    ax : matplotlib Axes, optional
        Where to draw.
    max_levels : int
        Label the y axis only up to this many levels.

    Returns
    -------
    matplotlib Axes
    """
    names = list(res.terms.index)
    term = names[0] if term is None else term
    table = res.random_effects(term)
    coefficient = table["term"].iloc[0] if coefficient is None else coefficient
    table = table[table["term"] == coefficient].sort_values("estimate").reset_index(drop=True)
    z = stats.norm.ppf(0.5 + level / 2)
    ax = _axes(ax)
    y = np.arange(len(table))
    ax.errorbar(table["estimate"], y, xerr=z * table["std_error"], fmt="o", markersize=3, capsize=0, lw=1)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    if len(table) <= max_levels:
        ax.set_yticks(y)
        ax.set_yticklabels(table["level"].astype(str))
    ax.set_xlabel(f"BLUP ({coefficient}) with {level:.0%} interval")
    ax.set_ylabel(term)
    ax.set_title(f"Random effects: {term}")
    return ax


def residuals_vs_fitted(res: MixedModelResults, *, ax: Any = None) -> Any:
    """Conditional residuals against conditional fitted values, with a zero line.

    Returns
    -------
    matplotlib Axes
    """
    ax = _axes(ax)
    ax.scatter(res.fitted, res.residuals, s=10, alpha=0.7)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("fitted")
    ax.set_ylabel("residual")
    ax.set_title("Residuals vs fitted")
    return ax


def _qq_points(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    theo = stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    return theo, x


def qq(res: MixedModelResults, which: str = "residuals", *, term: str | None = None,
       coefficient: str | None = None, ax: Any = None) -> Any:
    """Normal quantile-quantile plot of the residuals or of one term's BLUPs.

    Parameters
    ----------
    res : MixedModelResults
        A fitted model.
    which : {"residuals", "blups"}
        What to plot.
    term, coefficient : str, optional
        For ``"blups"``: the term (default the first) and column.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
    """
    if which == "residuals":
        values = res.residuals.to_numpy()
        title = "Normal Q-Q: residuals"
    elif which == "blups":
        term = next(iter(res.terms.index)) if term is None else term
        table = res.random_effects(term)
        coefficient = table["term"].iloc[0] if coefficient is None else coefficient
        values = table.loc[table["term"] == coefficient, "estimate"].to_numpy()
        title = f"Normal Q-Q: BLUPs of {term} ({coefficient})"
    else:
        raise ValueError(f"which must be 'residuals' or 'blups'; got {which!r}")
    theo, sample = _qq_points(values)
    ax = _axes(ax)
    ax.scatter(theo, sample, s=10)
    if len(sample) > 1:
        q1, q3 = np.percentile(sample, [25, 75])
        t1, t3 = stats.norm.ppf([0.25, 0.75])
        slope = (q3 - q1) / (t3 - t1)
        ax.plot(theo, q1 + slope * (theo - t1), color="grey", lw=0.8, ls="--")
    ax.set_xlabel("normal quantiles")
    ax.set_ylabel("sample quantiles")
    ax.set_title(title)
    return ax


def profile_plot(res_or_profile: MixedModelResults | pd.DataFrame, what: str | None = None, *,
                 level: float = 0.95, ax: Any = None, n: int = 21) -> Any:
    """A likelihood profile: ``zeta`` (signed root deviance increase) against the parameter.

    Parameters
    ----------
    res_or_profile : MixedModelResults or pandas.DataFrame
        A fitted model (then ``what`` names the parameter, see
        :meth:`MixedModelResults.profile`) or the table that method returns.
    what : str, optional
        Parameter to profile when a model is given.
    level : float
        Draws the interval limits ``zeta = +- sqrt(chi2_1(level))``.
    ax : matplotlib Axes, optional
        Where to draw.
    n : int
        Grid points when profiling here.

    Returns
    -------
    matplotlib Axes
    """
    if isinstance(res_or_profile, pd.DataFrame):
        prof = res_or_profile
        label = what or "parameter"
    else:
        if what is None:
            raise ValueError("name the parameter to profile (what=...)")
        prof = res_or_profile.profile(what, n=n)
        label = what
    ax = _axes(ax)
    ax.plot(prof["value"], prof["zeta"], marker="o", markersize=3)
    cut = float(np.sqrt(stats.chi2.ppf(level, 1)))
    for c in (-cut, cut):
        ax.axhline(c, color="grey", lw=0.8, ls="--")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel(label)
    ax.set_ylabel("zeta")
    ax.set_title(f"Profile: {label}")
    return ax
