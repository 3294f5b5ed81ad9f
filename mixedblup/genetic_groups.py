"""Unknown parent groups (genetic groups, Quaas 1988).

A pedigree built with ``Pedigree.from_frame(..., upg=...)`` knows, for every unknown
parent, the group it belongs to.  This module builds

* the augmented inverse relationship matrix over animals and groups (Quaas 1988):
  Henderson's rules with each unknown parent replaced by its group, the Mendelian
  sampling variances being those of the pedigree without groups;
* the group contribution matrix ``Q`` (``q_i = (q_sire + q_dam) / 2``, an unknown
  parent in group ``g`` contributing the indicator of ``g``);
* :class:`GroupedPedigree`, a covariance structure for ``fit(cov=...)`` whose levels are
  the animals followed by the groups.

With ``a* = a + Q g`` (the animals' total genetic values):
``A*^-1 = [[Ai, -Ai Q], [-Q' Ai, Q' Ai Q]]``, singular of rank ``n``.  Groups as *fixed*
effects (the usual choice) use this matrix as the penalty of ``(a*, g)`` with no
incidence for ``g``; groups as *random* effects with variance ``gamma * sigma_a^2`` add
``I / gamma`` to the group block, which is then the exact inverse of
``Var(a*, g) = [[A + gamma Q Q', gamma Q], [gamma Q', gamma I]]``.

Reference: Quaas, R. L. (1988). Additive genetic model with groups and relationships.
J. Dairy Sci. 71, 1338-1345.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import CovarianceWarning, PedigreeError

__all__ = ["GroupedPedigree", "augmented_a_inverse", "group_contributions"]


def _require_groups(ped: Any) -> None:
    if ped.sire_group_pos is None or len(ped.groups) == 0:
        raise PedigreeError(
            "this pedigree has no unknown parent groups; build it with "
            "Pedigree.from_frame(..., upg='group column') (or upg=(sire group, dam group))"
        )


def _augmented_parents(ped: Any) -> tuple[np.ndarray, np.ndarray]:
    """Parent positions over animals + groups: an unknown parent is ``n + its group``."""
    n = len(ped)
    s = np.where(ped.sire_pos >= 0, ped.sire_pos, n + ped.sire_group_pos)
    d = np.where(ped.dam_pos >= 0, ped.dam_pos, n + ped.dam_group_pos)
    return s.astype(np.int64), d.astype(np.int64)


def augmented_a_inverse(ped: Any) -> sp.csc_matrix:
    """``A*^-1`` over ``ped.ids`` followed by ``ped.groups`` (see the module docstring)."""
    _require_groups(ped)
    n, g = len(ped), len(ped.groups)
    size = n + g
    alpha = 1.0 / ped._checked_mendelian()
    s, d = _augmented_parents(ped)
    me = np.arange(n, dtype=np.int64)
    # each animal adds alpha * b b' with b = (1, -1/2, -1/2) over (i, s, d); s == d sums
    r = np.concatenate([me, me, me, s, s, s, d, d, d])
    c = np.concatenate([me, s, d, me, s, d, me, s, d])
    h, q = -0.5 * alpha, 0.25 * alpha
    v = np.concatenate([alpha, h, h, h, q, q, h, q, q])
    out = sp.csc_matrix((v, (r, c)), shape=(size, size))
    out.sum_duplicates()
    return out


def group_contributions(ped: Any) -> sp.csr_matrix:
    """``Q`` (animals x groups, sparse): expected gene fractions from each group."""
    _require_groups(ped)
    n, g = len(ped), len(ped.groups)
    Q = np.zeros((n, g))
    gen = ped.generation
    cuts = np.concatenate(([0], np.flatnonzero(np.diff(gen)) + 1, [n]))
    sp_, dp = ped.sire_pos, ped.dam_pos
    sg, dg = ped.sire_group_pos, ped.dam_group_pos
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        rows = np.arange(a, b)
        for par, grp in ((sp_[a:b], sg[a:b]), (dp[a:b], dg[a:b])):
            known = par >= 0
            Q[rows[known]] += 0.5 * Q[par[known]]
            np.add.at(Q, (rows[~known], grp[~known]), 0.5)
    return sp.csr_matrix(Q)


@dataclass(frozen=True, eq=False)
class GroupedPedigree:
    """Covariance structure of a pedigree with unknown parent groups, for ``fit(cov=...)``.

    Levels are the animals (``ped.ids``) followed by the group codes (``ped.groups``);
    the animal effects are the total genetic values ``a* = a + Q g`` and the group
    effects have no incidence in the data (their columns of ``Z`` are zero).

    Parameters
    ----------
    pedigree : Pedigree
        Built with ``upg=``.
    groups : {"fixed", "random"}
        ``"fixed"``: precision ``A*^-1`` (singular; BLUE of groups, BLUP of ``a*``).
        ``"random"``: groups with variance ``group_variance`` times the additive
        variance; precision ``A*^-1 + [[0, 0], [0, I / group_variance]]`` (non-singular).
    group_variance : float
        Ratio of the group variance to the additive variance (random groups only).

    Notes
    -----
    With ``groups="fixed"`` the reported ``logdet`` is ``log|A|`` (the animal part);
    the mixed model equations must count the groups as fixed effects for REML (see
    ``docs/pedigree-engine.md``).  Known-variance BLUP needs nothing more.
    """

    pedigree: Any
    groups: str = "fixed"
    group_variance: float = 1.0

    def __post_init__(self) -> None:
        _require_groups(self.pedigree)
        if self.groups not in ("fixed", "random"):
            raise PedigreeError(f"groups must be 'fixed' or 'random'; got {self.groups!r}")
        if self.groups == "random" and not self.group_variance > 0:
            raise PedigreeError("group_variance must be positive for random groups")

    @property
    def labels(self) -> pd.Index:
        """Animal IDs followed by group codes."""
        return pd.Index(list(self.pedigree.ids) + list(self.pedigree.groups), dtype=object)

    @cached_property
    def _parts(self) -> tuple[sp.csc_matrix, float, np.ndarray]:
        ped = self.pedigree
        n, g = len(ped), len(ped.groups)
        prec = augmented_a_inverse(ped)
        logdet = float(ped.logdet_a())
        diag_a = 1.0 + ped.inbreeding().to_numpy()
        if self.groups == "random":
            lam = 1.0 / self.group_variance
            prec = (prec + sp.diags(np.r_[np.zeros(n), np.full(g, lam)])).tocsc()
            logdet += g * np.log(self.group_variance)
            Q = group_contributions(ped)
            diag = np.r_[diag_a + self.group_variance * np.asarray(Q.multiply(Q).sum(axis=1)).ravel(),
                         np.full(g, self.group_variance)]
        else:
            diag = np.r_[diag_a, np.full(g, np.inf)]
        return prec, logdet, diag

    def bind(self, levels: pd.Index) -> Any:
        """A :class:`~mixedblup.covariance.BoundCovariance` over animals + groups."""
        from .covariance import BoundCovariance
        from .errors import CovarianceError

        if not pd.Index(levels).equals(self.labels):
            raise CovarianceError(
                "internal error: a grouped pedigree term must use every animal and group as a "
                "level, in pedigree order"
            )
        prec, logdet, diag = self._parts
        if self.groups == "fixed":
            warnings.warn(
                "unknown parent groups as fixed effects: BLUPs and group solutions are exact; "
                "REML and log-likelihoods do not yet count the groups as fixed effects",
                CovarianceWarning,
                stacklevel=3,
            )
        return BoundCovariance(pd.Index(levels, dtype=object), prec, logdet, diag, "pedigree+groups")
