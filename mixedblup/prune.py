"""Exact pedigree pruning.

:func:`prune` removes animals that carry no information about a set of animals to keep
(recorded animals, animals to predict), such that the relationship matrix among every
remaining animal, and hence every BLUP of a kept animal (and the likelihood), is
unchanged.  The rule, applied until nothing changes (as nadiv's ``prunePed``):

1. an animal that is not kept and has no remaining offspring is removed (it is a
   leaf: nothing below it is kept);
2. an animal that is not kept, has no remaining parents and exactly one remaining
   offspring link is removed, and that offspring's parent becomes unknown.

Why 2 is exact: a founder ``x`` is unrelated to everyone but its descendants, who all
descend through its single offspring ``c``; ``A[c, j] = (A[x, j] + A[p, j]) / 2`` with
``A[x, j] = 0`` for every ``j`` that is not a descendant of ``c``, and ``c``'s
inbreeding does not involve ``x``; making ``x`` unknown changes ``c``'s Mendelian
sampling variance but not ``A``.  A founder with two links (two offspring, or one
selfed offspring) creates a relationship and is kept; an animal with a known parent and
one offspring passes relationships on and is kept.  With unknown parent groups a
founder is removed only when both its unknown parents are in the same group, which its
offspring's parent then takes (so ``Q`` is unchanged too).

Both rules are single sweeps in a compiled kernel (leaves from the youngest animal
down, founders from the oldest up), so the result is reached in ``O(n)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ._accel import jit

__all__ = ["prune", "prune_kernel"]


@jit
def prune_kernel(
    sire: np.ndarray, dam: np.ndarray, keep: np.ndarray, sg: np.ndarray, dg: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """Alive mask after pruning; ``sire``, ``dam``, ``sg``, ``dg`` are updated in place.

    Positions are parents-first; ``sg``/``dg`` are group codes of unknown parents
    (all -1 without groups).  Returns (alive, removed leaves, removed founders).
    """
    n = sire.shape[0]
    links = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if sire[i] >= 0:
            links[sire[i]] += 1
        if dam[i] >= 0:
            links[dam[i]] += 1
    alive = np.ones(n, dtype=np.bool_)
    leaves = 0
    for i in range(n - 1, -1, -1):
        if not keep[i] and links[i] == 0:
            alive[i] = False
            leaves += 1
            if sire[i] >= 0:
                links[sire[i]] -= 1
            if dam[i] >= 0:
                links[dam[i]] -= 1
    # the single remaining offspring link of each animal (child, role)
    child = np.full(n, -1, dtype=np.int64)
    role = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if alive[i]:
            if sire[i] >= 0:
                child[sire[i]] = i
                role[sire[i]] = 0
            if dam[i] >= 0:
                child[dam[i]] = i
                role[dam[i]] = 1
    founders = 0
    for i in range(n):
        if alive[i] and not keep[i] and sire[i] < 0 and dam[i] < 0 and links[i] == 1:
            if sg[i] != dg[i]:
                continue
            c = child[i]
            alive[i] = False
            founders += 1
            if role[i] == 0:
                sire[c] = -1
                sg[c] = sg[i]
            else:
                dam[c] = -1
                dg[c] = dg[i]
    return alive, leaves, founders


def prune(ped: Any, keep: Iterable[Any]) -> Any:
    """Exact pruning of ``ped`` to what matters for ``keep`` (see the module docstring).

    Returns
    -------
    Pedigree
        With ``prune_report``: a dict of ``n_before``, ``n_after``, ``n_keep``,
        ``removed_leaves``, ``removed_founders`` (links cut from kept lines).
    """
    from .pedigree import Pedigree, _stable_order, generations

    pos = ped.positions(keep, what="animals to keep")
    n = len(ped)
    mask = np.zeros(n, dtype=np.bool_)
    mask[pos] = True
    sire = np.array(ped.sire_pos, dtype=np.int64)
    dam = np.array(ped.dam_pos, dtype=np.int64)
    grouped = ped.sire_group_pos is not None
    sg = np.array(ped.sire_group_pos, dtype=np.int64) if grouped else np.full(n, -1, dtype=np.int64)
    dg = np.array(ped.dam_group_pos, dtype=np.int64) if grouped else np.full(n, -1, dtype=np.int64)
    alive, leaves, founders = prune_kernel(sire, dam, mask, sg, dg)
    sel = np.flatnonzero(alive)
    new = np.full(n, -1, dtype=np.int64)
    new[sel] = np.arange(sel.size)
    s = sire[sel]
    d = dam[sel]
    s = np.where(s >= 0, new[np.maximum(s, 0)], -1)
    d = np.where(d >= 0, new[np.maximum(d, 0)], -1)
    gen = generations(s, d)
    order = _stable_order(gen)
    renum = np.empty(order.size, dtype=np.int64)
    renum[order] = np.arange(order.size)
    s, d = s[order], d[order]
    s = np.where(s >= 0, renum[np.maximum(s, 0)], -1)
    d = np.where(d >= 0, renum[np.maximum(d, 0)], -1)
    ids = ped.ids[sel][order]
    added = set(ped.added_founders)
    out = Pedigree.__new__(Pedigree)
    out._setup(
        pd.Index(ids, dtype=object, name="id"), s, d, gen[order],
        tuple(x for x in ped.added_founders if x in set(ids)) if added else (),
        ped.dropped_duplicates,
    )
    out.resolved_conflicts = ped.resolved_conflicts
    if grouped:
        out._set_groups(ped.groups, sg[sel][order], dg[sel][order])
    out.prune_report = {
        "n_before": n,
        "n_after": int(sel.size),
        "n_keep": int(np.unique(pos).size),
        "removed_leaves": int(leaves),
        "removed_founders": int(founders),
    }
    return out
