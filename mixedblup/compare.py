"""Likelihood ratio tests between nested mixed models.

``compare(m1, m2, ...)`` sorts the models by their number of parameters and tests
each against the previous one.  When the larger model adds variance components
whose null value (zero) lies on the boundary of the parameter space, the
likelihood ratio statistic is not chi-squared but a chi-bar-squared mixture
(Self & Liang 1987; Stram & Lee 1994):

* ``m`` added independent variances (each a one-column term, or a ``||`` column):
  ``sum_j binom(m, j) 2^-m chi2_j``;
* one random coefficient added to a correlated term that already has ``k``
  coefficients (a variance plus ``k`` covariances): ``0.5 chi2_k + 0.5 chi2_{k+1}``;
* anything else (covariances only, fixed effects under ML): the ordinary
  ``chi2_df``.

REML likelihoods of models with different fixed effects are not comparable (the
REML criterion is the likelihood of different error contrasts); such comparisons
are refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import special, stats

from .errors import MixedBlupError

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["chibar_pvalue", "compare"]


def chibar_pvalue(statistic: float, weights: Sequence[float], dfs: Sequence[int]) -> float:
    """Upper tail of the mixture ``sum_j weights[j] chi2_{dfs[j]}`` (``chi2_0`` is a point mass at 0)."""
    p = 0.0
    for w, df in zip(weights, dfs):
        if df == 0:
            p += w * float(statistic <= 0)
        else:
            p += w * float(stats.chi2.sf(statistic, df))
    return float(p)


def _canonical(group: str) -> str:
    """lme4 names ``||`` terms ``g``, ``g.1``...: strip the numbering."""
    return re.sub(r"\.\d+$", "", group)


def _components(res: MixedModelResults) -> dict[tuple[str, str, str], str]:
    """Variance-parameter labels -> kind (``"var"`` or ``"cov"``), groups canonicalised."""
    out = {}
    for _, row in res.variance_components.iterrows():
        key = (_canonical(row["group"]), row["term1"], row["term2"])
        out[key] = "var" if row["term2"] == "" else "cov"
    return out


def _same_data(a: MixedModelResults, b: MixedModelResults) -> bool:
    da, db = a._design, b._design
    return a.nobs == b.nobs and da.index.equals(db.index) and np.allclose(da.y, db.y, rtol=1e-12, atol=0)


def _same_fixed(a: MixedModelResults, b: MixedModelResults) -> bool:
    """Same column space of X (not merely the same names)."""
    Xa = np.asarray(a._design.X.toarray() if hasattr(a._design.X, "toarray") else a._design.X)
    Xb = np.asarray(b._design.X.toarray() if hasattr(b._design.X, "toarray") else b._design.X)
    if Xa.shape[1] != Xb.shape[1]:
        return False
    if Xa.shape[1] == 0:
        return True
    joint = np.linalg.matrix_rank(np.hstack([Xa, Xb]), tol=None)
    return joint == Xa.shape[1]


def _mixture(small: MixedModelResults, big: MixedModelResults, ddf: int) -> tuple[list[float], list[int], str]:
    """Mixture weights and dfs for the test of ``small`` within ``big``."""
    cs, cb = _components(small), _components(big)
    extra = {k: v for k, v in cb.items() if k not in cs}
    gone = [k for k in cs if k not in cb]
    if gone:
        return [1.0], [ddf], f"chi2({ddf}); the variance parameters are not nested"
    if not extra:
        return [1.0], [ddf], f"chi2({ddf})"
    fixed_diff = big._solution.beta.size - small._solution.beta.size
    if fixed_diff:
        return [1.0], [ddf], f"chi2({ddf})"
    variances = [k for k, v in extra.items() if v == "var"]
    covs = [k for k, v in extra.items() if v == "cov"]
    if not variances:
        return [1.0], [ddf], f"chi2({ddf})"
    # all added variances independent (no added covariances): binomial mixture
    if not covs:
        m = len(variances)
        w = [special.comb(m, j) / 2 ** m for j in range(m + 1)]
        return w, list(range(m + 1)), f"chi-bar-squared: binomial({m}, 1/2) mixture of chi2(0..{m})"
    # one variance added to a correlated term with its covariances to the existing k coefficients
    if len(variances) == 1:
        g, col, _ = variances[0]
        k = len(covs)
        linked = all(c[0] == g and col in (c[1], c[2]) for c in covs)
        if linked:
            return [0.5, 0.5], [k, k + 1], f"chi-bar-squared: 0.5 chi2({k}) + 0.5 chi2({k + 1})"
    return [1.0], [ddf], f"chi2({ddf})"


def compare(*models: MixedModelResults) -> pd.DataFrame:
    """Likelihood ratio tests between nested models fitted to the same data.

    Parameters
    ----------
    *models : MixedModelResults
        Two or more fits of the same rows and response, by the same likelihood
        (all REML or all ML) and with estimated variances.

    Returns
    -------
    pandas.DataFrame
        One row per model, ordered by ``npar``: ``formula, method, npar, logLik, AIC,
        BIC, deviance, statistic, df, p_value, p_value_naive, reference``.
        ``p_value`` is boundary corrected (chi-bar-squared) when the larger model adds
        variances tested against zero; ``p_value_naive`` is the plain ``chi2(df)`` tail;
        ``reference`` names the mixture used.

    Raises
    ------
    MixedBlupError
        Fewer than two models, different data, mixed REML/ML, known variances, or
        REML fits with different fixed effects.
    """
    if len(models) < 2:
        raise MixedBlupError("compare needs at least two models")
    methods = {m.method for m in models}
    if len(methods) > 1:
        raise MixedBlupError(
            "the models were fitted by different likelihoods (REML and ML); refit them all with the same "
            "method (method='ML' to compare fixed effects)"
        )
    known = [m.formula for m in models if m.variances_known]
    if known:
        raise MixedBlupError(
            f"models {known} were fitted with given variances; a likelihood ratio test needs maximised "
            "likelihoods (estimate the variances)"
        )
    first = models[0]
    for m in models[1:]:
        if not _same_data(first, m):
            raise MixedBlupError(
                f"{first.formula!r} and {m.formula!r} were fitted to different rows or responses (nobs "
                f"{first.nobs} vs {m.nobs}); likelihoods of different data cannot be compared"
            )
    reml = methods == {"REML"}
    ordered = sorted(models, key=lambda m: m.npar)
    if reml:
        for m in ordered[1:]:
            if not _same_fixed(ordered[0], m):
                raise MixedBlupError(
                    f"REML fits with different fixed effects cannot be compared ({ordered[0].formula!r} vs "
                    f"{m.formula!r}): the REML likelihood is that of error contrasts that depend on the "
                    "fixed effects; refit both with method='ML'"
                )
    rows = []
    for i, m in enumerate(ordered):
        row = {"formula": m.formula, "method": m.method, "npar": m.npar, "logLik": m.loglik, "AIC": m.aic,
               "BIC": m.bic, "deviance": -2 * m.loglik, "statistic": np.nan, "df": np.nan,
               "p_value": np.nan, "p_value_naive": np.nan, "reference": ""}
        if i > 0:
            prev = ordered[i - 1]
            ddf = m.npar - prev.npar
            stat = max(2 * (m.loglik - prev.loglik), 0.0)
            row.update(statistic=stat, df=ddf)
            if ddf > 0:
                w, dfs, ref = _mixture(prev, m, ddf)
                row.update(p_value=chibar_pvalue(stat, w, dfs), p_value_naive=float(stats.chi2.sf(stat, ddf)),
                           reference=ref)
            else:
                row.update(reference="same number of parameters: not nested")
        rows.append(row)
    out = pd.DataFrame(rows, index=pd.Index([f"model{i + 1}" for i in range(len(rows))], name="model"))
    return out
