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

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import PedigreeError

__all__ = ["GroupedPedigree", "augmented_a_inverse", "group_contributions"]


def _require_groups(ped: Any) -> None:
    if ped.sire_group_pos is None or len(ped.groups) == 0:
        raise PedigreeError(
            "this pedigree has no unknown parent groups; build it with "
            "Pedigree.from_frame(..., upg='group column') (or upg=(sire group, dam group))"
        )


def _reference_position(ped: Any, reference: Any) -> int | None:
    """Position of the reference group in ``ped.groups`` (``None``: no reference)."""
    if reference is None:
        return None
    pos = ped.groups.get_indexer([str(reference)])[0]
    if pos < 0:
        raise PedigreeError(
            f"reference group {reference!r} is not a group of this pedigree; the groups are "
            f"{list(ped.groups[:10])}"
        )
    return int(pos)


def _augmented_parents(ped: Any, reference: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parent positions over animals + groups: an unknown parent is ``n + its group``.

    With a ``reference`` group position, unknown parents of that group stay unknown
    (``-1``: the group's effect is zero) and later groups move down by one.
    """
    n = len(ped)
    out = []
    for pos, grp in ((ped.sire_pos, ped.sire_group_pos), (ped.dam_pos, ped.dam_group_pos)):
        grp = np.asarray(grp, dtype=np.int64)
        if reference is not None:
            grp = np.where(grp == reference, -1 - n, grp - (grp > reference))
        out.append(np.where(pos >= 0, pos, n + grp).astype(np.int64))
    return out[0], out[1]


def augmented_a_inverse(ped: Any, reference: Any = None) -> sp.csc_matrix:
    """``A*^-1`` over ``ped.ids`` followed by ``ped.groups`` (see the module docstring).

    ``reference`` (a group code) sets that group's effect to zero: its unknown parents
    are plain unknown parents and its row and column are left out.
    """
    _require_groups(ped)
    ref = _reference_position(ped, reference)
    n, g = len(ped), len(ped.groups) - (ref is not None)
    size = n + g
    alpha = 1.0 / ped._checked_mendelian()
    s, d = _augmented_parents(ped, ref)
    me = np.arange(n, dtype=np.int64)
    # each animal adds alpha * b b' with b = (1, -1/2, -1/2) over (i, s, d); s == d sums
    r = np.concatenate([me, me, me, s, s, s, d, d, d])
    c = np.concatenate([me, s, d, me, s, d, me, s, d])
    h, q = -0.5 * alpha, 0.25 * alpha
    v = np.concatenate([alpha, h, h, h, q, q, h, q, q])
    keep = (r >= 0) & (c >= 0)  # entries of a reference-group (unknown) parent drop out
    out = sp.csc_matrix((v[keep], (r[keep], c[keep])), shape=(size, size))
    out.sum_duplicates()
    return out


def group_contributions(ped: Any, reference: Any = None) -> sp.csr_matrix:
    """``Q`` (animals x groups, sparse): expected gene fractions from each group.

    ``reference`` (a group code) leaves that group's column out.
    """
    ref = _reference_position(ped, reference)
    Q = _all_group_contributions(ped)
    if ref is not None:
        Q = Q[:, np.delete(np.arange(Q.shape[1]), ref)]
    return Q


def _all_group_contributions(ped: Any) -> sp.csr_matrix:
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
    reference : str, optional
        Fixed groups only: a group whose effect is set to zero (its unknown parents
        become plain unknown parents and it is not a level).  The other group solutions
        are then differences from it; ``a*`` is unchanged up to the constant that the
        fixed part absorbs.  Needed when the fixed part spans the constant column (an
        intercept, or all levels of a factor): the groups' contributions sum to one for
        every animal, so their sum is confounded with it.  ``fit`` sets the first group
        as reference in that case, with a :class:`~mixedblup.errors.RankDeficiencyWarning`.

    Notes
    -----
    With ``groups="fixed"`` the reported ``logdet`` is ``log|A|`` (the animal part) and
    the bound structure declares the groups as fixed levels
    (``BoundCovariance.n_fixed_levels``): REML and ML count them as fixed effects
    (``p + n_groups`` in the REML degrees of freedom, ``log|C|`` corrected for the
    scaling of the group equations), which makes the likelihood that of the model with
    ``Z Q`` as explicit fixed-effect columns (Westell/Quaas equivalence).
    """

    pedigree: Any
    groups: str = "fixed"
    group_variance: float = 1.0
    reference: Any = None

    def __post_init__(self) -> None:
        _require_groups(self.pedigree)
        if self.groups not in ("fixed", "random"):
            raise PedigreeError(f"groups must be 'fixed' or 'random'; got {self.groups!r}")
        if self.groups == "random" and not self.group_variance > 0:
            raise PedigreeError("group_variance must be positive for random groups")
        if self.reference is not None:
            if self.groups != "fixed":
                raise PedigreeError("a reference group applies to fixed groups only (groups='fixed')")
            _reference_position(self.pedigree, self.reference)

    @property
    def group_levels(self) -> pd.Index:
        """The group codes that are levels (every group but the reference)."""
        groups = self.pedigree.groups
        return groups if self.reference is None else groups.delete(groups.get_loc(str(self.reference)))

    @property
    def labels(self) -> pd.Index:
        """Animal IDs followed by group codes (without the reference group)."""
        return pd.Index(list(self.pedigree.ids) + list(self.group_levels), dtype=object)

    @cached_property
    def _parts(self) -> tuple[sp.csc_matrix, float, np.ndarray]:
        ped = self.pedigree
        n, g = len(ped), len(self.group_levels)
        prec = augmented_a_inverse(ped, self.reference)
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
        n_fixed = len(self.group_levels) if self.groups == "fixed" else 0
        return BoundCovariance(pd.Index(levels, dtype=object), prec, logdet, diag, "pedigree+groups",
                               n_fixed_levels=n_fixed)


def spans_constant(X: Any, tol: float = 1e-8) -> bool:
    """Whether the columns of ``X`` (dense or sparse, full column rank) span the constant.

    The least-squares fit of a column of ones on ``X`` through the normal equations;
    the constant is spanned when the RMS residual is below ``tol``.
    """
    n, p = X.shape
    if p == 0 or n == 0:
        return False
    ones = np.ones(n)
    if sp.issparse(X):
        import scipy.sparse.linalg as spla

        X = sp.csc_matrix(X)
        b = spla.splu((X.T @ X).tocsc()).solve(np.asarray(X.T @ ones).ravel())
        resid = ones - X @ b
    else:
        X = np.asarray(X, dtype=float)
        b = np.linalg.lstsq(X, ones, rcond=None)[0]
        resid = ones - X @ b
    return bool(np.sqrt(np.mean(resid ** 2)) < tol)


def confounded_group_references(structures: dict[str, Any], X: Any) -> dict[str, GroupedPedigree]:
    """Fixed-group structures that need a reference group for the fixed design ``X``.

    Every animal's group contributions sum to one, so when ``X`` spans the constant
    column the sum of the fixed group effects is not estimable.  Each fixed
    :class:`GroupedPedigree` without a reference gets its first group as reference,
    with a :class:`~mixedblup.errors.RankDeficiencyWarning`; the returned mapping
    holds only the replaced structures (term name -> structure).
    """
    import dataclasses
    import warnings

    from .errors import RankDeficiencyWarning

    todo = {name: s for name, s in structures.items()
            if isinstance(s, GroupedPedigree) and s.groups == "fixed" and s.reference is None}
    if not todo or not spans_constant(X):
        return {}
    out = {}
    for name, s in todo.items():
        ref = s.pedigree.groups[0]
        out[name] = dataclasses.replace(s, reference=ref)
        warnings.warn(
            f"the fixed unknown parent groups of {name!r} are confounded with the fixed part (it spans "
            f"the constant column and every animal's group contributions sum to one): group {ref!r} is "
            "set to zero as reference, the other group solutions are differences from it; pass "
            "GroupedPedigree(..., reference=code) to choose the reference, or fit the groups as random",
            RankDeficiencyWarning,
            stacklevel=3,
        )
    return out
