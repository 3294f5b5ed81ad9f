"""Breeding outputs: EBV tables and the decomposition of EBVs (Mrode 2005, section 3.5).

For a one-column pedigree term with ``alpha = sigma_e^2 / sigma_a^2``, the mixed
model equation of animal ``i`` (Henderson's rules for ``A^-1``, ``d_i`` the
Mendelian sampling variance) rearranges to

    EBV_i = w_pa PA_i + w_yd YD_i + w_pc PC_i,    w_pa + w_yd + w_pc = 1,

with ``D_i = n_i + alpha / d_i + alpha S_i``, ``S_i = sum_o 1 / (4 d_o)`` over the
progeny ``o`` of ``i``:

* parent average ``PA_i = (EBV_sire + EBV_dam) / 2`` (unknown parents count 0),
  ``w_pa = (alpha / d_i) / D_i``;
* yield deviation ``YD_i``: the animal's records corrected for the fixed and all
  other random effects, averaged with the weights of ``Z'WZ``; ``w_yd = n_i / D_i``;
* progeny contribution ``PC_i = sum_o (2 EBV_o - EBV_mate) / (4 d_o) / S_i``,
  ``w_pc = alpha S_i / D_i``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import MixedBlupError

if TYPE_CHECKING:
    from .results import MixedModelResults

__all__ = ["breeding_values", "ebv_decomposition"]


def _default_term(res: MixedModelResults, kinds: tuple[str, ...]) -> str:
    info = res.terms
    names = list(info.index[info["covariance"].isin(kinds)])
    if len(names) == 1:
        return names[0]
    if len(info) == 1:
        return str(info.index[0])
    raise MixedBlupError(f"name the term: candidates are {names or list(info.index)}")


def breeding_values(res: MixedModelResults, term: str | None = None) -> pd.DataFrame:
    """BLUP, PEV, SEP, reliability and accuracy of one term (see :meth:`MixedModelResults.breeding_values`)."""
    term = _default_term(res, ("pedigree", "relationship")) if term is None else term
    table = res.random_effects(term)
    k = int(res.terms.loc[term, "columns"].__len__())
    out = pd.DataFrame({
        "blup": table["estimate"].to_numpy(), "pev": table["pev"].to_numpy(),
        "sep": table["std_error"].to_numpy(), "reliability": table["reliability"].to_numpy(),
        "accuracy": table["accuracy"].to_numpy(), "has_records": table["has_records"].to_numpy(),
    })
    if k == 1:
        out.index = pd.Index(table["level"].to_numpy(), name="level")
    else:
        out.index = pd.MultiIndex.from_arrays([table["level"].to_numpy(), table["term"].to_numpy()],
                                              names=["level", "coefficient"])
    return out


def _find_pedigree(res: MixedModelResults, t_i: int, pedigree: Any) -> Any:
    if pedigree is not None:
        return getattr(pedigree, "pedigree", pedigree)
    if res._structures is not None:
        s = res._structures[t_i]
        return getattr(s, "pedigree", s)
    raise MixedBlupError(
        "pass the pedigree used in the fit: res.ebv_decomposition(term, pedigree=ped)"
    )


def ebv_decomposition(res: MixedModelResults, term: str | None = None, pedigree: Any = None) -> pd.DataFrame:
    """Parent average, yield deviation and progeny contribution of every EBV (module docstring)."""
    term = _default_term(res, ("pedigree",)) if term is None else term
    design = res._design
    names = [t.name for t in design.terms]
    if term not in names:
        raise KeyError(f"no random term {term!r}; the terms are {names}")
    t_i = names.index(term)
    td = design.terms[t_i]
    if td.k != 1:
        raise MixedBlupError(f"the EBV decomposition needs a one-column term; {term!r} has columns {td.columns}")
    if res.terms.loc[term, "covariance"] != "pedigree":
        raise MixedBlupError(f"term {term!r} has no pedigree (its covariance is {res.terms.loc[term, 'covariance']!r})")
    ped = _find_pedigree(res, t_i, pedigree)
    ids = pd.Index(ped.ids)
    if not ids.equals(pd.Index(td.levels)):
        raise MixedBlupError("the pedigree given is not the one used in the fit (its IDs differ from the term's levels)")
    sigma_a = float(res._sigmas[t_i][0, 0])
    if not sigma_a > 0:
        raise MixedBlupError(f"the variance of {term!r} is zero: every EBV is zero and has no decomposition")
    alpha = res._residual / sigma_a
    cp = res._cp
    off = cp.offsets[t_i]
    q = len(td.levels)
    u_all = res._solution.u
    u = u_all[off: off + q]
    # records corrected for fixed effects and all other random terms, weighted like the equations
    Z = design.Z
    y_adj = design.y - np.asarray(design.X @ res._solution.beta).ravel() - np.asarray(Z @ u_all).ravel() \
        + np.asarray(td.Z @ u).ravel()
    w = np.ones(design.n) if design.weights is None else design.weights
    Zw = td.Z.multiply(w[:, None]).tocsc()
    n_rec = np.asarray(Zw.multiply(td.Z).sum(axis=0)).ravel()
    own = np.asarray(Zw.T @ y_adj).ravel()
    sire, dam = np.asarray(ped.sire_pos), np.asarray(ped.dam_pos)
    d = np.asarray(ped.mendelian_variances(), dtype=float)
    us = np.where(sire >= 0, u[np.maximum(sire, 0)], 0.0)
    ud = np.where(dam >= 0, u[np.maximum(dam, 0)], 0.0)
    pa = (us + ud) / 2
    S = np.zeros(q)
    pc_num = np.zeros(q)
    for parent, mate in ((sire, dam), (dam, sire)):
        has = parent >= 0
        o = np.nonzero(has)[0]
        umate = np.where(mate[o] >= 0, u[np.maximum(mate[o], 0)], 0.0)
        np.add.at(S, parent[o], 1.0 / (4 * d[o]))
        np.add.at(pc_num, parent[o], (2 * u[o] - umate) / (4 * d[o]))
    D = n_rec + alpha / d + alpha * S
    with np.errstate(divide="ignore", invalid="ignore"):
        yd = np.where(n_rec > 0, own / n_rec, np.nan)
        pc = np.where(S > 0, pc_num / S, np.nan)
    out = pd.DataFrame({
        "ebv": u, "parent_average": pa, "yield_deviation": yd, "progeny_contribution": pc,
        "w_pa": (alpha / d) / D, "w_yd": n_rec / D, "w_pc": alpha * S / D,
        "n_records": n_rec, "n_progeny": np.bincount(sire[sire >= 0], minlength=q)
        + np.bincount(dam[dam >= 0], minlength=q),
    }, index=pd.Index(ids, name="animal"))
    return out
