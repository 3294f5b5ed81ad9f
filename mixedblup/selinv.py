"""Sparse LDL' factorisation with a reusable symbolic analysis, and selected inversion.

The coefficient matrix of the mixed model equations has one sparsity pattern for
every value of the variance parameters, so the expensive structural work -- a
fill-reducing ordering, the elimination tree and the pattern of ``L`` -- is done
once per model (:class:`Symbolic`) and every REML iteration only runs the numeric
kernels:

* :func:`ldl_numeric` -- up-looking simplicial ``P C P' = L D L'`` (``L`` unit lower
  triangular, stored without its diagonal, rows sorted within each column);
* :func:`ldl_solve` -- forward/diagonal/backward solves for one or many right-hand sides;
* :func:`selected_inverse` -- the Takahashi / Erisman-Tinney recurrence: the elements
  of ``C^-1`` on the pattern of ``L + L'`` (including every diagonal element) at about
  the cost of the factorisation itself.  Blocks of ``C^-1`` that lie on the pattern
  (prediction error variances of each level, the traces ``tr(K^-1 C^tt)`` that REML
  derivatives need) are read off it.

All kernels are compiled with numba through :func:`mixedblup._accel.jit` and run
unchanged as plain Python with ``MIXEDBLUP_NO_NUMBA=1``.

The ordering is approximate minimum degree on the graph of ``C`` (:func:`amd_order`,
a quotient-graph minimum-degree ordering with approximate external degrees and
mass elimination of indistinguishable nodes, written here so the default install
needs no SuiteSparse).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from ._accel import jit
from ._blas import blas_threads, cholesky_inverse, small_kernel_threads

__all__ = ["Symbolic", "LDLFactor", "symbolic", "ldl_numeric", "ldl_solve", "selected_inverse",
           "amd_order"]


# --------------------------------------------------------------------------- symbolic analysis
@jit
def _etree_upper(n, Up, Ui):
    """Elimination tree of a symmetric matrix given its upper triangle (CSC, column j: rows < j)."""
    parent = np.full(n, -1, dtype=np.int64)
    ancestor = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        for p in range(Up[k], Up[k + 1]):
            i = Ui[p]
            while i != -1 and i < k:
                nxt = ancestor[i]
                ancestor[i] = k
                if nxt == -1:
                    parent[i] = k
                i = nxt
    return parent


@jit
def _col_counts(n, Up, Ui, parent):
    """Nonzeros below the diagonal in every column of ``L`` (row-subtree traversal)."""
    counts = np.zeros(n, dtype=np.int64)
    flag = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        flag[k] = k
        for p in range(Up[k], Up[k + 1]):
            i = Ui[p]
            if i >= k:
                continue
            while flag[i] != k:
                counts[i] += 1
                flag[i] = k
                i = parent[i]
    return counts


class Symbolic:
    """Ordering, elimination tree and column pointers of ``L`` for one sparsity pattern.

    Attributes
    ----------
    n : int
        Order of the matrix.
    perm : numpy.ndarray
        Fill-reducing permutation (``C[perm][:, perm]`` is factorised).
    parent : numpy.ndarray
        Elimination tree of the permuted matrix.
    Lp : numpy.ndarray
        Column pointers of the strictly lower part of ``L``.
    nnz : int
        Nonzeros of ``L`` below the diagonal.
    flops : float
        ``sum_j c_j^2`` (the factorisation's work, up to a constant).
    n1 : int
        Columns factorised sparsely; the last ``n - n1`` form a dense block (LAPACK).
    """

    def __init__(self, pattern: sp.spmatrix, perm: np.ndarray | None = None, n1: int | None = None) -> None:
        A = sp.csc_matrix(pattern)
        n = A.shape[0]
        if perm is None:
            perm = amd_order(A)
            # postorder the elimination tree (same fill): subtrees, chains and the columns
            # next to the dense tail become contiguous, so their dense rows can be batched
            p0 = np.asarray(perm, dtype=np.int64)
            U0 = _permuted_upper(A, p0)
            par0 = _etree_upper(n, U0.indptr.astype(np.int64), U0.indices.astype(np.int64))
            perm = p0[_postorder(par0)]
        perm = np.asarray(perm, dtype=np.int64)
        pinv = np.empty(n, dtype=np.int64)
        pinv[perm] = np.arange(n)
        self.n = n
        self.perm = perm
        self.pinv = pinv
        U = _permuted_upper(A, perm)
        self.Up = U.indptr.astype(np.int64)
        self.Ui = U.indices.astype(np.int64)
        self.parent = _etree_upper(n, U.indptr.astype(np.int64), U.indices.astype(np.int64))
        counts = _col_counts(n, U.indptr.astype(np.int64), U.indices.astype(np.int64), self.parent)
        self.Lp = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=self.Lp[1:])
        self.nnz = int(self.Lp[-1])
        self.flops = float((counts.astype(float) ** 2).sum())
        self.n1 = choose_split(counts) if n1 is None else int(n1)


@jit
def _postorder(parent):
    """A postorder of the forest ``parent`` (children visited in increasing order)."""
    n = len(parent)
    head = np.full(n, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    for j in range(n - 1, -1, -1):
        p = parent[j]
        if p >= 0:
            nxt[j] = head[p]
            head[p] = j
    post = np.empty(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    k = 0
    for r in range(n):
        if parent[r] != -1:
            continue
        top = 0
        stack[0] = r
        while top >= 0:
            v = stack[top]
            c = head[v]
            if c == -1:
                top -= 1
                post[k] = v
                k += 1
            else:
                head[v] = nxt[c]
                top += 1
                stack[top] = c
    return post


def _permuted_upper(C: sp.spmatrix, perm: np.ndarray) -> sp.csc_matrix:
    """Upper triangle (with diagonal) of ``C[perm][:, perm]`` in CSC with sorted rows."""
    A = sp.csc_matrix(C)
    n = A.shape[0]
    pinv = np.empty(n, dtype=np.int64)
    pinv[perm] = np.arange(n)
    coo = A.tocoo()
    r, c = pinv[coo.row], pinv[coo.col]
    keep = r <= c
    U = sp.csc_matrix((coo.data[keep], (r[keep], c[keep])), shape=(n, n))
    U.sum_duplicates()
    U.sort_indices()
    return U


# --------------------------------------------------------------------------- numeric factorisation
def ldl_numeric(n, n1, Up, Ui, Ux, Lp, parent):
    """Up-looking ``L D L'`` of the first ``n1`` columns, and the dense Schur complement.

    See :func:`_ldl_numeric_kernel`; the update of the dense Schur complement by the
    columns with many rows in it is done in groups by matrix products
    (:func:`_schur_update`).  Returns ``(Li, Lx, D, S, ok)``.
    """
    Li, Lx, D, S, ok = _ldl_numeric_kernel(n, n1, Up, Ui, Ux, Lp, parent)
    if ok and 0 < n1 < n:
        _schur_update(n, n1, Lp, Li, Lx, D, S)
    return Li, Lx, D, S, ok


@jit
def _ldl_numeric_kernel(n, n1, Up, Ui, Ux, Lp, parent):
    """Up-looking ``L D L'`` of the first ``n1`` columns, and the trailing block ``A22``.

    The matrix is given by its upper triangle (CSC, sorted rows): ``Up, Ui, Ux``.
    Columns ``j < n1`` of ``L`` (all their rows, rows sorted) and ``D[:n1]`` are computed
    by sparse up-looking elimination; the trailing ``s = n - n1`` equations, where the
    factor is (nearly) dense, are returned as ``S = A22`` (both triangles), from which
    :func:`ldl_numeric` makes the Schur complement ``A22 - L21 D1 L21'`` for a LAPACK
    Cholesky.  Returns ``(Li, Lx, D, S, ok)``; ``ok`` is False when a pivot is not positive.
    """
    nnz = Lp[n1]
    s = n - n1
    Li = np.empty(nnz, dtype=np.int64)
    Lx = np.empty(nnz, dtype=np.float64)
    D = np.empty(n1, dtype=np.float64)
    S = np.zeros((s, s), dtype=np.float64)
    Y = np.zeros(n, dtype=np.float64)
    pattern = np.empty(n, dtype=np.int64)
    flag = np.full(n, -1, dtype=np.int64)
    Lnz = np.zeros(n1, dtype=np.int64)
    Lnz1 = np.zeros(n1, dtype=np.int64)
    for k in range(n):
        if k == n1:
            for j in range(n1):
                Lnz1[j] = Lnz[j]
        top = n
        flag[k] = k
        diag = 0.0
        for p in range(Up[k], Up[k + 1]):
            i = Ui[p]
            if i > k:
                continue
            if i >= n1:  # entry of A22
                S[i - n1, k - n1] = Ux[p]
                S[k - n1, i - n1] = Ux[p]
                continue
            if i == k:
                diag += Ux[p]
                continue
            Y[i] += Ux[p]
            length = 0
            while i < n1 and flag[i] != k:
                pattern[length] = i
                length += 1
                flag[i] = k
                i = parent[i]
            while length > 0:
                top -= 1
                length -= 1
                pattern[top] = pattern[length]
        for t in range(top, n):
            i = pattern[t]
            yi = Y[i]
            Y[i] = 0.0
            p2 = Lp[i] + Lnz[i]
            stop = p2 if k < n1 else Lp[i] + Lnz1[i]
            for p in range(Lp[i], stop):
                Y[Li[p]] -= Lx[p] * yi
            l_ki = yi / D[i]
            if k < n1:
                diag -= l_ki * yi
            Li[p2] = k
            Lx[p2] = l_ki
            Lnz[i] += 1
        if k < n1:
            if not diag > 0.0:
                D[k] = diag
                return Li, Lx, D, S, False
            D[k] = diag
    return Li, Lx, D, S, True


@jit
def _small_schur_update(n1, Lp, Li, Lx, D, fd, min_d, S):
    """``S -= L21 D1 L21'`` over the columns with fewer than ``min_d`` dense rows (upper
    triangle only)."""
    for j in range(n1):
        q0 = fd[j]
        q1 = Lp[j + 1]
        if q1 - q0 >= min_d:
            continue
        dj = D[j]
        for qa in range(q0, q1):
            a = Li[qa] - n1
            la = Lx[qa] * dj
            for qb in range(qa, q1):
                S[a, Li[qb] - n1] -= la * Lx[qb]
    return S


@jit
def _scatter_sub_upper(S, R, X):
    """``S[R[a], R[b]] -= X[a, b]`` for ``a <= b`` (``R`` ascending: the upper triangle)."""
    for a in range(len(R)):
        ra = R[a]
        for b in range(a, len(R)):
            S[ra, R[b]] -= X[a, b]
    return S


@jit
def _mirror_upper(S):
    s = S.shape[0]
    for a in range(s):
        for b in range(a + 1, s):
            S[b, a] = S[a, b]
    return S


def _schur_update(n, n1, Lp, Li, Lx, D, S, min_d: int | None = None, grow: float = 1.25) -> None:
    """``S -= L21 D1 L21'`` in place (``S`` symmetric on entry and exit).

    Columns with many dense rows are grouped (:func:`_dense_groups`) and their update is
    one matrix product per group instead of scattered writes into a matrix larger than
    the cache.
    """
    min_d = GROUP_MIN_DENSE if min_d is None else min_d
    fd = _dense_start(n1, Lp, Li)
    _small_schur_update(n1, Lp, Li, Lx, D, fd, min_d, S)
    with blas_threads(1):
        for R, J, Lg, _loc in _dense_group_blocks(n, n1, Lp, Li, Lx, fd, min_d, grow):
            X = np.ascontiguousarray((Lg * D[J]) @ Lg.T)
            _scatter_sub_upper(S, R, X)
    _mirror_upper(S)


def _dense_group_blocks(n, n1, Lp, Li, Lx, fd, min_d, grow):
    """For every group of :func:`_dense_groups`: its dense rows ``R`` (into the tail), its
    columns ``J``, the block ``L[R, J]`` (dense) and ``loc`` (tail row -> row of the block;
    valid until the next group)."""
    cols, gp, Rp, Ri = _dense_groups(n, n1, Lp, Li, fd, min_d, grow)
    loc = np.empty(n - n1, dtype=np.int64)
    for g in range(len(gp) - 1):
        R = Ri[Rp[g]: Rp[g + 1]]
        J = cols[gp[g]: gp[g + 1]]
        yield R, J, _group_block(R, J, Lp, Li, Lx, fd, n1, loc), loc


@jit
def _forward(n1, Lp, Li, Lx, D, B):
    """Forward substitution through the sparse columns and scaling by ``D[:n1]`` (in place).

    ``B`` is ``(n, m)`` C-contiguous; loops run across right-hand sides innermost, and
    leading zero rows (unit vectors of late equations) are skipped.
    """
    m = B.shape[1]
    first = n1
    for j in range(n1):
        nz = False
        for c in range(m):
            if B[j, c] != 0.0:
                nz = True
                break
        if nz:
            first = j
            break
    for j in range(first, n1):
        for p in range(Lp[j], Lp[j + 1]):
            i = Li[p]
            lij = Lx[p]
            for c in range(m):
                B[i, c] -= lij * B[j, c]
    for j in range(n1):
        dj = 1.0 / D[j]
        for c in range(m):
            B[j, c] *= dj
    return B


@jit
def _backward(n1, Lp, Li, Lx, B):
    """Backward substitution through the sparse columns (in place)."""
    m = B.shape[1]
    for j in range(n1 - 1, -1, -1):
        for p in range(Lp[j], Lp[j + 1]):
            i = Li[p]
            lij = Lx[p]
            for c in range(m):
                B[j, c] -= lij * B[i, c]
    return B


@jit
def _etree_reach(parent, n1, starts):
    """Sorted sparse columns (``< n1``) on the elimination-tree paths from ``starts``: the
    rows where ``L^-1 e_s`` can be nonzero (besides the dense tail)."""
    n = len(parent)
    mark = np.zeros(n, dtype=np.bool_)
    out = np.empty(n, dtype=np.int64)
    m = 0
    for t in range(len(starts)):
        j = starts[t]
        while j != -1 and j < n1 and not mark[j]:
            mark[j] = True
            out[m] = j
            m += 1
            j = parent[j]
    return np.sort(out[:m])


@jit
def _forward_reach(n1, Lp, Li, Lx, D, reach, loc, B1, B2):
    """Forward substitution restricted to the rows ``reach`` (sorted; ``loc`` maps a column
    to its row of ``B1``), then scaling by ``D``: ``B1`` the sparse rows, ``B2`` the tail."""
    m = B1.shape[1]
    for t in range(len(reach)):
        j = reach[t]
        for p in range(Lp[j], Lp[j + 1]):
            i = Li[p]
            lij = Lx[p]
            if i < n1:
                r = loc[i]
                for c in range(m):
                    B1[r, c] -= lij * B1[t, c]
            else:
                r = i - n1
                for c in range(m):
                    B2[r, c] -= lij * B1[t, c]
    for t in range(len(reach)):
        dj = 1.0 / D[reach[t]]
        for c in range(m):
            B1[t, c] *= dj
    return B1, B2


def ldl_solve(n1, Lp, Li, Lx, D, Ls, B):
    """Solve ``C X = B`` (permuted order) in place, ``B`` ``(n, m)`` C-contiguous.

    ``Ls`` is the lower Cholesky factor of the dense Schur complement of the last
    ``n - n1`` equations.
    """
    _forward(n1, Lp, Li, Lx, D, B)
    if Ls.shape[0]:
        with blas_threads(small_kernel_threads(Ls.shape[0])):
            B[n1:] = sla.cho_solve((Ls, True), B[n1:], check_finite=False)
    return _backward(n1, Lp, Li, Lx, B)


# --------------------------------------------------------------------------- selected inversion
@jit
def _selinv_kernel(n, n1, Lp, Li, Lx, D, Z22, P):
    """The recurrence of :func:`selected_inverse`, with the dense-tail products given.

    ``P[q]`` (for the rows ``Li[q] >= n1`` of column ``j``) is
    ``sum_k Z22[Li[q] - n1, k - n1] L[k, j]`` over the dense rows ``k`` of column ``j``
    (:func:`_dense_products`).
    """
    Zx = np.zeros(Lp[n1], dtype=np.float64)
    Zd = np.zeros(n, dtype=np.float64)
    for i in range(n - n1):
        Zd[n1 + i] = Z22[i, i]
    pos = np.full(n, -1, dtype=np.int64)
    acc = np.zeros(n, dtype=np.float64)
    for j in range(n1 - 1, -1, -1):
        p0, p1 = Lp[j], Lp[j + 1]
        first_dense = p1
        for p in range(p0, p1):
            pos[Li[p]] = p
            acc[Li[p]] = 0.0
            if Li[p] >= n1 and first_dense == p1:
                first_dense = p
        # acc[i] = sum_k Z[i, k] L[k, j]  (i, k in the pattern of column j)
        for p in range(p0, first_dense):
            k = Li[p]
            lkj = Lx[p]
            acc[k] += Zd[k] * lkj
            for q in range(Lp[k], Lp[k + 1]):
                i = Li[q]
                if pos[i] >= 0:
                    z = Zx[q]  # Z[i, k], i > k
                    acc[i] += z * lkj
                    acc[k] += z * Lx[pos[i]]
        for q in range(first_dense, p1):  # k and i both in the dense tail
            acc[Li[q]] += P[q]
        sj = 1.0 / D[j]
        for p in range(p0, p1):
            i = Li[p]
            Zx[p] = -acc[i]
            sj += Lx[p] * acc[i]
            pos[i] = -1
        Zd[j] = sj
    return Zd, Zx


@jit
def _dense_start(n1, Lp, Li):
    """First position of a row ``>= n1`` in every sparse column (rows sorted)."""
    fd = np.empty(n1, dtype=np.int64)
    for j in range(n1):
        p = Lp[j + 1]
        while p > Lp[j] and Li[p - 1] >= n1:
            p -= 1
        fd[j] = p
    return fd


@jit
def _small_dense_products(n1, Lp, Li, Lx, fd, Z22, min_d, P):
    """``P`` (see :func:`_selinv_kernel`) of the columns with fewer than ``min_d`` dense rows."""
    for j in range(n1):
        f, p1 = fd[j], Lp[j + 1]
        if p1 - f >= min_d:
            continue
        for p in range(f, p1):
            zk = Li[p] - n1
            lkj = Lx[p]
            for q in range(f, p1):
                P[q] += Z22[zk, Li[q] - n1] * lkj
    return P


@jit
def _dense_groups(n, n1, Lp, Li, fd, min_d, grow):
    """Columns with at least ``min_d`` dense rows, in groups of similar dense row sets.

    Consecutive columns (a postordered factor keeps chains together) are grouped while
    the union of their dense rows stays below ``grow`` times the largest of them.
    Returns ``(cols, gp, Rp, Ri)``: group ``g`` is ``cols[gp[g]:gp[g+1]]`` with the sorted
    union ``Ri[Rp[g]:Rp[g+1]]`` (indices into the tail, ``row - n1``).
    """
    s = n - n1
    mark = np.full(s, -1, dtype=np.int64)
    cols = np.empty(n1, dtype=np.int64)
    gid = np.empty(n1, dtype=np.int64)
    usize = np.zeros(n1 + 1, dtype=np.int64)
    nc = 0
    g = -1
    u = 0
    m = 0
    for j in range(n1):
        d = Lp[j + 1] - fd[j]
        if d < min_d:
            continue
        new = 0
        if g >= 0:
            for p in range(fd[j], Lp[j + 1]):
                if mark[Li[p] - n1] != g:
                    new += 1
        if g < 0 or u + new > grow * max(m, d):
            g += 1
            u = 0
            m = 0
            new = d
        for p in range(fd[j], Lp[j + 1]):
            mark[Li[p] - n1] = g
        u += new
        if d > m:
            m = d
        usize[g] = u
        cols[nc] = j
        gid[nc] = g
        nc += 1
    ng = g + 1
    gp = np.zeros(ng + 1, dtype=np.int64)
    for t in range(nc):
        gp[gid[t] + 1] += 1
    for t in range(ng):
        gp[t + 1] += gp[t]
    Rp = np.zeros(ng + 1, dtype=np.int64)
    for t in range(ng):
        Rp[t + 1] = Rp[t] + usize[t]
    Ri = np.empty(Rp[ng], dtype=np.int64)
    mark[:] = -1
    for t in range(ng):
        w = Rp[t]
        for a in range(gp[t], gp[t + 1]):
            j = cols[a]
            for p in range(fd[j], Lp[j + 1]):
                r = Li[p] - n1
                if mark[r] != t:
                    mark[r] = t
                    Ri[w] = r
                    w += 1
        Ri[Rp[t]: Rp[t + 1]] = np.sort(Ri[Rp[t]: Rp[t + 1]])
    return cols[:nc], gp, Rp, Ri


@jit
def _group_block(R, J, Lp, Li, Lx, fd, n1, loc):
    """The dense rows ``R`` of the columns ``J`` of ``L`` as a dense ``|R| x |J|`` block."""
    for t in range(len(R)):
        loc[R[t]] = t
    out = np.zeros((len(R), len(J)), dtype=np.float64)
    for b in range(len(J)):
        j = J[b]
        for p in range(fd[j], Lp[j + 1]):
            out[loc[Li[p] - n1], b] = Lx[p]
    return out


@jit
def _group_scatter(Pg, J, Lp, Li, fd, n1, loc, P):
    """``P[q] = Pg[row of Li[q], column of j]`` for the dense rows of the columns ``J``."""
    for b in range(len(J)):
        j = J[b]
        for p in range(fd[j], Lp[j + 1]):
            P[p] = Pg[loc[Li[p] - n1], b]
    return P


#: Columns with at least this many rows in the dense tail have their tail products
#: (:func:`_dense_products`) computed in groups by matrix products.
GROUP_MIN_DENSE = 64


def _dense_products(n, n1, Lp, Li, Lx, Z22, min_d: int = GROUP_MIN_DENSE, grow: float = 1.25) -> np.ndarray:
    """``P[q] = sum_k Z22[Li[q] - n1, k - n1] L[k, j]`` over the dense rows ``k`` of column ``j``.

    Gathering ``Z22[R_j, R_j]`` column by column costs ``|R_j|^2`` scattered reads of a
    matrix that does not fit in cache (the columns eliminated just before the dense tail
    have hundreds of rows in it); columns with similar row sets are batched instead: one
    gather of ``Z22[R, R]`` for the union ``R`` and one matrix product per group.
    """
    P = np.zeros(int(Lp[n1]), dtype=np.float64)
    if n1 == 0 or n1 == n:
        return P
    Z22 = _c_order(Z22)
    fd = _dense_start(n1, Lp, Li)
    _small_dense_products(n1, Lp, Li, Lx, fd, Z22, min_d, P)
    with blas_threads(1):
        for R, J, Lg, loc in _dense_group_blocks(n, n1, Lp, Li, Lx, fd, min_d, grow):
            Pg = np.ascontiguousarray(Z22[np.ix_(R, R)] @ Lg)
            _group_scatter(Pg, J, Lp, Li, fd, n1, loc, P)
    return P


def selected_inverse(n, n1, Lp, Li, Lx, D, Z22):
    """Elements of ``C^-1`` on the pattern of the sparse columns of ``L``: ``(Zdiag, Zx)``.

    ``Z22`` is the (dense) inverse of the trailing Schur complement, i.e. the trailing
    block of ``C^-1``.  ``Zx[p]`` is ``Z[Li[p], j]`` for ``Lp[j] <= p < Lp[j+1]``.
    Takahashi / Erisman-Tinney recurrence, columns right to left: for ``i`` in the pattern
    of column ``j``, ``Z[i, j] = -sum_k Z[i, k] L[k, j]`` over ``k`` in the pattern, and
    ``Z[j, j] = 1/d_j - sum_k L[k, j] Z[k, j]``.  Every ``Z[i, k]`` needed lies in the
    pattern of column ``min(i, k)`` (the pattern of a column is a clique of the filled
    graph) or in the dense trailing block; the terms with both ``i`` and ``k`` in the
    dense block are computed first, batched (:func:`_dense_products`).
    """
    Z22 = _c_order(Z22)
    P = _dense_products(n, n1, Lp, Li, Lx, Z22)
    return _selinv_kernel(n, n1, Lp, Li, Lx, D, Z22, P)


def _c_order(Z: np.ndarray) -> np.ndarray:
    """A C-ordered view of the symmetric ``Z`` (its transpose when Fortran-ordered, as
    LAPACK returns it: no copy of a matrix of hundreds of MB)."""
    Z = np.asarray(Z, dtype=np.float64)
    if Z.flags.c_contiguous:
        return Z
    if Z.flags.f_contiguous:
        return Z.T
    return np.ascontiguousarray(Z)


def choose_split(counts: np.ndarray, sparse_rate: float = 3e8, dense_rate: float = 1e10,
                 max_dense: int = 12000) -> int:
    """Number of leading columns factorised sparsely; the rest form a dense block.

    Minimises ``sparse flops / sparse_rate + s^3 / 3 / dense_rate`` over the size ``s`` of
    the trailing block (column counts from the symbolic analysis; the factor's tail is
    nearly dense in pedigree and crossed models, where almost all of the work lies).
    """
    n = len(counts)
    if n == 0:
        return 0
    work = counts.astype(float) ** 2
    tail = np.concatenate([[0.0], np.cumsum(work[::-1])])  # tail[s]: sparse work of the last s columns
    total = tail[-1]
    s = np.arange(min(n, max_dense) + 1)
    cost = (total - tail[s]) / sparse_rate + s.astype(float) ** 3 / 3.0 / dense_rate
    return int(n - s[int(np.argmin(cost))])


# --------------------------------------------------------------------------- ordering
@jit
def _amd_kernel(n, Ap, Ai, dense_cut):
    """Minimum-degree ordering on a quotient graph (approximate external degrees).

    A compact version of Amestoy, Davis and Duff's AMD: eliminated nodes become
    elements; the degree of a variable is approximated by
    ``|A_i \\ i| + sum_e |L_e \\ i|`` bounded by the exact upper bounds; variables
    adjacent to the same set of elements and variables are merged (supervariables).
    Dense rows (degree above ``dense_cut``) are ordered last.
    """
    # adjacency storage with room to grow: each node's list lives in iw[pe[i]: pe[i]+len[i]]
    nnz = Ap[n]
    iwlen = int(1.2 * nnz) + 8 * n + 16
    iw = np.empty(iwlen, dtype=np.int64)
    pe = np.empty(n, dtype=np.int64)
    ln = np.zeros(n, dtype=np.int64)      # total list length
    elen = np.zeros(n, dtype=np.int64)    # number of elements at the front of the list (variables)
    nv = np.ones(n, dtype=np.int64)       # supervariable size (0: absorbed)
    degree = np.zeros(n, dtype=np.int64)
    status = np.zeros(n, dtype=np.int64)  # 0 variable, 1 element, 2 absorbed variable, 3 dense
    order = np.full(n, -1, dtype=np.int64)
    rep = np.arange(n)                    # absorbed variable -> its principal variable
    pfree = 0
    for i in range(n):
        pe[i] = pfree
        for p in range(Ap[i], Ap[i + 1]):
            j = Ai[p]
            if j != i:
                iw[pfree] = j
                pfree += 1
        ln[i] = pfree - pe[i]
        degree[i] = ln[i]
    # degree buckets (doubly linked lists)
    head = np.full(n + 1, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    prv = np.full(n, -1, dtype=np.int64)
    ndense = 0
    for i in range(n):
        if degree[i] > dense_cut:
            status[i] = 3
            ndense += 1
            continue
        d = degree[i]
        nxt[i] = head[d]
        if head[d] != -1:
            prv[head[d]] = i
        head[d] = i
    w = np.zeros(n, dtype=np.int64)       # |L_e \ Lme| scratch for elements
    esize = np.zeros(n, dtype=np.int64)   # weight of the live variables of each element
    wflg = np.zeros(n, dtype=np.int64)
    wstamp = 1
    mark = np.zeros(n, dtype=np.int64)
    mstamp = 1
    lme = np.empty(n, dtype=np.int64)
    scratch = np.empty(n + 1, dtype=np.int64)
    cmark = np.zeros(n, dtype=np.int64)
    cstamp = 0
    hashv = np.zeros(n, dtype=np.int64)
    nel = 0
    mindeg = 0
    k_out = 0
    remaining = n - ndense
    while nel < remaining:
        # pick a variable of minimum degree
        while mindeg <= n and head[mindeg] == -1:
            mindeg += 1
        me = head[mindeg]
        # remove from bucket
        head[mindeg] = nxt[me]
        if nxt[me] != -1:
            prv[nxt[me]] = -1
        nvme = nv[me]
        nel += nvme
        order[me] = k_out
        k_out += 1
        # construct the new element Lme = (A_me U union of L_e for e in E_me) \ me
        mstamp += 1
        mark[me] = mstamp
        nlme = 0
        for p in range(pe[me], pe[me] + ln[me]):
            e = iw[p]
            if status[e] == 1:  # element: absorb into me
                for q in range(pe[e], pe[e] + ln[e]):
                    v = iw[q]
                    if status[v] == 0 and nv[v] > 0 and mark[v] != mstamp:
                        mark[v] = mstamp
                        lme[nlme] = v
                        nlme += 1
                status[e] = 4  # absorbed element
            elif status[e] == 0 and nv[e] > 0 and mark[e] != mstamp:
                mark[e] = mstamp
                lme[nlme] = e
                nlme += 1
        status[me] = 1
        # store Lme as me's list (compact, at the end of iw; garbage collect if needed)
        if pfree + nlme > iwlen:
            # compaction: copy every live list to the front
            newiw = np.empty(iwlen, dtype=np.int64)
            q = 0
            for i in range(n):
                if (status[i] == 0 and nv[i] > 0) or status[i] == 1 or status[i] == 3:
                    if i == me:
                        continue
                    st = q
                    for p in range(pe[i], pe[i] + ln[i]):
                        newiw[q] = iw[p]
                        q += 1
                    pe[i] = st
            iw = newiw
            pfree = q
            if pfree + nlme > iwlen:
                bigger = np.empty(2 * iwlen + nlme, dtype=np.int64)
                bigger[:pfree] = iw[:pfree]
                iw = bigger
                iwlen = len(iw)
        pe[me] = pfree
        degme = 0
        for t in range(nlme):
            iw[pfree + t] = lme[t]
            degme += nv[lme[t]]
        ln[me] = nlme
        pfree += nlme
        esize[me] = degme
        # |L_e \ Lme| for every element e adjacent to a variable of Lme (AMD's decrement trick:
        # esize[e] is the weight of the live variables of L_e)
        wstamp += 1
        for t in range(nlme):
            i = lme[t]
            for p in range(pe[i], pe[i] + ln[i]):
                e = iw[p]
                if status[e] == 1 and e != me:
                    if wflg[e] != wstamp:
                        wflg[e] = wstamp
                        w[e] = esize[e]
                    w[e] -= nv[i]
        # update each variable of Lme: prune its list, approximate degree, hash
        for t in range(nlme):
            i = lme[t]
            # remove i from its bucket
            if prv[i] != -1:
                nxt[prv[i]] = nxt[i]
            elif head[degree[i]] == i:
                head[degree[i]] = nxt[i]
            if nxt[i] != -1:
                prv[nxt[i]] = prv[i]
            prv[i] = -1
            nxt[i] = -1
            st = pe[i]
            li = ln[i]
            for p in range(li):
                scratch[p] = iw[st + p]
            deg_e = 0
            ext = 0
            h = me
            q = st
            iw[q] = me
            q += 1
            for p in range(li):
                e = scratch[p]
                if status[e] == 1 and e != me:
                    deg_e += w[e]
                    h += e
                    iw[q] = e
                    q += 1
            for p in range(li):
                v = scratch[p]
                if status[v] == 0 and nv[v] > 0 and mark[v] != mstamp and v != i:
                    iw[q] = v
                    q += 1
                    ext += nv[v]
                    h += v
            ln[i] = q - st
            # approximate external degree
            d = degme - nv[i] + deg_e + ext
            bound = remaining - nel - nv[i]
            if d > bound:
                d = bound
            if d > degree[i] + degme:
                d = degree[i] + degme
            if d < 0:
                d = 0
            degree[i] = d
            hashv[i] = h
        # supervariable detection: variables of Lme with equal hash and identical lists
        hk = np.empty(nlme, dtype=np.int64)
        for t in range(nlme):
            hk[t] = hashv[lme[t]] * (n + 1) + ln[lme[t]]
        srt = np.argsort(hk)
        t = 0
        while t < nlme:
            t_end = t + 1
            while t_end < nlme and hk[srt[t_end]] == hk[srt[t]]:
                t_end += 1
            for a1 in range(t, t_end):
                i = lme[srt[a1]]
                if nv[i] == 0:
                    continue
                cstamp += 1
                for p in range(pe[i], pe[i] + ln[i]):
                    cmark[iw[p]] = cstamp
                for a2 in range(a1 + 1, t_end):
                    j = lme[srt[a2]]
                    if nv[j] == 0:
                        continue
                    same = True
                    for p in range(pe[j], pe[j] + ln[j]):
                        v = iw[p]
                        if cmark[v] != cstamp and v != i:
                            same = False
                            break
                    if same:
                        # i's list must not contain j beyond the symmetric pair
                        nv[i] += nv[j]
                        nv[j] = 0
                        status[j] = 2
                        rep[j] = i
            t = t_end
        # mass elimination is implicit: supervariables are ordered together below
        for t in range(nlme):
            i = lme[t]
            if nv[i] == 0:
                continue
            d = degree[i]
            if d < 0:
                d = 0
            if d > n:
                d = n
            degree[i] = d
            nxt[i] = head[d]
            prv[i] = -1
            if head[d] != -1:
                prv[head[d]] = i
            head[d] = i
            if d < mindeg:
                mindeg = d
        # element me is now the only element referencing Lme; restrict its list to live variables
        q = pe[me]
        for p in range(pe[me], pe[me] + ln[me]):
            v = iw[p]
            if nv[v] > 0:
                iw[q] = v
                q += 1
        ln[me] = q - pe[me]
    # final order: principal variables by their elimination step, each followed by its members
    principal_rank = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if order[i] >= 0:
            principal_rank[i] = order[i]
    # resolve representative chains
    for i in range(n):
        r = i
        while rep[r] != r:
            r = rep[r]
        rep[i] = r
    key = np.empty(n, dtype=np.int64)
    big = 2 * n + 1
    for i in range(n):
        if status[i] == 3:
            key[i] = big * (n + 1) + i
        else:
            r = rep[i]
            key[i] = principal_rank[r] * big + (0 if r == i else 1 + i % big)
    return np.argsort(key)


def amd_order(C: sp.spmatrix, dense_factor: float = 10.0) -> np.ndarray:
    """Fill-reducing permutation of a symmetric matrix (approximate minimum degree).

    Rows with more than ``max(16, dense_factor * sqrt(n))`` off-diagonal entries are
    treated as dense and ordered last (as AMD does).
    """
    A = sp.csc_matrix(C, dtype=float)
    n = A.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pat = sp.csc_matrix((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)
    pat = (pat + pat.T).tocsc()
    pat.sort_indices()
    cut = int(max(16, dense_factor * np.sqrt(n)))
    return _amd_kernel(n, pat.indptr.astype(np.int64), pat.indices.astype(np.int64), cut)


def symbolic(C: sp.spmatrix, perm: np.ndarray | None = None, n1: int | None = None) -> Symbolic:
    """Symbolic analysis of a symmetric pattern (see :class:`Symbolic`)."""
    return Symbolic(C, perm, n1)


@jit
def _scatter_upper(n, Cp, Ci, Cx, pinv, Up, Ui):
    """Values of ``C`` (CSC) on the permuted upper-triangular template ``Up, Ui``.

    Returns ``(Ux, ok)``; ``ok`` is False when an entry of ``C`` is outside the template.
    """
    Ux = np.zeros(len(Ui), dtype=np.float64)
    for col in range(n):
        for p in range(Cp[col], Cp[col + 1]):
            r = pinv[Ci[p]]
            c = pinv[col]
            if r > c:
                continue
            lo, hi = Up[c], Up[c + 1]
            while lo < hi:
                mid = (lo + hi) // 2
                if Ui[mid] < r:
                    lo = mid + 1
                else:
                    hi = mid
            if lo == Up[c + 1] or Ui[lo] != r:
                return Ux, False
            Ux[lo] += Cx[p]
    return Ux, True


class LDLFactor:
    """Numeric ``L D L'`` of ``C`` against a :class:`Symbolic` analysis (see module docs).

    ``C``'s pattern must lie within the analysed one (entries missing from ``C`` are
    zeros of the template); otherwise :class:`ValueError` is raised.
    """

    def __init__(self, C: sp.spmatrix, sym: Symbolic) -> None:
        A = sp.csc_matrix(C)
        self.sym = sym
        self.n = sym.n
        Ux, inside = _scatter_upper(sym.n, A.indptr.astype(np.int64), A.indices.astype(np.int64),
                                    A.data.astype(np.float64), sym.pinv, sym.Up, sym.Ui)
        if not inside:
            raise ValueError("the matrix has entries outside the analysed sparsity pattern")
        Li, Lx, D, S, ok = ldl_numeric(sym.n, sym.n1, sym.Up, sym.Ui, Ux, sym.Lp, sym.parent)
        self.Li, self.Lx, self.D = Li, Lx, D
        self.ok = bool(ok) and bool(np.isfinite(D).all())
        self.Ls = np.zeros((0, 0))
        self._logdet = float(np.log(D).sum()) if self.ok else np.nan
        if self.ok and S.shape[0]:
            try:
                with blas_threads(small_kernel_threads(S.shape[0])):
                    self.Ls = sla.cholesky(S, lower=True, check_finite=False)
                dl = np.diag(self.Ls)
                self.ok = bool((dl > 0).all() and np.isfinite(dl).all())
                self._logdet += 2.0 * float(np.log(dl).sum())
            except (np.linalg.LinAlgError, ValueError):
                self.ok = False
        self._selinv: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def logdet(self) -> float:
        return self._logdet

    def solve(self, rhs: np.ndarray, chunk: int = 64) -> np.ndarray:
        rhs = np.asarray(rhs, dtype=float)
        vec = rhs.ndim == 1
        R = rhs.reshape(self.n, -1)
        out = np.empty(R.shape)
        perm = self.sym.perm
        for start in range(0, R.shape[1], chunk):
            B = np.ascontiguousarray(R[perm, start: start + chunk], dtype=np.float64)
            out[perm, start: start + chunk] = ldl_solve(self.sym.n1, self.sym.Lp, self.Li, self.Lx, self.D,
                                                        self.Ls, B)
        return out[:, 0] if vec else out

    def inverse_block(self, idx: np.ndarray, max_entries: float = 2.5e7) -> np.ndarray | None:
        """``C^-1[idx][:, idx]`` from forward substitutions only, or None when too large.

        With ``Y = L^-1 E`` (``E`` the unit vectors of ``idx``), ``C^-1[idx, idx] =
        Y' D^-1 Y``; ``Y`` is nonzero only on the elimination-tree paths from ``idx``
        (often short: fixed effects reach the dense tail in a few steps) and in the dense
        tail, so neither the backward substitution nor ``n``-long columns are needed.
        """
        idx = np.asarray(idx, dtype=np.int64)
        sym = self.sym
        n1, s = int(sym.n1), self.n - int(sym.n1)
        q = sym.pinv[idx]
        reach = _etree_reach(sym.parent, n1, q)
        m = len(idx)
        if (len(reach) + s) * max(m, 1) > max_entries:
            return None
        loc = np.full(self.n, -1, dtype=np.int64)
        loc[reach] = np.arange(len(reach))
        B1 = np.zeros((len(reach), m))
        B2 = np.zeros((s, m))
        sp_ = q < n1
        B1[loc[q[sp_]], np.flatnonzero(sp_)] = 1.0
        B2[q[~sp_] - n1, np.flatnonzero(~sp_)] = 1.0
        _forward_reach(n1, sym.Lp, self.Li, self.Lx, self.D, reach, loc, B1, B2)
        with blas_threads(small_kernel_threads(max(s, len(reach)))):
            G = (B1 * np.asarray(self.D)[reach][:, None]).T @ B1
            if s:
                W = sla.solve_triangular(self.Ls, B2, lower=True, check_finite=False)
                G += W.T @ W
        return 0.5 * (G + G.T)

    def selected(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(diag, Zx, Z22)`` of ``C^-1`` in the permuted order (see :func:`selected_inverse`)."""
        if self._selinv is None:
            Z22 = cholesky_inverse(self.Ls)
            Zd, Zx = selected_inverse(self.n, self.sym.n1, self.sym.Lp, self.Li, self.Lx, self.D, Z22)
            self._selinv = (Zd, Zx, Z22)
        return self._selinv

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``C^-1[rows[m], cols[m]]`` for pairs on the pattern of ``L + L'`` (NaN elsewhere)."""
        Zd, Zx, Z22 = self.selected()
        return _lookup(self.sym.pinv[np.asarray(rows, dtype=np.int64)],
                       self.sym.pinv[np.asarray(cols, dtype=np.int64)],
                       self.sym.n1, self.sym.Lp, self.Li, Zd, Zx, Z22)


@jit
def _lookup(pr, pc, n1, Lp, Li, Zd, Zx, Z22):
    out = np.empty(len(pr), dtype=np.float64)
    for m in range(len(pr)):
        i, j = pr[m], pc[m]
        if i == j:
            out[m] = Zd[i]
            continue
        if i < j:
            i, j = j, i
        if j >= n1:
            out[m] = Z22[i - n1, j - n1]
            continue
        lo, hi = Lp[j], Lp[j + 1]
        while lo < hi:  # binary search (rows sorted)
            mid = (lo + hi) // 2
            if Li[mid] < i:
                lo = mid + 1
            else:
                hi = mid
        if lo < Lp[j + 1] and Li[lo] == i:
            out[m] = Zx[lo]
        else:
            out[m] = np.nan
    return out
