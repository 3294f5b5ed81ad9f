"""Pedigrees: checks, ordering, inbreeding and the sparse inverse relationship matrix.

A :class:`Pedigree` is built from a data frame with :meth:`Pedigree.from_frame`, which
normalises IDs, applies unknown-parent codes and runs the checks of the bad-inputs
catalogue (section C).  Animals are then sorted parents-before-offspring (generation,
then input order); that order is the order of every vector and matrix returned.

Methods
-------
* Generation numbers: an iterative (vectorised) Kahn topological sort; loops are
  reported as paths found by an explicit-stack Tarjan search on the remainder.
* Inbreeding: exact, by tracing each animal's ancestors with their path
  coefficients ``L`` (rows of ``L = (I - P)^-1``, ``A = L D L'``) in order of
  decreasing generation, as in Meuwissen & Luo (1992); the tracing is vectorised
  over many animals at once, done once per distinct pair of parents, and batched to
  bound memory.  Coefficients too small to change any result by 1e-17 are dropped
  (see ``_NEGLIGIBLE``), so long single lines are not traced to the end.  The kernel
  :func:`inbreeding_kernel` takes only the parent position arrays, so a compiled
  version can replace it.  Precision: after ``k`` generations of selfing
  ``d = 2^-(k+1)`` is known only to about ``2^(k-52)`` relative accuracy, as in any
  double-precision computation from ``F``.
* ``A^-1``: Henderson's (1976) rules with inbreeding through the Mendelian sampling
  variances ``d_i`` (Quaas 1976), ``A^-1 = (I - P)' D^-1 (I - P)``, assembled as COO
  triplets, never dense.  ``log|A| = sum(log d_i)``.
* Dense ``A`` (only on request): the tabular method, vectorised per generation.
* Single relationships: ``sum_k L_xk L_yk d_k`` over traced ancestors, without ``A``.

Nothing here recurses, so pedigrees with thousands of generations work.

References
----------
Henderson, C. R. (1976). A simple method for computing the inverse of a numerator
relationship matrix used in prediction of breeding values. Biometrics 32, 69-83.
Quaas, R. L. (1976). Computing the diagonal elements and inverse of a large numerator
relationship matrix. Biometrics 32, 949-953.
Meuwissen, T. H. E. & Luo, Z. (1992). Computing inbreeding coefficients in large
populations. Genetics Selection Evolution 24, 305-313.
Mrode, R. A. (2005). Linear Models for the Prediction of Animal Breeding Values, 2nd ed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._arrays import distinct
from ._pedigree_checks import ingest, loop_error
from ._pedigree_kernels import inbreeding_indirect, inbreeding_indirect_packed
from .errors import PedigreeError, preview
from .labels import label_to_str, normalize_labels

__all__ = ["Pedigree", "read_pedigree", "inbreeding_kernel", "inbreeding_vectorised", "generations"]

# Tracing is batched over consecutive animals.  Each batch walks every generation below it,
# so the Python overhead grows with (batches x generations) and the work with the entries
# traced; the batch width balances the two and bounds memory.
_MEAN_ENTRIES = 100_000  # target entries per generation of a batch (small arrays stay in cache)
_PEAK_ENTRIES = 2_000_000  # cap on the entries at the busiest generation of a batch (memory)
_STORED_ENTRIES = 2_000_000  # cap on in-batch entries kept for the batch's own solve (memory)
_SMALL = 4096  # below this many entries a generation is summed by sorting rather than via CSR
# Ancestor coefficients L_xk (each <= 1) smaller than _NEGLIGIBLE / (2 n^2) are dropped.  What
# they would pass on to all further ancestors changes F or A by less than _NEGLIGIBLE, far
# below double rounding; it stops long single lines (L = 2^-k) from being traced for ever.
_NEGLIGIBLE = 1e-17


# --------------------------------------------------------------------------------------
# kernels (positions are indices into a parents-before-offspring order; -1 = unknown)
# --------------------------------------------------------------------------------------


def generations(sire: np.ndarray, dam: np.ndarray) -> np.ndarray:
    """Generation numbers by an iterative, vectorised Kahn sort.

    Parameters
    ----------
    sire, dam : numpy.ndarray
        int64 parent indices (any order), -1 for unknown.

    Returns
    -------
    numpy.ndarray
        int64: 0 for founders, ``1 + max(generation of parents)`` otherwise, and -1
        for animals on a loop or descending from one.
    """
    sire = np.asarray(sire, dtype=np.int64)
    dam = np.asarray(dam, dtype=np.int64)
    n = sire.shape[0]
    child = np.arange(n, dtype=np.int64)
    par = np.concatenate([sire, dam])
    kid = np.concatenate([child, child])
    keep = par >= 0
    par = par[keep]
    kid = kid[keep]
    kids_sorted = kid[np.argsort(par)]  # grouped by parent (order within a group is free)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(par, minlength=n), out=ptr[1:])
    indeg = (sire >= 0).astype(np.int64) + (dam >= 0)
    gen = np.full(n, -1, dtype=np.int64)
    frontier = np.flatnonzero(indeg == 0)
    level = 0
    while frontier.size:
        gen[frontier] = level
        starts = ptr[frontier]
        counts = ptr[frontier + 1] - starts
        total = int(counts.sum())
        if total == 0:
            break
        offsets = np.cumsum(counts) - counts
        gather = np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, counts)
        kids = kids_sorted[gather]
        np.subtract.at(indeg, kids, 1)
        # an offspring of two frontier parents appears twice
        ready = np.sort(kids[indeg[kids] == 0])
        if ready.size > 1:
            ready = ready[np.concatenate(([True], ready[1:] != ready[:-1]))]
        frontier = ready
        level += 1
    return gen


def _stable_order(gen: np.ndarray) -> np.ndarray:
    """Stable argsort of generation numbers (radix sort when they fit in int16)."""
    if gen.size and 0 <= gen.min() and gen.max() < np.iinfo(np.int16).max:
        return np.argsort(gen.astype(np.int16), kind="stable")
    return np.argsort(gen, kind="stable")


class _Levels:
    """Animals grouped by generation: members of each level and each animal's rank in it."""

    def __init__(self, sire: np.ndarray, dam: np.ndarray, gen: np.ndarray) -> None:
        self.sire = sire
        self.dam = dam
        self.gen = gen
        order = _stable_order(gen)
        sorted_gen = gen[order]
        n_levels = int(sorted_gen[-1]) + 1 if sorted_gen.size else 0
        self.starts = np.searchsorted(sorted_gen, np.arange(n_levels + 1))
        self.members = order
        loc = np.empty_like(order)
        loc[order] = np.arange(order.size) - self.starts[sorted_gen]
        self.loc = loc
        self.small = n_levels < np.iinfo(np.int16).max
        n = max(int(gen.size), 1)
        self.floor = _NEGLIGIBLE / (2.0 * n * n)


def _push(
    buckets: dict[int, list], levels: _Levels, r: np.ndarray, c: np.ndarray, v: np.ndarray
) -> None:
    """File entries (row r, ancestor c, coefficient v) under the generation of c."""
    for _ in range(3):  # peel off the youngest generation while few generations are mixed
        if r.size == 0:
            return
        lv = levels.gen[c]
        lo, hi = int(lv.min()), int(lv.max())
        if lo == hi:
            buckets[lo].append((r, c, v))
            return
        top = lv == hi
        buckets[hi].append((r[top], c[top], v[top]))
        rest = ~top
        r, c, v = r[rest], c[rest], v[rest]
    if r.size == 0:
        return
    lv = levels.gen[c]
    order = np.argsort(lv.astype(np.int16) if levels.small else lv, kind="stable")
    lv = lv[order]
    r, c, v = r[order], c[order], v[order]
    cuts = np.flatnonzero(lv[1:] != lv[:-1]) + 1
    bounds = np.concatenate(([0], cuts, [lv.size]))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        buckets[int(lv[a])].append((r[a:b], c[a:b], v[a:b]))


def _trace(
    levels: _Levels,
    n_rows: int,
    r: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    fold: tuple[int, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Rows ``x_r = sum v * L[c, :]`` of ancestor coefficients, traced level by level.

    Starting entries ``(r, c, v)`` are expanded from the youngest generation down:
    entries at one generation are summed per (row, ancestor), which is then final,
    and passed on to both parents with half the coefficient (Meuwissen & Luo 1992,
    vectorised over all rows).

    Parameters
    ----------
    levels : _Levels
    n_rows : int
    r, c, v : numpy.ndarray
        Starting rows, ancestors and coefficients.
    fold : (b0, d, acc), optional
        Final entries with ancestor position ``< b0`` are not returned but folded
        into ``acc[row] += coefficient**2 * d[ancestor]`` (in place).

    Returns
    -------
    row, ancestor, coefficient : numpy.ndarray
        One entry per distinct (row, ancestor) that was not folded.
    stats : (int, int, int)
        Largest number of entries at one generation, total entries, generations visited.
    """
    buckets: dict[int, list] = defaultdict(list)
    _push(buckets, levels, r, c, v)
    out_r: list[np.ndarray] = []
    out_c: list[np.ndarray] = []
    out_v: list[np.ndarray] = []
    peak = total = visited = 0
    if buckets:
        sire, dam, gen = levels.sire, levels.dam, levels.gen
        for g in range(max(buckets), -1, -1):
            pieces = buckets.pop(g, None)
            if not pieces:
                continue
            if len(pieces) == 1:
                r, c, v = pieces[0]
            else:
                r = np.concatenate([p[0] for p in pieces])
                c = np.concatenate([p[1] for p in pieces])
                v = np.concatenate([p[2] for p in pieces])
            peak = max(peak, r.size)
            total += r.size
            visited += 1
            width = int(levels.starts[g + 1] - levels.starts[g])
            if r.size <= _SMALL:  # few entries: a plain sort is cheaper than building a CSR
                key = r * width + levels.loc[c] if width > 1 else r
                if key.size > 1 and not (key[1:] > key[:-1]).all():  # else: sorted, no duplicates
                    order = np.argsort(key, kind="stable")
                    key = key[order]
                    v = v[order]
                    first = np.empty(key.size, dtype=bool)
                    first[0] = True
                    np.not_equal(key[1:], key[:-1], out=first[1:])
                    if not first.all():
                        starts = np.flatnonzero(first)
                        v = np.add.reduceat(v, starts)
                        key = key[starts]
                r = key // width
                c = levels.members[levels.starts[g] + key % width]
            else:
                m = sp.csr_array((v, (r, levels.loc[c])), shape=(n_rows, width))  # sums duplicates
                v = m.data
                r = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(m.indptr))
                c = levels.members[levels.starts[g] + m.indices]
            if v.min() < levels.floor:  # negligible coefficients (see _NEGLIGIBLE)
                keep = v >= levels.floor
                r, c, v = r[keep], c[keep], v[keep]
                if r.size == 0:
                    continue
            if fold is None:
                out_r.append(r)
                out_c.append(c)
                out_v.append(v)
            else:
                b0, dvar, acc = fold
                below = c < b0
                if below.all():
                    np.add.at(acc, r, v * v * dvar[c])
                else:
                    np.add.at(acc, r[below], (v * v * dvar[c])[below])
                    inside = ~below
                    out_r.append(r[inside])
                    out_c.append(c[inside])
                    out_v.append(v[inside])
            s = sire[c]
            d = dam[c]
            has_s = s >= 0
            has_d = d >= 0
            half = 0.5 * v
            if has_s.all() and has_d.all():
                nr, nc = np.concatenate([r, r]), np.concatenate([s, d])
                nv = np.concatenate([half, half])
            else:
                nr = np.concatenate([r[has_s], r[has_d]])
                nc = np.concatenate([s[has_s], d[has_d]])
                nv = np.concatenate([half[has_s], half[has_d]])
            if nc.size and g > 0 and (gen[nc] == g - 1).all():  # the usual case: no sorting
                buckets[g - 1].append((nr, nc, nv))
            else:
                _push(buckets, levels, nr, nc, nv)
    if not out_r:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0), (peak, total, visited)
    return (
        np.concatenate(out_r),
        np.concatenate(out_c),
        np.concatenate(out_v),
        (peak, total, visited),
    )


def _mendelian(sire: np.ndarray, dam: np.ndarray, F: np.ndarray) -> np.ndarray:
    """``d = 1 - 1/4 (1 + F_s) - 1/4 (1 + F_d)``, an unknown parent contributing 0."""
    has_s = sire >= 0
    has_d = dam >= 0
    fs = np.where(has_s, 1.0 + F[np.where(has_s, sire, 0)], 0.0)
    fd = np.where(has_d, 1.0 + F[np.where(has_d, dam, 0)], 0.0)
    return 1.0 - 0.25 * (fs + fd)


def inbreeding_kernel(
    sire_pos: np.ndarray, dam_pos: np.ndarray, generation: np.ndarray | None = None
) -> np.ndarray:
    """Exact inbreeding coefficients of a parents-first pedigree (compiled indirect method).

    Colleau's (2002) indirect method organised by sire as in Sargolzaei, Iwaisaki &
    Colleau (2005); see :mod:`mixedblup._pedigree_kernels`.  Compiled with numba through
    :func:`mixedblup._accel.jit` (plain Python without numba: same values, slower).

    Parameters
    ----------
    sire_pos, dam_pos : numpy.ndarray
        int64 parent positions, -1 for unknown; every parent precedes its offspring.
        A parent may be both sire and dam (selfing).
    generation : numpy.ndarray, optional
        Generation numbers (:func:`generations`), computed when omitted.

    Returns
    -------
    numpy.ndarray
        Inbreeding coefficients, float64, in the same order.
    """
    return _inbreeding_and_d(sire_pos, dam_pos, generation)[0]


def _inbreeding_and_d(
    sire_pos: np.ndarray, dam_pos: np.ndarray, generation: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(F, d)`` by the compiled indirect kernel (see :func:`inbreeding_kernel`)."""
    sire = np.array(sire_pos, dtype=np.int64)  # writable copies: one numba signature
    dam = np.array(dam_pos, dtype=np.int64)
    if sire.size == 0:
        return np.zeros(0), np.ones(0)
    gen = generations(sire, dam) if generation is None else np.array(generation, dtype=np.int64)
    order = _stable_order(gen)
    n_levels = int(gen.max()) + 1
    starts = np.searchsorted(gen[order], np.arange(n_levels + 1)).astype(np.int64)
    if sire.size < np.iinfo(np.int32).max and n_levels < np.iinfo(np.int16).max:
        kernel = inbreeding_indirect_packed  # int32 / int16 layout: fewer cache misses
    else:
        kernel = inbreeding_indirect
    F, d = kernel(sire, dam, gen, order.astype(np.int64), starts)
    np.clip(F, 0.0, 1.0, out=F)  # exact in theory; removes rounding below 0 or above 1
    return F, d


def inbreeding_vectorised(
    sire_pos: np.ndarray, dam_pos: np.ndarray, generation: np.ndarray | None = None
) -> np.ndarray:
    """Exact inbreeding coefficients of a sorted pedigree (pure NumPy/SciPy, no compiler).

    Kept as the uncompiled reference for tests and benchmarks.

    For each distinct pair of parents the coefficients ``q = (L_s + L_d) / 2`` of the
    parents' ancestors are traced (:func:`_trace`); then ``F_i = sum_k q_k^2 d_k +
    d_i - 1``, where ``d`` are the Mendelian sampling variances.  Animals are
    processed in batches of consecutive positions: ancestors before the batch have
    known ``d`` and are summed while tracing; ancestors inside the batch are kept and
    summed generation by generation once their ``d`` is known.

    Parameters
    ----------
    sire_pos, dam_pos : numpy.ndarray
        int64 parent positions, -1 for unknown; every parent precedes its offspring.
        A parent may be both sire and dam (selfing).
    generation : numpy.ndarray, optional
        Generation numbers (:func:`generations`), computed when omitted.

    Returns
    -------
    numpy.ndarray
        Inbreeding coefficients, float64, in the same order.
    """
    sire = np.ascontiguousarray(sire_pos, dtype=np.int64)
    dam = np.ascontiguousarray(dam_pos, dtype=np.int64)
    n = sire.shape[0]
    gen = generations(sire, dam) if generation is None else np.asarray(generation, dtype=np.int64)
    levels = _Levels(sire, dam, gen)
    F = np.zeros(n)
    dvar = np.ones(n)
    # batch width (animals) from what the previous batch met, growing at most twofold
    width = 512
    peak_per_animal = 2.0  # entries at the busiest generation, per animal of the batch
    mean_per_animal = 2.0  # entries per generation visited, per animal of the batch
    stored_ratio = 0.0  # kept in-batch entries / width**2
    b0 = 0
    while b0 < n:
        limit = min(_MEAN_ENTRIES / mean_per_animal, _PEAK_ENTRIES / peak_per_animal)
        if stored_ratio > 0:
            limit = min(limit, np.sqrt(_STORED_ENTRIES / stored_ratio))
        w = int(min(2 * width, max(64.0, limit)))
        b1 = min(n, b0 + w)
        bs, bd = sire[b0:b1], dam[b0:b1]
        ks_all, kd_all = bs >= 0, bd >= 0
        members = np.flatnonzero(ks_all | kd_all)
        dvar[b0:b1] = 1.0
        if members.size == 0:
            b0 = b1
            continue
        # distinct parent pairs, numbered by generation (= their offspring's generation)
        key = (bs[members] + 1) * (n + 1) + (bd[members] + 1)
        pair_key, pair_of_member = np.unique(key, return_inverse=True)
        ps = pair_key // (n + 1) - 1
        pdm = pair_key % (n + 1) - 1
        ks, kd = ps >= 0, pdm >= 0
        pair_gen = 1 + np.maximum(
            np.where(ks, gen[np.where(ks, ps, 0)], -1), np.where(kd, gen[np.where(kd, pdm, 0)], -1)
        )
        by_gen = _stable_order(pair_gen)
        rank = np.empty_like(by_gen)
        rank[by_gen] = np.arange(by_gen.size)
        ps, pdm, ks, kd = ps[by_gen], pdm[by_gen], ks[by_gen], kd[by_gen]
        pair_gen = pair_gen[by_gen]
        pair_of = np.full(b1 - b0, -1, dtype=np.int64)
        pair_of[members] = rank[pair_of_member]
        n_pairs = pair_key.size
        rows = np.arange(n_pairs, dtype=np.int64)
        # sum_k q_k^2 d_k; ancestors before the batch are folded in while tracing
        q2d = np.zeros(n_pairs)
        r, c, v, (peak, total, visited) = _trace(
            levels,
            n_pairs,
            np.concatenate([rows[ks], rows[kd]]),
            np.concatenate([ps[ks], pdm[kd]]),
            np.full(int(ks.sum() + kd.sum()), 0.5),
            fold=(b0, dvar, q2d),
        )
        width = w
        peak_per_animal = max(peak / (b1 - b0), 0.5)
        mean_per_animal = max(total / max(visited, 1) / (b1 - b0), 0.5)
        stored_ratio = r.size / float(b1 - b0) ** 2
        # ancestors inside the batch: entries sorted by pair (pairs are sorted by generation)
        order = np.argsort(r, kind="stable")
        r, c, v2 = r[order], c[order], (v * v)[order]
        batch_gen = gen[b0:b1]
        animal_order = _stable_order(batch_gen)
        animal_gen = batch_gen[animal_order]
        cuts = np.concatenate(
            ([0], np.flatnonzero(animal_gen[1:] != animal_gen[:-1]) + 1, [animal_gen.size])
        )
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            g = animal_gen[a]
            group = animal_order[a:b] + b0
            dvar[group] = _mendelian(sire[group], dam[group], F)
            pa, pb = np.searchsorted(pair_gen, [g, g + 1])
            if pb == pa:
                continue
            if r.size:
                ea, eb = np.searchsorted(r, [pa, pb])
                if eb > ea:
                    q2d[pa:pb] += np.bincount(
                        r[ea:eb] - pa, weights=v2[ea:eb] * dvar[c[ea:eb]], minlength=pb - pa
                    )
            grp_pairs = pair_of[group - b0]
            with_parent = grp_pairs >= 0
            gi = group[with_parent]
            # exact in theory; clipping removes rounding below 0 or above 1
            F[gi] = np.clip(q2d[grp_pairs[with_parent]] + dvar[gi] - 1.0, 0.0, 1.0)
        b0 = b1
    return F


def _a_inverse(sire: np.ndarray, dam: np.ndarray, dvar: np.ndarray) -> sp.csc_matrix:
    """Henderson/Quaas ``A^-1 = (I - P)' D^-1 (I - P)`` from COO triplets.

    Animal ``i`` with ``alpha = 1 / d_i`` adds ``alpha`` at (i, i), ``-alpha/2`` at
    (i, s), (s, i), (i, d), (d, i) and ``alpha/4`` at (s, s), (d, d), (s, d), (d, s);
    unknown parents are left out and selfing (s == d) simply sums.  Diagonal
    contributions are summed with ``bincount``; the off-diagonal triplets and their
    mirror images are summed by the sparse constructor.
    """
    n = sire.shape[0]
    itype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    alpha = 1.0 / dvar
    quarter = 0.25 * alpha
    ks, kd = sire >= 0, dam >= 0
    selfed = ks & kd & (sire == dam)
    cross = ks & kd & ~selfed
    diag = alpha.copy()
    diag += np.bincount(sire[ks], weights=quarter[ks], minlength=n)
    diag += np.bincount(dam[kd], weights=quarter[kd], minlength=n)
    diag += np.bincount(sire[selfed], weights=2.0 * quarter[selfed], minlength=n)
    me = np.arange(n, dtype=itype)
    r = np.concatenate([me[ks], me[kd], sire[cross].astype(itype)])
    c = np.concatenate([sire[ks].astype(itype), dam[kd].astype(itype), dam[cross].astype(itype)])
    v = np.concatenate([-0.5 * alpha[ks], -0.5 * alpha[kd], quarter[cross]])
    out = sp.csc_matrix(
        (np.concatenate([v, v, diag]), (np.concatenate([r, c, me]), np.concatenate([c, r, me]))),
        shape=(n, n),
    )
    out.sum_duplicates()
    return out


def _tabular(sire: np.ndarray, dam: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """Dense ``A`` by the tabular method, one generation block at a time.

    Positions must be sorted by generation (parents in earlier blocks).
    """
    n = sire.shape[0]
    A = np.zeros((n, n))
    if n == 0:
        return A
    cuts = np.concatenate(([0], np.flatnonzero(gen[1:] != gen[:-1]) + 1, [n]))
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        s, d = sire[a:b], dam[a:b]
        ks, kd = s >= 0, d >= 0
        ss, dd = np.where(ks, s, 0), np.where(kd, d, 0)
        if a:
            left = 0.5 * (A[ss, :a] * ks[:, None] + A[dd, :a] * kd[:, None])
            A[a:b, :a] = left
            A[:a, a:b] = left.T
        block = 0.5 * (A[a:b][:, ss] * ks[None, :] + A[a:b][:, dd] * kd[None, :])
        diag = 1.0 + np.where(ks & kd, 0.5 * A[ss, dd], 0.0)
        block = np.tril(block, -1)
        block += block.T  # exactly symmetric (the two halves agree up to rounding)
        block[np.diag_indices(b - a)] = diag
        A[a:b, a:b] = block
    return A


def _as_label_list(labels: Any) -> list[Any]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        return [labels]
    return list(labels)


# --------------------------------------------------------------------------------------
# the Pedigree
# --------------------------------------------------------------------------------------


class Pedigree:
    """A checked pedigree, sorted parents-before-offspring.

    Build one with :meth:`from_frame`.  The order of :attr:`ids` (generation, then
    input order; added founders first within generation 0) is the order of every
    vector and matrix the methods return.

    Attributes
    ----------
    ids : pandas.Index
        Animal IDs (``str``, object dtype), parents before offspring.
    sire_pos, dam_pos : numpy.ndarray
        Read-only int64 positions of each animal's parents in :attr:`ids`, -1 = unknown.
    generation : numpy.ndarray
        Read-only int64 generation numbers (0 for founders).
    added_founders : tuple of str
        Parents that were not listed as animals and were added as founders.
    dropped_duplicates : tuple of str
        IDs of exact duplicate rows that were dropped (one entry per dropped row).
    """

    def __init__(
        self,
        ids: Iterable[Any],
        sire_pos: np.ndarray,
        dam_pos: np.ndarray,
        *,
        added_founders: Iterable[str] = (),
        dropped_duplicates: Iterable[str] = (),
    ) -> None:
        """Wrap already sorted arrays (internal; use :meth:`from_frame`).

        Parameters
        ----------
        ids : iterable of str
            Unique IDs in parents-before-offspring order.
        sire_pos, dam_pos : numpy.ndarray
            Parent positions, -1 for unknown, each smaller than the animal's position.
        added_founders, dropped_duplicates : iterable of str
            Records of automatic fixes.
        """
        index = pd.Index(normalize_labels(list(ids), what="pedigree IDs"), dtype=object, name="id")
        sire = np.array(sire_pos, dtype=np.int64)
        dam = np.array(dam_pos, dtype=np.int64)
        n = len(index)
        me = np.arange(n)
        if sire.shape != (n,) or dam.shape != (n,):
            raise PedigreeError(f"sire_pos and dam_pos must have one entry per animal ({n})")
        if index.hasnans or not index.is_unique:
            raise PedigreeError("pedigree IDs must be unique and not missing")
        for name, arr in (("sire", sire), ("dam", dam)):
            bad = (arr < -1) | (arr >= me) & (arr >= 0)
            if bad.any():
                raise PedigreeError(
                    f"{name} positions must precede their offspring (parents-before-offspring "
                    f"order); violated for {preview(index[bad].tolist())}"
                )
        gen = generations(sire, dam)
        if (np.diff(gen) < 0).any():
            order = _stable_order(gen)
            new = np.empty(n, dtype=np.int64)
            new[order] = me
            index = index[order]
            sire = np.where(sire[order] >= 0, new[np.maximum(sire[order], 0)], -1)
            dam = np.where(dam[order] >= 0, new[np.maximum(dam[order], 0)], -1)
            gen = gen[order]
        self._setup(index, sire, dam, gen, tuple(added_founders), tuple(dropped_duplicates))

    def _setup(
        self,
        index: pd.Index,
        sire: np.ndarray,
        dam: np.ndarray,
        gen: np.ndarray,
        added_founders: tuple[str, ...],
        dropped_duplicates: tuple[str, ...],
    ) -> None:
        for arr in (sire, dam, gen):
            arr.flags.writeable = False
        self.ids: pd.Index = index
        self.sire_pos: np.ndarray = sire
        self.dam_pos: np.ndarray = dam
        self.generation: np.ndarray = gen
        self.added_founders: tuple[str, ...] = added_founders
        self.dropped_duplicates: tuple[str, ...] = dropped_duplicates
        self.resolved_conflicts: tuple[str, ...] = ()
        self.groups: pd.Index = pd.Index([], dtype=object, name="group")
        self.sire_group_pos: np.ndarray | None = None
        self.dam_group_pos: np.ndarray | None = None
        self._F: np.ndarray | None = None
        self._d: np.ndarray | None = None
        self._levels: _Levels | None = None

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        *,
        id: str,
        sire: str,
        dam: str,
        unknown: Iterable[str] = ("0", "", "NA", "."),
        birth: str | None = None,
        allow_selfing: bool = False,
        on_conflict: str = "error",
        sex: str | None = None,
        male: Iterable[Any] = ("M", "MALE", "1"),
        female: Iterable[Any] = ("F", "FEMALE", "2"),
        sex_check: str = "error",
        min_interval: float = 0.0,
        max_unlisted: float = 0.9,
        upg: str | tuple[str, str] | None = None,
        min_group_size: int = 5,
        leading_zeros: str = "error",
    ) -> Pedigree:
        """Build a checked, sorted pedigree from a data frame.

        ``df`` may be a pandas or a polars frame (converted by
        :func:`mixedblup.interop.as_pandas`).  Further options (see
        ``docs/pedigree-engine.md``): ``on_conflict="error" | "most_complete" | "first"``
        for duplicate IDs with different parents (C4; the last two warn and record
        :attr:`resolved_conflicts`); ``sex=`` a column checked against the parental roles
        with codes ``male=`` / ``female=`` (case-insensitive; others unchecked), an error
        or with ``sex_check="warn"`` a warning (C10); ``min_interval=`` the shortest
        parent-offspring birth interval in the units of ``birth`` (days for dates, C11);
        ``max_unlisted=`` the largest share of distinct parents that may be missing from
        the animals before the IDs are taken to have changed type (C12, from 20 parents
        on); ``upg=`` unknown parent groups: a column with the group of each animal's
        unknown parent(s), or a pair (sire group column, dam group column), and
        ``min_group_size`` below which a group is warned about (C13);
        ``leading_zeros="error" | "ignore"``: IDs that differ only by leading zeros
        (``"0012"`` and ``"12"``) are an error unless ignored (C12).

        IDs are normalised with :func:`~mixedblup.labels.normalize_labels` (``12``,
        ``"12"`` and ``12.0`` are one animal).  Rows may be in any order.  Read files
        with ``pd.read_csv(path, dtype=str, keep_default_na=False)``.

        Parameters
        ----------
        df : pandas.DataFrame
            One row per animal.
        id, sire, dam : str
            Column names (keyword-only, so sire and dam cannot be swapped by position).
        unknown : iterable of str
            Codes for an unknown parent, compared after normalisation; missing values
            are always unknown.  A parent code that looks like an unknown code
            (``0``, ``00``, ``-``, ``*``, ``na``, ``none``...) but is neither in
            ``unknown`` nor an animal ID is an error.
        birth : str, optional
            Column of birth years, numbers or dates; a parent born on or after its
            offspring is an error.
        allow_selfing : bool
            Allow an animal to be both sire and dam (also of the same offspring), for
            monoecious species.  Inbreeding and ``A^-1`` handle selfing exactly.

        Returns
        -------
        Pedigree

        Raises
        ------
        DataError
            Missing columns, fractional-number IDs, unparseable birth values.
        PedigreeError
            Missing IDs, IDs equal to an unknown code, suspicious parent codes,
            conflicting duplicate rows, own parent, an animal used as both sire and dam
            (unless ``allow_selfing``), parents born after their offspring, loops.
            ``problems`` lists every offending row or ID.

        Warns
        -----
        PedigreeFixWarning
            Exact duplicate rows dropped (:attr:`dropped_duplicates`); parents not
            listed as animals added as founders (:attr:`added_founders`).
        """
        raw = ingest(
            df, id=id, sire=sire, dam=dam, unknown=unknown, birth=birth, allow_selfing=allow_selfing,
            on_conflict=on_conflict, sex=sex, male=male, female=female, sex_check=sex_check,
            min_interval=min_interval, max_unlisted=max_unlisted, upg=upg,
            min_group_size=min_group_size, leading_zeros=leading_zeros,
        )
        gen = generations(raw.sire, raw.dam)
        remaining = np.flatnonzero(gen < 0)
        if remaining.size:
            raise loop_error(raw.ids, raw.rows, raw.sire, raw.dam, remaining)
        order = _stable_order(gen)
        new = np.empty(order.size, dtype=np.int64)
        new[order] = np.arange(order.size)
        s = raw.sire[order]
        d = raw.dam[order]
        s = np.where(s >= 0, new[np.maximum(s, 0)], -1)
        d = np.where(d >= 0, new[np.maximum(d, 0)], -1)
        out = cls.__new__(cls)
        out._setup(
            pd.Index(raw.ids[order], dtype=object, name="id"),
            s,
            d,
            gen[order],
            raw.added_founders,
            raw.dropped_duplicates,
        )
        out.resolved_conflicts = raw.resolved_conflicts
        if raw.sire_group is not None:
            out._set_groups(raw.groups, raw.sire_group[order], raw.dam_group[order])
        return out

    def _set_groups(self, groups: Iterable[str], sire_group: np.ndarray, dam_group: np.ndarray) -> None:
        self.groups = pd.Index(list(groups), dtype=object, name="group")
        sg = np.array(sire_group, dtype=np.int64)
        dg = np.array(dam_group, dtype=np.int64)
        sg.flags.writeable = False
        dg.flags.writeable = False
        self.sire_group_pos = sg
        self.dam_group_pos = dg

    # ---------------------------------------------------------------- basics

    def __len__(self) -> int:
        """Number of animals (added founders included)."""
        return len(self.ids)

    def __contains__(self, label: object) -> bool:
        """Whether ``label`` (normalised) is an animal of the pedigree."""
        try:
            key = label_to_str(label)
        except Exception:
            return False
        return key is not None and key in self.ids

    def __repr__(self) -> str:
        n_founders = int(((self.sire_pos < 0) & (self.dam_pos < 0)).sum())
        n_gen = int(self.generation.max()) + 1 if len(self) else 0
        return (
            f"Pedigree({len(self)} animals, {n_founders} founders, {n_gen} generations, "
            f"{len(self.added_founders)} added founders)"
        )

    def positions(self, labels: Iterable[Any], *, what: str = "IDs") -> np.ndarray:
        """Positions of ``labels`` (normalised) in :attr:`ids`.

        Parameters
        ----------
        labels : iterable
            IDs of any type (a single string is one ID).
        what : str
            What the labels are, for the error message (e.g. "animals in the data").

        Returns
        -------
        numpy.ndarray
            int64 positions, in the order of ``labels``.

        Raises
        ------
        PedigreeError
            Naming every label not in the pedigree (the first 10 in the message, all
            in ``problems``).
        """
        if isinstance(labels, (pd.Series, pd.Index, np.ndarray)):
            values: Any = labels
        else:
            values = np.empty(len(items := _as_label_list(labels)), dtype=object)
            values[:] = items
        # normalise the distinct labels only (a data column repeats each animal)
        codes, distinct_raw = pd.factorize(values)  # missing -> -1
        norm = np.append(np.asarray(normalize_labels(distinct_raw, what=what), dtype=object), None)
        found = np.append(self.ids.get_indexer(pd.Index(norm[:-1], dtype=object)), -1)
        found[:-1][pd.isna(norm[:-1])] = -1
        pos = found[codes].astype(np.int64)
        bad = pos < 0
        if bad.any():
            missing = norm[codes[bad]].tolist()
            distinct = list(dict.fromkeys(missing))
            raise PedigreeError(
                f"{len(distinct)} of the {what} are not in the pedigree: {preview(distinct)}; "
                "add them to the pedigree (as founders if their parents are unknown), or check "
                "that the IDs are written the same way",
                problems=pd.DataFrame(
                    {"id": pd.Series(missing, dtype=object), "index": np.flatnonzero(bad)}
                ),
            )
        return pos

    def to_frame(self) -> pd.DataFrame:
        """The pedigree as a frame, in :attr:`ids` order.

        Returns
        -------
        pandas.DataFrame
            Columns ``id``, ``sire``, ``dam`` (``None`` for unknown) and ``F``.
        """
        ids = np.asarray(self.ids, dtype=object)
        none = np.array([None], dtype=object)
        sire = np.where(self.sire_pos >= 0, ids[np.maximum(self.sire_pos, 0)], none)
        dam = np.where(self.dam_pos >= 0, ids[np.maximum(self.dam_pos, 0)], none)
        return pd.DataFrame(
            {
                "id": pd.Series(ids, dtype=object),
                "sire": pd.Series(sire, dtype=object),
                "dam": pd.Series(dam, dtype=object),
                "F": self._inbreeding(),
            }
        )

    # ---------------------------------------------------------------- inbreeding and A^-1

    def _inbreeding(self) -> np.ndarray:
        if self._F is None:
            F = inbreeding_kernel(self.sire_pos, self.dam_pos, self.generation)
            F.flags.writeable = False
            self._F = F
        return self._F

    # ---------------------------------------------------------------- groups and pruning

    def a_inverse_groups(self) -> sp.csc_matrix:
        """The augmented inverse relationship matrix with unknown parent groups (Quaas 1988).

        Rows and columns are :attr:`ids` followed by :attr:`groups`.  Groups take the
        place of unknown parents in Henderson's rules, with the Mendelian sampling
        variances of the pedigree without groups (a group counts as a parent with
        ``F = -1``).  Equal to ``[[Ai, -Ai Q], [-Q' Ai, Q' Ai Q]]`` where ``Ai`` is
        :meth:`a_inverse` and ``Q`` the group contributions (:meth:`group_contributions`);
        singular (rank ``n``): groups are used as fixed effects, or as random effects by
        adding their precision to the group block (see
        :class:`mixedblup.genetic_groups.GroupedPedigree`).

        Returns
        -------
        scipy.sparse.csc_matrix
            ``(n + n_groups)`` square.

        Raises
        ------
        PedigreeError
            If the pedigree was built without ``upg=``.
        """
        from .genetic_groups import augmented_a_inverse

        return augmented_a_inverse(self)

    def group_contributions(self) -> pd.DataFrame:
        """``Q``: the expected fraction of each animal's genes from each group.

        ``q_i = (q_sire + q_dam) / 2`` where an unknown parent in group ``g``
        contributes the indicator of ``g``.  Rows sum to 1.

        Returns
        -------
        pandas.DataFrame
            Index :attr:`ids`, columns :attr:`groups` (dense: for moderate sizes).
        """
        from .genetic_groups import group_contributions

        Q = group_contributions(self)
        return pd.DataFrame(Q.toarray(), index=self.ids, columns=self.groups)

    def prune(self, keep: Iterable[Any]) -> Pedigree:
        """The smallest pedigree that gives the same BLUPs for ``keep`` (exact pruning).

        Kept are ``keep`` and every ancestor of them that has at least two kept
        descendants-or-self lines, i.e. every ancestor on a path linking two animals
        of the reduced pedigree, plus ancestors through which relationships pass; see
        :func:`mixedblup.prune.prune` for the exact rule.  The report is in
        :attr:`prune_report` of the result.

        Parameters
        ----------
        keep : iterable
            IDs that must stay (recorded animals, animals to predict).

        Returns
        -------
        Pedigree
        """
        from .prune import prune

        return prune(self, keep)

    def _mendelian(self) -> np.ndarray:
        if self._d is None:
            d = _mendelian(self.sire_pos, self.dam_pos, self._inbreeding())
            d.flags.writeable = False
            self._d = d
        return self._d

    def _checked_mendelian(self) -> np.ndarray:
        d = self._mendelian()
        bad = ~(d > 0.0)
        if bad.any():
            raise PedigreeError(
                f"the Mendelian sampling variance is zero for {int(bad.sum())} animal(s) "
                f"({preview(self.ids[bad].tolist())}): their parents are (numerically) fully "
                "inbred (F = 1), for example after a long selfing line, so A is singular",
                problems=pd.DataFrame({"id": self.ids[bad], "d": d[bad]}),
            )
        return d

    def inbreeding(self) -> pd.Series:
        """Exact inbreeding coefficients (Meuwissen & Luo 1992, vectorised).

        Returns
        -------
        pandas.Series
            ``F`` indexed by :attr:`ids`.
        """
        return pd.Series(self._inbreeding().copy(), index=self.ids, name="F")

    def mendelian_variances(self) -> np.ndarray:
        """Mendelian sampling variances ``d_i`` (as a fraction of the additive variance).

        ``d = 1 - 1/4 (1 + F_s) - 1/4 (1 + F_d)``, where an unknown parent contributes 0:
        ``1/2 - 1/4 (F_s + F_d)`` with both parents known, ``3/4 - 1/4 F_p`` with one,
        1 for founders and ``1/2 - 1/2 F_p`` for selfing.  ``A = L D L'``.

        Returns
        -------
        numpy.ndarray
            In :attr:`ids` order.
        """
        return self._mendelian().copy()

    def a_inverse(self) -> sp.csc_matrix:
        """The inverse numerator relationship matrix, sparse.

        Henderson's (1976) rules with inbreeding (Quaas 1976), assembled from COO
        triplets: each animal adds ``1/d_i`` times the outer product of
        ``(1, -1/2, -1/2)`` over (itself, sire, dam), unknown parents omitted.

        Returns
        -------
        scipy.sparse.csc_matrix
            ``n x n`` in :attr:`ids` order, canonical (sorted, summed indices).

        Raises
        ------
        PedigreeError
            If some Mendelian sampling variance is zero (fully inbred parents).
        """
        return _a_inverse(self.sire_pos, self.dam_pos, self._checked_mendelian())

    def logdet_a(self) -> float:
        """``log|A| = sum(log d_i)``.

        Returns
        -------
        float
        """
        return float(np.sum(np.log(self._checked_mendelian())))

    # ---------------------------------------------------------------- dense A and relationships

    def a_matrix(self, ids: Iterable[Any] | None = None, *, max_size: float = 2.0) -> pd.DataFrame:
        """Dense numerator relationship matrix by the tabular method.

        For a subset, ``A`` is computed for the subset and all its ancestors and the
        sub-block is returned, so the values are those of the full pedigree.

        Parameters
        ----------
        ids : iterable, optional
            Animals to return (any label type; order kept).  All animals by default.
        max_size : float
            Largest dense matrix to build, in GB (10^9 bytes).

        Returns
        -------
        pandas.DataFrame
            Square, index and columns the requested IDs.

        Raises
        ------
        PedigreeError
            If the matrix to compute exceeds ``max_size`` GB, or an ID is unknown.
        """
        if ids is None:
            want = np.arange(len(self), dtype=np.int64)
        else:
            want = self.positions(ids)
        keep = self._ancestors_closed(want)
        size_gb = keep.size**2 * 8 / 1e9
        if size_gb > max_size:
            raise PedigreeError(
                f"the dense relationship matrix for {keep.size} animals"
                + ("" if ids is None else " (the requested animals and their ancestors)")
                + f" needs {size_gb:.3g} GB, more than max_size={max_size} GB; pass a larger "
                "max_size= to build it anyway, or use a_inverse() or relationships()"
            )
        new = np.full(len(self), -1, dtype=np.int64)
        new[keep] = np.arange(keep.size)
        s = self.sire_pos[keep]
        d = self.dam_pos[keep]
        s = np.where(s >= 0, new[np.maximum(s, 0)], -1)
        d = np.where(d >= 0, new[np.maximum(d, 0)], -1)
        A = _tabular(s, d, self.generation[keep])
        sel = new[want]
        if ids is not None:
            A = A[np.ix_(sel, sel)]
        labels = self.ids[want]
        return pd.DataFrame(A, index=labels, columns=labels.rename(None))

    def _ancestors_closed(self, want: np.ndarray) -> np.ndarray:
        """Sorted positions of ``want`` and all their ancestors."""
        mark = np.zeros(len(self), dtype=bool)
        frontier = distinct(want)
        while frontier.size:
            mark[frontier] = True
            par = np.concatenate([self.sire_pos[frontier], self.dam_pos[frontier]])
            par = distinct(par[par >= 0])
            frontier = par[~mark[par]]
        return np.flatnonzero(mark)

    def relationships(self, pairs: pd.DataFrame | Iterable[tuple[Any, Any]]) -> pd.Series:
        """Additive relationships ``A[x, y]`` of many pairs, without forming ``A``.

        Ancestors of the animals involved are traced with their path coefficients and
        ``A[x, y] = sum_k L_xk L_yk d_k``.

        Parameters
        ----------
        pairs : pandas.DataFrame or iterable of (id1, id2)
            A frame's first two columns are the pairs.

        Returns
        -------
        pandas.Series
            ``relationship``, indexed by a MultiIndex (``id1``, ``id2``) of the
            normalised IDs, in input order.

        Raises
        ------
        PedigreeError
            Naming the IDs that are not in the pedigree.
        """
        if isinstance(pairs, pd.DataFrame):
            if pairs.shape[1] < 2:
                raise PedigreeError("pairs must have two columns (id1, id2)")
            first, second = list(pairs.iloc[:, 0]), list(pairs.iloc[:, 1])
        else:
            plist = [tuple(p) for p in pairs]
            if any(len(p) != 2 for p in plist):
                raise PedigreeError("each pair must have exactly two IDs (id1, id2)")
            first = [p[0] for p in plist]
            second = [p[1] for p in plist]
        px = self.positions(first, what="IDs in pairs")
        py = self.positions(second, what="IDs in pairs")
        index = pd.MultiIndex.from_arrays(
            [self.ids[px].rename("id1"), self.ids[py].rename("id2")]
        )
        keep = None
        if self._F is None:  # no inbreeding yet: work on the animals' ancestors only
            keep = self._ancestors_closed(np.concatenate([px, py]))
            if keep.size > len(self) // 2:
                keep = None
        if keep is None:
            if self._levels is None:
                self._levels = _Levels(self.sire_pos, self.dam_pos, self.generation)
            levels, d, n_all = self._levels, self._mendelian(), len(self)
        else:
            new = np.full(len(self), -1, dtype=np.int64)
            new[keep] = np.arange(keep.size)
            s = self.sire_pos[keep]
            m = self.dam_pos[keep]
            s = np.where(s >= 0, new[np.maximum(s, 0)], -1)
            m = np.where(m >= 0, new[np.maximum(m, 0)], -1)
            gen = self.generation[keep]  # an ancestor-closed subset keeps its generations
            d = _mendelian(s, m, inbreeding_kernel(s, m, gen))
            levels, n_all = _Levels(s, m, gen), keep.size
            px, py = new[px], new[py]
        out = np.empty(px.size)
        chunk = 2048
        for a in range(0, px.size, chunk):
            x, y = px[a : a + chunk], py[a : a + chunk]
            uniq, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
            r, c, v, _ = _trace(levels, uniq.size, np.arange(uniq.size), uniq, np.ones(uniq.size))
            L = sp.csr_array((v, (r, c)), shape=(uniq.size, n_all))
            lx = L[inv[: x.size]]
            ly = L[inv[x.size :]]
            out[a : a + x.size] = lx.multiply(ly) @ d
        return pd.Series(out, index=index, name="relationship")

    def relationship(self, id1: Any, id2: Any) -> float:
        """Additive relationship ``A[id1, id2]`` of one pair (see :meth:`relationships`).

        Parameters
        ----------
        id1, id2 : object
            Animal IDs (normalised).

        Returns
        -------
        float
        """
        return float(self.relationships([(id1, id2)]).iloc[0])


def read_pedigree(
    path_or_buffer: Any,
    *,
    id: str | int,
    sire: str | int,
    dam: str | int,
    sep: str | None = None,
    header: int | None | str = "infer",
    names: list[str] | None = None,
    comment: str | None = None,
    unknown: Iterable[str] = ("0", "", "NA", "."),
    birth: str | int | None = None,
    engine: str | None = None,
    **options: Any,
) -> Pedigree:
    """Read a pedigree file and build a checked :class:`Pedigree`.

    Every column is read as text (``dtype=str``) with no pandas missing-value list, so
    leading zeros are kept (``"0012"`` stays ``"0012"``) and IDs such as ``NA`` or
    ``None`` stay IDs unless listed in ``unknown``; then :meth:`Pedigree.from_frame`
    normalises and checks the IDs.

    Parameters
    ----------
    path_or_buffer : str, path or file-like
        CSV or whitespace-separated text.
    id, sire, dam : str or int
        Column names (or positions with ``header=None``), keyword-only.
    sep : str, optional
        Field separator: ``None`` guesses from the first line (comma, tab, semicolon,
        else whitespace); ``"whitespace"`` for runs of blanks (BLUPF90, ASReml files).
    header, names, comment
        As in :func:`pandas.read_csv` (``header=None`` for files without a header line;
        columns are then 0, 1, 2, ... unless ``names`` is given).
    unknown : iterable of str
        Unknown-parent codes (default ``"0", "", "NA", "."``).
    birth : str or int, optional
        Birth column (years, numbers or dates).
    engine : str, optional
        pandas parser; by default ``"pyarrow"`` when installed and the separator is one
        character, else pandas' C parser.
    **options
        Passed to :meth:`Pedigree.from_frame` (``allow_selfing``, ``on_conflict``,
        ``sex``, ``min_interval``, ``upg``...).

    Returns
    -------
    Pedigree
    """
    import io
    import os

    if sep is None:
        first = _first_line(path_or_buffer)
        sep = next((c for c in (",", "\t", ";") if c in first), "whitespace")
    kw: dict[str, Any] = dict(dtype=str, keep_default_na=False, na_values=[], header=header)
    if names is not None:
        kw["names"] = names
    if comment is not None:
        kw["comment"] = comment
    if sep == "whitespace":
        kw["sep"] = r"\s+"
    else:
        kw["sep"] = sep
    if engine is None:
        try:
            import pyarrow  # noqa: F401

            usable = (
                sep != "whitespace" and len(sep) == 1 and comment is None
                and isinstance(path_or_buffer, (str, os.PathLike)) and header in ("infer", 0)
            )
        except ImportError:
            usable = False
        engine = "pyarrow" if usable else "c"
    if isinstance(path_or_buffer, str) and "\n" in path_or_buffer:
        path_or_buffer = io.StringIO(path_or_buffer)
    frame = pd.read_csv(path_or_buffer, engine=engine, **kw)
    return Pedigree.from_frame(
        frame, id=id, sire=sire, dam=dam, unknown=unknown, birth=birth, **options
    )


def _first_line(path_or_buffer: Any) -> str:
    """First non-empty line of a file or buffer (the buffer is rewound)."""
    if hasattr(path_or_buffer, "read"):
        pos = path_or_buffer.tell()
        line = ""
        while not line.strip():
            line = path_or_buffer.readline()
            if not line:
                break
        path_or_buffer.seek(pos)
        return line if isinstance(line, str) else line.decode(errors="replace")
    if isinstance(path_or_buffer, str) and "\n" in path_or_buffer:
        return next((ln for ln in path_or_buffer.splitlines() if ln.strip()), "")
    with open(path_or_buffer, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line
    return ""
