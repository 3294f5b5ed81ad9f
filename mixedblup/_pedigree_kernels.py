"""Compiled pedigree kernels (internal): exact inbreeding by an indirect method.

:func:`inbreeding_indirect` computes exact inbreeding coefficients with Colleau's (2002)
indirect method as organised by Sargolzaei, Iwaisaki & Colleau (2005): ``F_i = a_{s,d}/2``
and, for one sire ``s`` at a time, the column ``A e_s = T D T' e_s`` is computed by

1. an *upward* sweep over the ancestors of ``s`` only (``u = T' e_s``: the path
   coefficients ``L_sk``), in decreasing position order;
2. a *downward* sweep ``w_j = (w_{s_j} + w_{d_j}) / 2 + d_j u_j`` over the mates of ``s``
   and their ancestors only (an ancestor-closed set, so every parent value is ready),
   in increasing position order.

Then ``a_{s,d} = w_d`` for every mate ``d``.  Animals are processed generation by
generation, so the Mendelian sampling variances ``d_k`` of all ancestors are known when
needed.  Full sibs share one computation (each mate is visited once per sire), and a
sire's mates across a generation share one downward sweep.  Selfing (``s = d``) and one
known parent need no special case (one known parent gives ``F = 0``).

Every function is decorated with :func:`mixedblup._accel.jit`: compiled with numba
when available, plain (slow but identical) Python otherwise; ``.py_func`` is the
uncompiled version.  :func:`inbreeding_indirect_packed` is the same algorithm with
parents packed as ``int32`` pairs, generations as ``int16`` and ``u``/``w`` side by side
(about twice as fast on large pedigrees, where the sweeps are bound by cache misses);
it is used whenever the sizes fit those types.

References
----------
Colleau, J.-J. (2002). An indirect approach to the extensive calculation of relationship
coefficients. Genet. Sel. Evol. 34, 409-421.
Sargolzaei, M., Iwaisaki, H. & Colleau, J.-J. (2005). A fast algorithm for computing
inbreeding coefficients in large populations. J. Anim. Breed. Genet. 122, 325-331.
"""

from __future__ import annotations

import numpy as np

from ._accel import jit

__all__ = [
    "collect_ancestors",
    "inbreeding_indirect",
    "inbreeding_indirect_packed",
    "mendelian_from_f",
]


@jit
def collect_ancestors(
    seeds: np.ndarray,
    n_seeds: int,
    sire: np.ndarray,
    dam: np.ndarray,
    mark: np.ndarray,
    stamp: int,
    out: np.ndarray,
) -> int:
    """Write ``seeds[:n_seeds]`` and all their ancestors into ``out``; return the count.

    ``mark[k] == stamp`` flags animals already collected (the caller bumps ``stamp``
    between calls, so nothing needs resetting).  Iterative (``out`` is the stack).
    """
    m = 0
    for t in range(n_seeds):
        x = seeds[t]
        if mark[x] != stamp:
            mark[x] = stamp
            out[m] = x
            m += 1
    head = 0
    while head < m:
        x = out[head]
        head += 1
        p = sire[x]
        if p >= 0 and mark[p] != stamp:
            mark[p] = stamp
            out[m] = p
            m += 1
        p = dam[x]
        if p >= 0 and mark[p] != stamp:
            mark[p] = stamp
            out[m] = p
            m += 1
    return m


@jit
def mendelian_from_f(sire: np.ndarray, dam: np.ndarray, F: np.ndarray, i: int) -> float:
    """``d_i = 1 - (1 + F_s)/4 - (1 + F_d)/4``, an unknown parent contributing 0."""
    out = 1.0
    s = sire[i]
    d = dam[i]
    if s >= 0:
        out -= 0.25 * (1.0 + F[s])
    if d >= 0:
        out -= 0.25 * (1.0 + F[d])
    return out


@jit
def inbreeding_indirect(
    sire: np.ndarray, dam: np.ndarray, gen: np.ndarray, members: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inbreeding coefficients and Mendelian sampling variances.

    Parameters
    ----------
    sire, dam : numpy.ndarray
        int64 parent positions, -1 unknown; every parent precedes its offspring.
    members, starts : numpy.ndarray
        Animals grouped by generation: ``members[starts[g]:starts[g + 1]]`` are the
        animals of generation ``g`` (parents are always in an earlier generation).

    Returns
    -------
    F, d : numpy.ndarray
        float64, in position order.
    """
    n = sire.shape[0]
    F = np.zeros(n)
    dv = np.ones(n)
    u = np.zeros(n)  # path coefficients L_sk of the current sire's ancestors
    w = np.zeros(n)  # a_{s, j} for the mates of the current sire and their ancestors
    mark = np.zeros(n, dtype=np.int64)
    stamp = 0
    anc = np.empty(n, dtype=np.int64)
    closed = np.empty(n, dtype=np.int64)
    n_levels = starts.shape[0] - 1
    bucket = np.zeros(n_levels + 1, dtype=np.int64)
    for g in range(n_levels):
        a = starts[g]
        b = starts[g + 1]
        for t in range(a, b):
            i = members[t]
            dv[i] = mendelian_from_f(sire, dam, F, i)
        # offspring of this generation with both parents known, sorted by (sire, dam)
        cnt = 0
        for t in range(a, b):
            i = members[t]
            if sire[i] >= 0 and dam[i] >= 0:
                cnt += 1
        if cnt == 0:
            continue
        kids = np.empty(cnt, dtype=np.int64)
        keys = np.empty(cnt, dtype=np.int64)
        cnt = 0
        for t in range(a, b):
            i = members[t]
            if sire[i] >= 0 and dam[i] >= 0:
                kids[cnt] = i
                keys[cnt] = sire[i] * n + dam[i]
                cnt += 1
        order = np.argsort(keys)
        kids = kids[order]
        keys = keys[order]
        lo = 0
        while lo < cnt:
            s = sire[kids[lo]]
            hi = lo
            while hi < cnt and sire[kids[hi]] == s:
                hi += 1
            # distinct mates of s in this generation
            mates = np.empty(hi - lo, dtype=np.int64)
            nm = 0
            last = -1
            for t in range(lo, hi):
                dm = dam[kids[t]]
                if dm != last:
                    mates[nm] = dm
                    nm += 1
                    last = dm
            # 1. upward sweep over the ancestors of s: u = L[s, :]
            stamp += 1
            one = np.empty(1, dtype=np.int64)
            one[0] = s
            na = collect_ancestors(one, 1, sire, dam, mark, stamp, anc)
            up = _by_generation(anc, na, gen, n_levels, bucket)
            u[s] = 1.0
            for t in range(na - 1, -1, -1):
                k = up[t]
                uk = u[k]
                p = sire[k]
                if p >= 0:
                    u[p] += 0.5 * uk
                p = dam[k]
                if p >= 0:
                    u[p] += 0.5 * uk
            # 2. downward sweep over the mates and their ancestors: w = A e_s there
            stamp += 1
            nc = collect_ancestors(mates, nm, sire, dam, mark, stamp, closed)
            down = _by_generation(closed, nc, gen, n_levels, bucket)
            for t in range(nc):
                j = down[t]
                val = dv[j] * u[j]
                p = sire[j]
                if p >= 0:
                    val += 0.5 * w[p]
                p = dam[j]
                if p >= 0:
                    val += 0.5 * w[p]
                w[j] = val
            for t in range(lo, hi):
                i = kids[t]
                F[i] = 0.5 * w[dam[i]]
            for t in range(na):
                u[up[t]] = 0.0
            for t in range(nc):
                w[down[t]] = 0.0
            lo = hi
    return F, dv


@jit
def _by_generation(items: np.ndarray, m: int, gen: np.ndarray, n_levels: int, count: np.ndarray) -> np.ndarray:
    """``items[:m]`` ordered by generation (counting sort; order within a generation free)."""
    count[:] = 0
    for t in range(m):
        count[gen[items[t]] + 1] += 1
    for g in range(n_levels):
        count[g + 1] += count[g]
    out = np.empty(m, dtype=np.int64)
    for t in range(m):
        x = items[t]
        k = gen[x]
        out[count[k]] = x
        count[k] += 1
    return out


@jit
def _collect_packed(seeds, n_seeds, par, mark, stamp, out):
    m = 0
    for t in range(n_seeds):
        x = seeds[t]
        if mark[x] != stamp:
            mark[x] = stamp
            out[m] = x
            m += 1
    head = 0
    while head < m:
        x = out[head]
        head += 1
        p = par[x, 0]
        if p >= 0 and mark[p] != stamp:
            mark[p] = stamp
            out[m] = p
            m += 1
        p = par[x, 1]
        if p >= 0 and mark[p] != stamp:
            mark[p] = stamp
            out[m] = p
            m += 1
    return m


@jit
def _by_generation_packed(items, m, level, n_levels, count, out):
    count[:] = 0
    for t in range(m):
        count[level[items[t]] + 1] += 1
    for g in range(n_levels):
        count[g + 1] += count[g]
    for t in range(m):
        x = items[t]
        k = level[x]
        out[count[k]] = x
        count[k] += 1


@jit
def inbreeding_indirect_packed(sire, dam, gen, members, starts):
    """:func:`inbreeding_indirect` with cache-friendlier data layout (same results)."""
    n = sire.shape[0]
    par = np.empty((n, 2), dtype=np.int32)
    level = np.empty(n, dtype=np.int16)
    for i in range(n):
        par[i, 0] = sire[i]
        par[i, 1] = dam[i]
        level[i] = gen[i]
    F = np.zeros(n)
    dv = np.ones(n)
    uw = np.zeros((n, 2))  # u (path coefficients of the sire) and w (a_{s,j}) side by side
    mark = np.zeros(n, dtype=np.int32)
    stamp = 0
    anc = np.empty(n, dtype=np.int32)
    closed = np.empty(n, dtype=np.int32)
    up = np.empty(n, dtype=np.int32)
    down = np.empty(n, dtype=np.int32)
    n_levels = starts.shape[0] - 1
    bucket = np.zeros(n_levels + 1, dtype=np.int64)
    one = np.empty(1, dtype=np.int32)
    for g in range(n_levels):
        a = starts[g]
        b = starts[g + 1]
        cnt = 0
        for t in range(a, b):
            i = members[t]
            dv[i] = mendelian_from_f(sire, dam, F, i)
            if sire[i] >= 0 and dam[i] >= 0:
                cnt += 1
        if cnt == 0:
            continue
        kids = np.empty(cnt, dtype=np.int64)
        keys = np.empty(cnt, dtype=np.int64)
        cnt = 0
        for t in range(a, b):
            i = members[t]
            if sire[i] >= 0 and dam[i] >= 0:
                kids[cnt] = i
                keys[cnt] = sire[i] * n + dam[i]
                cnt += 1
        order = np.argsort(keys)
        kids = kids[order]
        mates = np.empty(cnt, dtype=np.int32)
        lo = 0
        while lo < cnt:
            s = sire[kids[lo]]
            hi = lo
            while hi < cnt and sire[kids[hi]] == s:
                hi += 1
            nm = 0
            last = -1
            for t in range(lo, hi):
                dm = dam[kids[t]]
                if dm != last:
                    mates[nm] = dm
                    nm += 1
                    last = dm
            stamp += 1
            one[0] = s
            na = _collect_packed(one, 1, par, mark, stamp, anc)
            _by_generation_packed(anc, na, level, n_levels, bucket, up)
            uw[s, 0] = 1.0
            for t in range(na - 1, -1, -1):
                k = up[t]
                uk = 0.5 * uw[k, 0]
                p = par[k, 0]
                if p >= 0:
                    uw[p, 0] += uk
                p = par[k, 1]
                if p >= 0:
                    uw[p, 0] += uk
            stamp += 1
            nc = _collect_packed(mates, nm, par, mark, stamp, closed)
            _by_generation_packed(closed, nc, level, n_levels, bucket, down)
            for t in range(nc):
                j = down[t]
                val = dv[j] * uw[j, 0]
                p = par[j, 0]
                if p >= 0:
                    val += 0.5 * uw[p, 1]
                p = par[j, 1]
                if p >= 0:
                    val += 0.5 * uw[p, 1]
                uw[j, 1] = val
            for t in range(lo, hi):
                i = kids[t]
                F[i] = 0.5 * uw[dam[i], 1]
            for t in range(na):
                uw[up[t], 0] = 0.0
            for t in range(nc):
                uw[down[t], 1] = 0.0
            lo = hi
    return F, dv
