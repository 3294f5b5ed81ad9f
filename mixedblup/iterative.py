"""Preconditioned conjugate gradients for the mixed model equations with known variances.

Large evaluations (10^5 to 10^8 equations) cannot factorise the coefficient matrix.
:func:`solve_pcg` solves Henderson's equations (multiplied through by ``sigma_e^2``)

    [[X'WX,  X'WZ            ]  [beta]   [X'Wy]
     [Z'WX,  Z'WZ + s2 G^-1  ]] [u   ] = [Z'Wy]       G^-1 = blockdiag(K_t^-1 (x) Sigma_t^-1)

by preconditioned conjugate gradients without ever forming the matrix: every
iteration applies it to a vector as ``M'W(Mp)`` with ``M = [X Z]`` (one pass over the
records, "iteration on data") plus ``K_t^-1 (x) (s2 Sigma_t^-1)`` through each term's
sparse precision or, for a pedigree, through ``A^-1 = (I - P)' D^-1 (I - P)`` read
straight from the parent positions (``A^-1`` is not assembled).  Memory stays close to
the data: the incidence matrix of the records, the pedigree arrays (16 bytes per
animal) and seven vectors of the order of the equations.  Internally the animals are
ordered along maternal lines and the records by animal, so the passes read memory
almost sequentially (1.5 to 2 times faster than a random order on large pedigrees).

The iteration is the usual one of the field (BLUPF90, MiX99): double precision, a
diagonal or block-diagonal (per level, for correlated terms; dense for a small
fixed-effect part) preconditioner, warm starts, and the stopping rule
``||b - Cx||^2 / ||b||^2 <= tol`` (``tol = 1e-12`` by default).  On exit the true
residual is recomputed and reported as ``accuracy``.

Two engines compute the products: ``"numba"`` -- compiled kernels
(:func:`mixedblup._accel.jit`; the same kernels run as plain Python with
``MIXEDBLUP_NO_NUMBA=1``, slowly): one pass over the records (``M'W(Mp)`` gathered
and scattered per record), one pass over the animals for ``A^-1``, and one fused pass
for the vector updates; and ``"scipy"`` -- scipy.sparse products and numpy vector
operations (no compilation).  ``"auto"`` takes numba when it is available.  The
kernels are serial and dot products avoid BLAS: on a shared two-core machine threaded
kernels were 10 to 70 times slower per call (spinning threads), and the passes are
memory-bound anyway.

The public entry is :func:`mixedblup.fit` with ``variances=`` and ``solver="pcg"`` (or
``"auto"`` from :data:`PCG_MIN_EQUATIONS` equations), composed in :mod:`mixedblup.pcg_fit`;
:func:`solve_pcg` is the formula-free engine.

Progress goes to the ``mixedblup.iterative`` logger (INFO, every ``log_interval``
seconds) and to an optional ``callback(progress)``; the callback may return ``True``
to stop.  ``KeyboardInterrupt`` during the iteration returns the current iterate,
flagged ``interrupted`` and not converged, with its true accuracy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._accel import NUMBA, jit
from .errors import CovarianceError, DataError, EstimationError, MixedBlupWarning

__all__ = [
    "PCGResult",
    "PCGProgress",
    "SparsePrecision",
    "PedigreePrecision",
    "as_precision",
    "MMEOperator",
    "Preconditioner",
    "diagonal_preconditioner",
    "run_pcg",
    "solve_pcg",
    "choose_solver",
    "SolverInfo",
    "PCGInferenceWarning",
    "SOLVERS",
    "design_from_codes",
    "DEFAULT_TOL",
    "PCG_MIN_EQUATIONS",
]

logger = logging.getLogger("mixedblup.iterative")

#: Default stopping rule: ``||b - Cx||^2 / ||b||^2`` (squared, relative).
DEFAULT_TOL = 1e-12

#: ``choose_solver`` picks PCG from this many equations on.
PCG_MIN_EQUATIONS = 100_000

#: Fixed-effect parts up to this size get a dense block in the block preconditioner.
DENSE_FIXED_MAX = 500

#: Solvers of :func:`mixedblup.fit` (``solver=``).
SOLVERS = ("auto", "direct", "pcg")

ENGINES = ("auto", "numba", "scipy")
PRECONDITIONERS = ("auto", "diagonal", "block")


# --------------------------------------------------------------------------------------
# compiled kernels (serial: see the module notes on threads)
# --------------------------------------------------------------------------------------


@jit
def _records_product(indptr, indices, data, w, x, out):  # pragma: no cover - compiled
    """``out += M' W M x`` in one pass over the records (rows of CSR ``M``)."""
    n = indptr.shape[0] - 1
    for i in range(n):
        a = indptr[i]
        b = indptr[i + 1]
        s = 0.0
        for k in range(a, b):
            s += data[k] * x[indices[k]]
        s *= w[i]
        for k in range(a, b):
            out[indices[k]] += data[k] * s


@jit
def _csr_penalty1(indptr, indices, data, lam, x, off, out):  # pragma: no cover - compiled
    """``out[block] += lam K^-1 x[block]`` (one coefficient per level)."""
    q = indptr.shape[0] - 1
    for i in range(q):
        s = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            s += data[k] * x[off + indices[k]]
        out[off + i] += lam * s


@jit
def _csr_penaltyk(indptr, indices, data, lam, x, off, kk, out):  # pragma: no cover - compiled
    """``out[block] += (K^-1 (x) Lam) x[block]``, level-major blocks of ``kk``."""
    q = indptr.shape[0] - 1
    acc = np.zeros(kk)
    for i in range(q):
        for j in range(kk):
            acc[j] = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            a = data[k]
            c = off + indices[k] * kk
            for j in range(kk):
                acc[j] += a * x[c + j]
        for j in range(kk):
            s = 0.0
            for j2 in range(kk):
                s += lam[j, j2] * acc[j2]
            out[off + i * kk + j] += s


@jit
def _pedigree_penalty1(sire, dam, dinv, lam, x, off, out):  # pragma: no cover - compiled
    """``out[block] += lam (I-P)' D^-1 (I-P) x[block]`` in one pass over the animals.

    ``t_i = lam / d_i (x_i - x_s / 2 - x_d / 2)`` is added to animal ``i`` and
    ``-t_i / 2`` to each known parent.
    """
    n = sire.shape[0]
    for i in range(n):
        s_ = sire[i]
        d_ = dam[i]
        v = x[off + i]
        if s_ >= 0:
            v -= 0.5 * x[off + s_]
        if d_ >= 0:
            v -= 0.5 * x[off + d_]
        v *= lam * dinv[i]
        out[off + i] += v
        if s_ >= 0:
            out[off + s_] -= 0.5 * v
        if d_ >= 0:
            out[off + d_] -= 0.5 * v


@jit
def _pedigree_penaltyk(sire, dam, dinv, lam, x, off, kk, out):  # pragma: no cover - compiled
    """``out[block] += ((I-P)' D^-1 (I-P) (x) Lam) x[block]``, blocks of ``kk``."""
    n = sire.shape[0]
    v = np.zeros(kk)
    for i in range(n):
        s_ = sire[i]
        d_ = dam[i]
        for j in range(kk):
            xi = x[off + i * kk + j]
            if s_ >= 0:
                xi -= 0.5 * x[off + s_ * kk + j]
            if d_ >= 0:
                xi -= 0.5 * x[off + d_ * kk + j]
            v[j] = xi
        for j in range(kk):
            t = 0.0
            for j2 in range(kk):
                t += lam[j, j2] * v[j2]
            t *= dinv[i]
            out[off + i * kk + j] += t
            if s_ >= 0:
                out[off + s_ * kk + j] -= 0.5 * t
            if d_ >= 0:
                out[off + d_ * kk + j] -= 0.5 * t


@jit
def _dot(a, b):  # pragma: no cover - compiled
    """``a'b`` (a compiled loop: no BLAS threads)."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@jit
def _step(alpha, p, q, x, r, z, minv):  # pragma: no cover - compiled
    """Fused CG update: ``x += alpha p; r -= alpha q; z = minv * r``; returns ``r'r, r'z``."""
    rr = 0.0
    rz = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        ri = r[i] - alpha * q[i]
        r[i] = ri
        zi = minv[i] * ri
        z[i] = zi
        rr += ri * ri
        rz += ri * zi
    return rr, rz


@jit
def _apply_blocks(off, kk, inv, r, z):  # pragma: no cover - compiled
    """``z[block b] = inv[b] @ r[block b]`` over level-major blocks; returns ``r'z`` over them."""
    nb = inv.shape[0]
    rz = 0.0
    for b in range(nb):
        base = off + b * kk
        for j in range(kk):
            s = 0.0
            for j2 in range(kk):
                s += inv[b, j, j2] * r[base + j2]
            z[base + j] = s
            rz += r[base + j] * s
    return rz


@jit
def _xpby(z, beta, p):  # pragma: no cover - compiled
    """``p = z + beta p``."""
    for i in range(p.shape[0]):
        p[i] = z[i] + beta * p[i]


def _vdot(a: np.ndarray, b: np.ndarray) -> float:
    """``a'b`` without BLAS (threaded BLAS dots are slow on busy machines)."""
    return float(np.einsum("i,i->", a, b))


# --------------------------------------------------------------------------------------
# precisions K^-1
# --------------------------------------------------------------------------------------


def _index_dtype(n: int) -> type:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _inverse_permutation(perm: np.ndarray) -> np.ndarray:
    inv = np.empty(len(perm), dtype=np.int64)
    inv[perm] = np.arange(len(perm))
    return inv


@dataclass(frozen=True, eq=False)
class SparsePrecision:
    """A symmetric sparse precision ``K^-1`` (e.g. an assembled ``A^-1`` or a G-inverse).

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix
        ``q x q``, canonical, int32 indices where possible.
    """

    matrix: sp.csr_matrix

    @classmethod
    def from_matrix(cls, matrix: Any) -> SparsePrecision:
        """Wrap any scipy.sparse (or dense) symmetric matrix."""
        return cls(_csr(matrix))

    @property
    def size(self) -> int:
        """Order ``q``."""
        return self.matrix.shape[0]

    def diagonal(self) -> np.ndarray:
        """``diag(K^-1)``."""
        return self.matrix.diagonal()

    def to_sparse(self) -> sp.csr_matrix:
        """``K^-1`` as a sparse matrix."""
        return self.matrix

    def permuted(self, perm: np.ndarray) -> SparsePrecision:
        """The precision of the levels in the order ``perm`` (new level ``i`` = old ``perm[i]``)."""
        return SparsePrecision(_csr(self.matrix[perm][:, perm]))

    def locality_order(self) -> np.ndarray | None:
        """No reordering for general matrices (``None``)."""
        return None

    def nbytes(self) -> int:
        """Memory held."""
        m = self.matrix
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)


@dataclass(frozen=True, eq=False)
class PedigreePrecision:
    """``A^-1 = (I - P)' D^-1 (I - P)`` applied from parent positions, never assembled.

    ``P`` has ``1/2`` at (animal, parent); ``D`` holds the Mendelian sampling variances
    (with inbreeding, Quaas 1976).  A product is one pass over the animals (gathers
    from and scatters to the parents); the arrays take 16 bytes per animal, against
    about 80 for an assembled ``A^-1``.  Animals may be in any order.

    Attributes
    ----------
    sire, dam : numpy.ndarray
        Parent positions, -1 unknown.
    dinv : numpy.ndarray
        ``1 / d_i``.
    """

    sire: np.ndarray
    dam: np.ndarray
    dinv: np.ndarray

    @classmethod
    def from_parents(cls, sire: np.ndarray, dam: np.ndarray, d: np.ndarray) -> PedigreePrecision:
        """Build from parent positions (-1 unknown) and Mendelian sampling variances ``d``."""
        n = len(sire)
        it = _index_dtype(n + 1)
        sire = np.ascontiguousarray(sire, dtype=it)
        dam = np.ascontiguousarray(dam, dtype=it)
        d = np.asarray(d, dtype=float)
        if d.shape != (n,) or not (d > 0).all():
            raise CovarianceError("Mendelian sampling variances must be positive, one per animal")
        if ((sire >= n) | (dam >= n) | (sire < -1) | (dam < -1)).any():
            raise CovarianceError("parent positions must be -1 or positions of animals")
        return cls(sire, dam, np.ascontiguousarray(1.0 / d))

    @classmethod
    def from_pedigree(cls, pedigree: Any, *, inbreeding: bool = True) -> PedigreePrecision:
        """From a :class:`~mixedblup.Pedigree` (its :attr:`ids` order).

        Parameters
        ----------
        pedigree : Pedigree
        inbreeding : bool
            Use the exact Mendelian sampling variances (with inbreeding, as
            :meth:`~mixedblup.Pedigree.a_inverse`); ``False`` ignores inbreeding
            (``d = 1/2, 3/4, 1`` by number of known parents), a common shortcut for
            very large pedigrees that changes the model slightly.
        """
        sire, dam = pedigree.sire_pos, pedigree.dam_pos
        if inbreeding:
            d = pedigree.mendelian_variances()
        else:
            d = 1.0 - 0.25 * ((sire >= 0).astype(float) + (dam >= 0))
        return cls.from_parents(sire, dam, d)

    @property
    def size(self) -> int:
        """Number of animals."""
        return len(self.sire)

    def diagonal(self) -> np.ndarray:
        """``diag(A^-1)``: ``1/d_i + sum over offspring roles (1/4) / d_o`` (selfing: 1)."""
        n = self.size
        s, d, w = self.sire, self.dam, self.dinv
        diag = w.copy()
        selfed = (s >= 0) & (s == d)
        ks = (s >= 0) & ~selfed
        kd = (d >= 0) & ~selfed
        diag += np.bincount(s[ks], weights=0.25 * w[ks], minlength=n)
        diag += np.bincount(d[kd], weights=0.25 * w[kd], minlength=n)
        diag += np.bincount(s[selfed], weights=w[selfed], minlength=n)
        return diag

    def to_sparse(self) -> sp.csr_matrix:
        """``A^-1`` assembled (for checks on small pedigrees)."""
        n = self.size
        rows = np.arange(n)
        r, c, v = [rows], [rows], [np.ones(n)]
        for par in (self.sire, self.dam):
            k = par >= 0
            r.append(rows[k])
            c.append(par[k].astype(np.int64))
            v.append(np.full(int(k.sum()), -0.5))
        L = sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape=(n, n))
        return (L.T @ sp.diags(self.dinv) @ L).tocsr()

    def permuted(self, perm: np.ndarray) -> PedigreePrecision:
        """The same pedigree with animals in the order ``perm`` (new ``i`` = old ``perm[i]``)."""
        inv = _inverse_permutation(perm)
        s, d = self.sire[perm], self.dam[perm]
        s = np.where(s >= 0, inv[np.maximum(s, 0)], -1)
        d = np.where(d >= 0, inv[np.maximum(d, 0)], -1)
        return PedigreePrecision.from_parents(s, d, 1.0 / self.dinv[perm])

    def locality_order(self) -> np.ndarray:
        """An order of the animals that keeps dams and their offspring close in memory.

        Breadth-first along maternal lines: maternal founders, then their offspring
        grouped by dam (in the dams' order), and so on.  Products then read and write
        the dams' entries almost sequentially (sires are few and stay in cache), which
        is 1.5 to 2 times faster than a random order on large pedigrees.
        """
        from scipy.sparse.csgraph import breadth_first_order

        n = self.size
        dam = self.dam.astype(np.int64)
        parent = np.where(dam >= 0, dam, n)  # a virtual root adopts maternal founders
        graph = sp.csr_matrix((np.ones(n), (parent, np.arange(n))), shape=(n + 1, n + 1))
        order = breadth_first_order(graph, n, directed=True, return_predecessors=False)
        order = order[order != n]
        if len(order) != n:  # cannot happen for a pedigree without loops; be safe
            return np.arange(n)
        return order

    def nbytes(self) -> int:
        """Memory held."""
        return int(self.sire.nbytes + self.dam.nbytes + self.dinv.nbytes)


Precision = SparsePrecision | PedigreePrecision


def as_precision(obj: Any, levels: pd.Index | None = None) -> Precision:
    """The precision of a term's levels from what the caller has.

    Parameters
    ----------
    obj : Pedigree, PedigreeCovariance, BoundCovariance, covariance structure, sparse matrix or Precision
        A :class:`~mixedblup.Pedigree` (or the ``PedigreeCovariance`` wrapping one) is
        used in pedigree form (:class:`PedigreePrecision`, ``A^-1`` never assembled);
        a bound covariance or a matrix through its sparse ``K^-1``; another covariance
        structure (genetic groups, single-step ``H^-1``...) is bound to ``levels`` first.
    levels : pandas.Index, optional
        The term's levels, to bind an unbound structure.

    Returns
    -------
    SparsePrecision or PedigreePrecision
    """
    from .covariance import PedigreeCovariance
    from .pedigree import Pedigree

    if isinstance(obj, (SparsePrecision, PedigreePrecision)):
        return obj
    if isinstance(obj, Pedigree):
        return PedigreePrecision.from_pedigree(obj)
    if isinstance(obj, PedigreeCovariance):
        return PedigreePrecision.from_pedigree(obj.pedigree)
    if hasattr(obj, "precision"):
        return SparsePrecision.from_matrix(obj.precision)
    if sp.issparse(obj) or isinstance(obj, np.ndarray):
        return SparsePrecision.from_matrix(obj)
    if hasattr(obj, "bind"):
        if levels is None:
            raise CovarianceError(
                f"{type(obj).__name__} must be bound to the term's levels (structure.bind(levels)) "
                "before it is used by the iterative solver"
            )
        return SparsePrecision.from_matrix(obj.bind(pd.Index(levels, dtype=object)).precision)
    raise CovarianceError(
        f"cannot use {type(obj).__name__} as the covariance of a term in PCG; give a "
        "BoundCovariance, a Pedigree or a sparse precision matrix"
    )


# --------------------------------------------------------------------------------------
# the operator C (matrix-free)
# --------------------------------------------------------------------------------------


def _csr(m: Any) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=float)
    m.sum_duplicates()
    m.sort_indices()
    m.indices = m.indices.astype(_index_dtype(max(m.shape) + 1), copy=False)
    m.indptr = m.indptr.astype(np.int64, copy=False)
    return m


def _precision_factor(sigma: np.ndarray, residual: float, name: str) -> np.ndarray:
    """``s2 Sigma^-1`` (positive-definite ``Sigma`` required)."""
    sigma = np.atleast_2d(np.asarray(sigma, dtype=float))
    try:
        chol = np.linalg.cholesky(sigma)
        if np.diag(chol).min() ** 2 <= 1e-12 * np.diag(sigma).max():
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        raise CovarianceError(
            f"the covariance of term {name!r} is not positive definite ({sigma.tolist()}); the "
            "iterative solver uses Henderson's equations, which need Sigma^-1. Use the direct "
            "solver (solver='direct') for zero variances or singular covariance matrices"
        ) from None
    inv = np.linalg.inv(sigma)
    return np.ascontiguousarray(residual * (inv + inv.T) / 2.0)


@dataclass(eq=False)
class _Term:
    offset: int
    k: int
    lam: np.ndarray
    precision: Precision


class MMEOperator:
    """The coefficient matrix ``C`` (times ``sigma_e^2``) as a linear operator.

    Internally the levels of pedigree terms are put in :meth:`PedigreePrecision.
    locality_order` and the records sorted by level of the largest such term, for
    memory locality; :meth:`to_internal` and :meth:`to_external` convert vectors.

    Parameters
    ----------
    X : numpy.ndarray or scipy.sparse matrix
        ``n x p`` fixed-effect design (full column rank for unique ``beta``).
    Zs : sequence of scipy.sparse matrices
        One ``n x q_t k_t`` incidence per term, level-major.
    ks : sequence of int
        Coefficients per level of each term.
    precisions : sequence
        ``K_t^-1`` per term (see :func:`as_precision`).
    sigmas : sequence of numpy.ndarray
        ``Sigma_t`` per term (``k_t x k_t``, positive definite).
    residual : float
        ``sigma_e^2``.
    weights : numpy.ndarray, optional
        Precision weights.
    engine : {"auto", "numba", "scipy"}
    reorder : bool
        Reorder pedigree levels and records for locality (results are unaffected).
    names : sequence of str, optional
        Term names for messages.
    """

    def __init__(
        self,
        X: Any,
        Zs: Sequence[sp.spmatrix],
        ks: Sequence[int],
        precisions: Sequence[Any],
        sigmas: Sequence[np.ndarray],
        residual: float,
        weights: np.ndarray | None = None,
        *,
        engine: str = "auto",
        reorder: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
        self.engine = ("numba" if NUMBA else "scipy") if engine == "auto" else engine
        if not (np.isfinite(residual) and residual > 0):
            raise CovarianceError(f"the residual variance must be positive and finite; got {residual}")
        names = list(names) if names is not None else [f"term{i}" for i in range(len(Zs))]
        Xs = sp.csr_matrix(X) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, dtype=float))
        n = Xs.shape[0]
        self.p = Xs.shape[1]
        self.n = n
        blocks = [Xs]
        self.terms: list[_Term] = []
        perm_parts = [np.arange(self.p)]
        offset = self.p
        sort_key = None
        for Z, k, prec, sigma, name in zip(Zs, ks, precisions, sigmas, names):
            prec = as_precision(prec)
            Z = sp.csr_matrix(Z)
            if Z.shape[0] != n:
                raise DataError(f"Z of term {name!r} has {Z.shape[0]} rows; X has {n}")
            q = prec.size
            if q * k != Z.shape[1]:
                raise CovarianceError(
                    f"term {name!r} has {Z.shape[1] // max(k, 1)} levels but its precision has order {q}"
                )
            lam = _precision_factor(sigma, residual, name)
            if lam.shape != (k, k):
                raise CovarianceError(f"term {name!r}: Sigma is {lam.shape}, expected {(k, k)}")
            level_order = prec.locality_order() if reorder else None
            if level_order is not None:
                prec = prec.permuted(level_order)
                cols = (level_order[:, None] * k + np.arange(k)[None, :]).ravel()
                Z = Z[:, cols]
            else:
                cols = np.arange(q * k)
            if reorder and (sort_key is None or q > sort_key[0]):  # records by level of the largest term
                first = np.full(n, np.iinfo(np.int64).max)
                nz = np.diff(Z.indptr) > 0
                if nz.any():
                    first[nz] = np.minimum.reduceat(Z.indices, Z.indptr[:-1][nz])
                sort_key = (q, first)
            perm_parts.append(offset + cols)
            blocks.append(Z)
            self.terms.append(_Term(offset, k, lam, prec))
            offset += q * k
        self.N = offset
        #: internal position i holds external equation perm[i]
        self.perm = np.concatenate(perm_parts).astype(np.int64)
        self.record_order = (np.argsort(sort_key[1], kind="stable") if sort_key is not None
                             else np.arange(n))
        M = sp.hstack(blocks, format="csr")
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        if sort_key is not None:
            M = M[self.record_order]
            w = w[self.record_order]
        self.M = _csr(M)
        self.w = np.ascontiguousarray(w)

    # ------------------------------------------------------------------ orders

    def to_internal(self, v: np.ndarray) -> np.ndarray:
        """A vector over the equations from the external (X, Z column) order."""
        return np.ascontiguousarray(np.asarray(v, dtype=float)[self.perm])

    def to_external(self, v: np.ndarray) -> np.ndarray:
        """A vector over the equations back in the external order."""
        out = np.empty_like(v)
        out[self.perm] = v
        return out

    # ------------------------------------------------------------------ pieces

    def rhs(self, y: np.ndarray) -> np.ndarray:
        """``M'Wy`` (internal order); ``y`` in the caller's record order."""
        yw = np.asarray(y, dtype=float)[self.record_order] * self.w
        return np.asarray(self.M.T @ yw).ravel()

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``out = C x`` (internal order)."""
        if out is None:
            out = np.empty(self.N)
        if self.engine == "numba":
            M = self.M
            out.fill(0.0)
            _records_product(M.indptr, M.indices, M.data, self.w, x, out)
            for t in self.terms:
                prec = t.precision
                if isinstance(prec, PedigreePrecision):
                    if t.k == 1:
                        _pedigree_penalty1(prec.sire, prec.dam, prec.dinv, float(t.lam[0, 0]), x,
                                           t.offset, out)
                    else:
                        _pedigree_penaltyk(prec.sire, prec.dam, prec.dinv, t.lam, x, t.offset, t.k, out)
                else:
                    K = prec.matrix
                    if t.k == 1:
                        _csr_penalty1(K.indptr, K.indices, K.data, float(t.lam[0, 0]), x, t.offset, out)
                    else:
                        _csr_penaltyk(K.indptr, K.indices, K.data, t.lam, x, t.offset, t.k, out)
            return out
        out[:] = self.M.T @ (self.w * (self.M @ x))
        for t in self.terms:
            q = t.precision.size
            block = x[t.offset: t.offset + q * t.k].reshape(q, t.k)
            prec = t.precision
            if isinstance(prec, PedigreePrecision):
                has_s, has_d = prec.sire >= 0, prec.dam >= 0
                s, d = prec.sire[has_s], prec.dam[has_d]
                v = block.copy()
                v[has_s] -= 0.5 * block[s]
                v[has_d] -= 0.5 * block[d]
                v = (v @ t.lam) * prec.dinv[:, None]
                res = v.copy()
                for j in range(t.k):
                    res[:, j] -= 0.5 * (np.bincount(s, weights=v[has_s, j], minlength=q)
                                        + np.bincount(d, weights=v[has_d, j], minlength=q))
            else:
                res = prec.matrix @ (block @ t.lam)
            out[t.offset: t.offset + q * t.k] += res.ravel()
        return out

    def diagonal(self) -> np.ndarray:
        """``diag(C)`` (internal order)."""
        M2 = self.M.copy()
        M2.data = M2.data**2
        diag = np.asarray(M2.T @ self.w).ravel()
        for t in self.terms:
            kd = t.precision.diagonal()
            q = t.precision.size
            diag[t.offset: t.offset + q * t.k] += (kd[:, None] * np.diag(t.lam)[None, :]).ravel()
        return diag

    def term_blocks(self, t: _Term) -> np.ndarray:
        """Per-level ``k x k`` diagonal blocks of ``C`` for term ``t`` (internal order)."""
        q, k = t.precision.size, t.k
        Z = self.M[:, t.offset: t.offset + q * k].tocoo()
        level = np.full(self.n, -1, dtype=np.int64)
        V = np.zeros((self.n, k))
        level[Z.row] = Z.col // k
        V[Z.row, Z.col % k] = Z.data
        has = level >= 0
        blocks = np.zeros((q, k, k))
        for j in range(k):
            for j2 in range(j, k):
                v = np.bincount(level[has], weights=(self.w * V[:, j] * V[:, j2])[has], minlength=q)
                blocks[:, j, j2] = v
                blocks[:, j2, j] = v
        blocks += t.precision.diagonal()[:, None, None] * t.lam[None, :, :]
        return blocks

    def fixed_block(self) -> np.ndarray:
        """``X'WX`` dense."""
        Xp = self.M[:, : self.p]
        return np.asarray((Xp.T @ sp.diags(self.w) @ Xp).todense())

    def to_sparse(self) -> sp.csr_matrix:
        """``C`` assembled, in the external order (small problems and tests)."""
        C = self.M.T @ sp.diags(self.w) @ self.M
        blocks = [sp.csr_matrix((self.p, self.p))]
        for t in self.terms:
            blocks.append(sp.kron(t.precision.to_sparse(), sp.csr_matrix(t.lam)))
        C = (C + sp.block_diag(blocks)).tocsr()
        inv = _inverse_permutation(self.perm)
        return C[inv][:, inv].tocsr()

    def nbytes(self) -> int:
        """Memory held by the operator (incidences, weights, precisions, orders)."""
        m = self.M
        total = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes + self.w.nbytes
        total += self.perm.nbytes + self.record_order.nbytes
        return int(total + sum(t.precision.nbytes() for t in self.terms))


# --------------------------------------------------------------------------------------
# preconditioner
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class Preconditioner:
    """Diagonal part ``minv`` (zero where a block applies) and dense level blocks.

    Attributes
    ----------
    kind : str
        ``"diagonal"`` or ``"block"``.
    minv : numpy.ndarray
        Inverse diagonal, zero on equations covered by a block.
    blocks : list of (offset, k, inverses)
        Inverse ``k x k`` blocks of consecutive equations from ``offset``.
    """

    kind: str
    minv: np.ndarray
    blocks: list[tuple[int, int, np.ndarray]] = field(default_factory=list)

    def apply(self, r: np.ndarray, z: np.ndarray, compiled: bool) -> float:
        """``z = M^-1 r``; returns ``r'z``."""
        np.multiply(self.minv, r, out=z)
        rz = _dot(r, z) if compiled else _vdot(r, z)
        for off, k, inv in self.blocks:
            if compiled:
                rz += _apply_blocks(off, k, inv, r, z)
            else:
                nb = inv.shape[0]
                rb = r[off: off + nb * k].reshape(nb, k)
                zb = np.einsum("bij,bj->bi", inv, rb)
                z[off: off + nb * k] = zb.ravel()
                rz += float(np.einsum("bi,bi->", rb, zb))
        return rz

    def nbytes(self) -> int:
        """Memory held."""
        return int(self.minv.nbytes + sum(inv.nbytes for _, _, inv in self.blocks))


def _inverse_blocks(blocks: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.ascontiguousarray(np.linalg.inv(blocks))
    except np.linalg.LinAlgError:
        raise EstimationError(f"a diagonal block of the equations ({what}) is singular") from None


def diagonal_preconditioner(diag: np.ndarray) -> Preconditioner:
    """The Jacobi preconditioner of a matrix with diagonal ``diag``."""
    zero = ~(diag > 0)
    if zero.any():
        idx = np.flatnonzero(zero)[:10].tolist()
        raise EstimationError(
            f"{int(zero.sum())} equation(s) have a zero diagonal (internal positions {idx}): an "
            "empty fixed-effect column or a level without information; the equations are singular"
        )
    return Preconditioner("diagonal", 1.0 / diag)


def _build_preconditioner(op: MMEOperator, kind: str) -> Preconditioner:
    if kind not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}; got {kind!r}")
    pre = diagonal_preconditioner(op.diagonal())
    if kind == "auto":
        kind = "block" if any(t.k > 1 for t in op.terms) or 1 < op.p <= DENSE_FIXED_MAX else "diagonal"
    if kind == "block":
        pre.kind = "block"
        if 1 < op.p <= DENSE_FIXED_MAX:
            inv = _inverse_blocks(op.fixed_block()[None, :, :], "X'WX")
            pre.minv[: op.p] = 0.0
            pre.blocks.append((0, op.p, inv))
        for t in op.terms:
            if t.k > 1:
                q = t.precision.size
                inv = _inverse_blocks(op.term_blocks(t), "a level of a correlated term")
                pre.minv[t.offset: t.offset + q * t.k] = 0.0
                pre.blocks.append((t.offset, t.k, inv))
    return pre


# --------------------------------------------------------------------------------------
# results and the driver
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCGProgress:
    """What a progress callback receives after each iteration.

    Attributes
    ----------
    iteration : int
    accuracy : float
        ``||r||^2 / ||b||^2`` of the recursive residual.
    seconds : float
        Since the start of the iteration.
    """

    iteration: int
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class PCGResult:
    """Solution of the mixed model equations by PCG.

    Attributes
    ----------
    beta : numpy.ndarray
        Fixed effects (columns of X).
    u : numpy.ndarray
        Random effects in Z's column order (terms in order, level-major).
    iterations : int
    accuracy : float
        Achieved ``||b - Cx||^2 / ||b||^2`` of the returned solution (true residual,
        recomputed after the iteration).
    converged : bool
        ``accuracy <= tol``.
    interrupted : bool
        Stopped by KeyboardInterrupt, the callback or ``max_seconds``; the solution
        is then the last iterate (usable, e.g. as a warm start).
    history : numpy.ndarray
        Recursive ``||r||^2 / ||b||^2`` after each iteration.
    seconds : float
        Wall time of the iteration (set-up excluded, see ``setup_seconds``).
    setup_seconds : float
        Building the operator and preconditioner.
    tol : float
    preconditioner, engine : str
    n_equations : int
    memory_bytes : int
        Memory held by the operator, the preconditioner and the six work vectors.
    """

    beta: np.ndarray
    u: np.ndarray
    iterations: int = 0
    accuracy: float = np.nan
    converged: bool = False
    interrupted: bool = False
    history: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    seconds: float = 0.0
    setup_seconds: float = 0.0
    tol: float = DEFAULT_TOL
    preconditioner: str = "diagonal"
    engine: str = "scipy"
    n_equations: int = 0
    memory_bytes: int = 0

    @property
    def x(self) -> np.ndarray:
        """``[beta, u]``: pass it (or the result) as ``x0`` to warm-start another solve."""
        return np.concatenate([self.beta, self.u])


def run_pcg(
    matvec: Callable[[np.ndarray, np.ndarray], Any],
    b: np.ndarray,
    pre: Preconditioner,
    *,
    x0: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    callback: Callable[[PCGProgress], Any] | None = None,
    log_interval: float = 10.0,
    max_seconds: float | None = None,
    compiled: bool = False,
    max_restarts: int = 2,
) -> dict[str, Any]:
    """The PCG iteration around any ``matvec(x, out)`` (in memory and on Dask).

    Parameters
    ----------
    matvec : callable
        ``matvec(x, out)`` writes ``C x`` into ``out``.
    b : numpy.ndarray
        Right-hand side.
    pre : Preconditioner
    x0 : numpy.ndarray, optional
        Starting values (zero by default).
    tol, max_iter, callback, log_interval, max_seconds
        As in :func:`solve_pcg`.
    compiled : bool
        Use the compiled vector kernels.
    max_restarts : int
        Restarts from the true residual when the recursive one has drifted.

    Returns
    -------
    dict
        ``x, iterations, accuracy, converged, interrupted, history, seconds``.
    """
    N = b.shape[0]
    max_iter = int(max_iter) if max_iter is not None else max(1000, 10 * int(np.sqrt(N)))
    x = np.zeros(N) if x0 is None else np.array(x0, dtype=float, copy=True)
    if x.shape != (N,):
        raise ValueError(f"x0 has shape {x.shape}; the equations have order {N}")
    dot = _dot if compiled else _vdot
    r = np.empty(N)
    z = np.empty(N)
    q = np.empty(N)
    bb = dot(b, b)
    t0 = time.perf_counter()
    history: list[float] = []
    if bb == 0.0:
        return dict(x=np.zeros(N), iterations=0, accuracy=0.0, converged=True, interrupted=False,
                    history=np.zeros(0), seconds=0.0)
    it = 0
    interrupted = False
    restarts = 0
    last_log = t0
    while True:
        if x.any():
            matvec(x, q)
            np.subtract(b, q, out=r)
        else:
            r[:] = b
        rz = pre.apply(r, z, compiled)
        p = z.copy()
        acc = dot(r, r) / bb
        try:
            while acc > tol and it < max_iter:
                matvec(p, q)
                pq = dot(p, q)
                if not pq > 0:
                    raise EstimationError(
                        f"PCG breakdown at iteration {it + 1} (p'Cp = {pq:.3g}): the equations are not "
                        "positive definite (a fixed effect confounded with others, or a negative variance)"
                    )
                alpha = rz / pq
                if compiled:
                    rr, rz_new = _step(alpha, p, q, x, r, z, pre.minv)
                    for off, k, inv in pre.blocks:
                        rz_new += _apply_blocks(off, k, inv, r, z)
                else:
                    x += alpha * p
                    r -= alpha * q
                    rr = _vdot(r, r)
                    rz_new = pre.apply(r, z, False)
                it += 1
                acc = rr / bb
                history.append(acc)
                beta = rz_new / rz
                rz = rz_new
                if compiled:
                    _xpby(z, beta, p)
                else:
                    p *= beta
                    p += z
                now = time.perf_counter()
                if now - last_log >= log_interval:
                    logger.info("PCG iteration %d: accuracy %.3e, %.1f s", it, acc, now - t0)
                    last_log = now
                if callback is not None and callback(PCGProgress(it, acc, now - t0)):
                    interrupted = True
                    logger.info("PCG stopped by the callback at iteration %d", it)
                    break
                if max_seconds is not None and now - t0 > max_seconds:
                    interrupted = True
                    logger.warning("PCG stopped after %.1f s (max_seconds) at iteration %d", now - t0, it)
                    break
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("PCG interrupted at iteration %d; returning the current iterate", it)
        matvec(x, q)  # true residual of the returned iterate
        np.subtract(b, q, out=r)
        true_acc = dot(r, r) / bb
        if interrupted or true_acc <= tol or it >= max_iter or restarts >= max_restarts:
            break
        restarts += 1
        logger.info("PCG: recursive accuracy %.3e but true accuracy %.3e; restarting", acc, true_acc)
    seconds = time.perf_counter() - t0
    converged = true_acc <= tol
    if not converged and not interrupted:
        logger.warning("PCG did not reach accuracy %.1e in %d iterations (achieved %.3e)", tol, it, true_acc)
    logger.info("PCG finished: %d iterations, accuracy %.3e, %.2f s", it, true_acc, seconds)
    return dict(x=x, iterations=it, accuracy=true_acc, converged=converged, interrupted=interrupted,
                history=np.asarray(history), seconds=seconds)


def solve_pcg(
    design: Any,
    covariances: Sequence[Any],
    sigmas: Sequence[np.ndarray],
    residual: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int | None = None,
    x0: np.ndarray | PCGResult | None = None,
    preconditioner: str = "auto",
    callback: Callable[[PCGProgress], Any] | None = None,
    engine: str = "auto",
    reorder: bool = True,
    log_interval: float = 10.0,
    max_seconds: float | None = None,
) -> PCGResult:
    """Solve the mixed model equations for known variances by PCG, matrix-free.

    Parameters
    ----------
    design : Design
        From :func:`~mixedblup.design.build_design` (or :func:`design_from_codes`):
        ``y``, ``X`` (dense or scipy.sparse), ``weights`` and ``terms`` (``Z``, ``k``).
    covariances : sequence
        Per term: ``None`` (independent levels), a
        :class:`~mixedblup.covariance.BoundCovariance`, or better for
        pedigrees the :class:`~mixedblup.Pedigree` itself (``A^-1`` is then applied
        from the parent positions and never assembled); see :func:`as_precision`.
    sigmas : sequence of numpy.ndarray
        ``Sigma_t`` per term, positive definite.
    residual : float
        ``sigma_e^2``.
    tol : float
        Stop when ``||b - Cx||^2 / ||b||^2 <= tol`` (default ``1e-12``, the usual rule
        of national evaluations; solutions then agree with exact ones to about
        ``1e-5`` relative, ``1e-16`` gives about ``1e-7``).
    max_iter : int, optional
        Default ``max(1000, 10 sqrt(order))``.
    x0 : numpy.ndarray or PCGResult, optional
        Warm start ``[beta, u]`` (e.g. the previous evaluation's solutions).
    preconditioner : {"auto", "diagonal", "block"}
        ``"block"`` inverts the ``k x k`` block of each level of multi-column terms and
        ``X'WX`` when it has at most 500 columns; ``"auto"`` does so when either applies.
    callback : callable, optional
        ``callback(PCGProgress)`` after every iteration; return ``True`` to stop.
    engine : {"auto", "numba", "scipy"}
        Compiled kernels (numba) or scipy.sparse products.
    reorder : bool
        Internally reorder pedigree animals (maternal lines) and records for memory
        locality; the results are returned in the design's order either way.
    log_interval : float
        Seconds between INFO progress messages on the ``mixedblup.iterative`` logger.
    max_seconds : float, optional
        Stop (not converged, ``interrupted``) after this long.

    Returns
    -------
    PCGResult

    Raises
    ------
    CovarianceError
        A term's ``Sigma`` is not positive definite (use the direct solver).
    EstimationError
        The equations are not positive definite.

    Notes
    -----
    The kernels are serial.  On a two-core machine shared with other work, threaded
    kernels (numba ``parallel=True``, threaded BLAS dot products) spin and were 10 to
    70 times slower per call than serial ones in measurements; the products are
    memory-bound, so threads gain little even on an idle machine.  Run several
    evaluations in parallel processes instead, or use the Dask path.
    """
    t0 = time.perf_counter()
    terms = list(design.terms)
    if len(covariances) != len(terms) or len(sigmas) != len(terms):
        raise ValueError(f"need one covariance and one Sigma per term ({len(terms)})")
    precisions = []
    for term, cov in zip(terms, covariances):
        if cov is None:  # independent levels
            cov = sp.identity(term.Z.shape[1] // term.k, format="csr")
        prec = as_precision(cov, term.levels)
        if isinstance(prec, PedigreePrecision) and not isinstance(cov, PedigreePrecision):
            ped = getattr(cov, "pedigree", cov)
            ids = getattr(ped, "ids", None)
            if ids is not None and ids is not term.levels and not pd.Index(ids).equals(pd.Index(term.levels)):
                raise CovarianceError(
                    f"term {term.name!r}: its levels are not the pedigree's IDs in pedigree order"
                )
        precisions.append(prec)
    op = MMEOperator(
        design.X, [t.Z for t in terms], [t.k for t in terms], precisions, sigmas, residual,
        getattr(design, "weights", None), engine=engine, reorder=reorder, names=[t.name for t in terms],
    )
    b = op.rhs(design.y)
    pre = _build_preconditioner(op, preconditioner)
    if isinstance(x0, PCGResult):
        x0 = x0.x
    if x0 is not None:
        x0 = np.asarray(x0, dtype=float)
        if x0.shape != (op.N,):
            raise ValueError(f"x0 has shape {x0.shape}; the equations have order {op.N}")
        x0 = op.to_internal(x0)
    compiled = op.engine == "numba" and NUMBA
    setup = time.perf_counter() - t0
    logger.info(
        "PCG: %d equations (%d fixed), %d records, %s preconditioner, %s engine; set-up %.2f s",
        op.N, op.p, op.n, pre.kind, op.engine, setup,
    )
    out = run_pcg(op.matvec, b, pre, x0=x0, tol=tol, max_iter=max_iter, callback=callback,
                  log_interval=log_interval, max_seconds=max_seconds, compiled=compiled)
    x = op.to_external(out.pop("x"))
    memory = op.nbytes() + pre.nbytes() + 6 * x.nbytes + op.n * 8
    return PCGResult(
        beta=x[: op.p].copy(), u=x[op.p:].copy(), tol=tol, preconditioner=pre.kind,
        engine=op.engine, n_equations=op.N, memory_bytes=int(memory), setup_seconds=setup, **out,
    )


def choose_solver(n_equations: int, *, requested: str = "auto", variances_known: bool = True) -> str:
    """``"direct"`` or ``"pcg"`` for a system of ``n_equations`` (``"auto"``: PCG from 100,000).

    Parameters
    ----------
    n_equations : int
        Order of the equations (fixed effects plus random-effect coefficients).
    requested : {"auto", "direct", "pcg"}
        ``"auto"`` takes PCG from :data:`PCG_MIN_EQUATIONS` equations on, when the
        variances are known.
    variances_known : bool
        Whether the variance components are given.  Estimating them (REML, ML) needs a
        factorisation, so ``"auto"`` then means ``"direct"`` and ``"pcg"`` is an error.

    Returns
    -------
    str

    Raises
    ------
    EstimationError
        ``requested="pcg"`` without known variances.
    """
    if requested not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {requested!r}")
    if not variances_known:
        if requested == "pcg":
            raise EstimationError(
                "solver='pcg' needs known variance components (variances={...}): estimating them "
                "by REML or ML needs a factorisation of the equations. Estimate them with "
                "solver='direct' (on the full data or a subset), then pass them as variances= "
                "to the PCG fit"
            )
        return "direct"
    if requested != "auto":
        return requested
    return "pcg" if n_equations >= PCG_MIN_EQUATIONS else "direct"


class PCGInferenceWarning(MixedBlupWarning):
    """A fit solved by PCG has no ``C^-1``: standard errors, PEV, exact reliabilities and
    the log-likelihood (AIC, BIC) are NaN (approximate reliabilities are given instead)."""


@dataclass(frozen=True)
class SolverInfo:
    """How the mixed model equations of a fit were solved iteratively (``res.solver_info``).

    Attributes
    ----------
    solver : str
        ``"pcg"``.
    iterations : int
    accuracy : float
        Achieved ``||b - Cx||^2 / ||b||^2`` of the returned solutions (true residual).
    tol : float
        The stopping rule's threshold.
    converged : bool
        ``accuracy <= tol``.
    interrupted : bool
        Stopped early (callback, ``max_seconds``, KeyboardInterrupt): the solutions are
        the last iterate, usable as a warm start.
    seconds : float
        Wall time of the solve: set-up (operator, preconditioner) and iterations.
    setup_seconds : float
        Of which set-up.
    preconditioner, engine : str
    n_equations : int
    memory_bytes : int
        Memory held by the operator, the preconditioner and the work vectors.
    reliability : str or None
        Method of the approximate reliabilities in ``random_effects()["reliability_approx"]``
        (``None`` when none were computed).
    history : numpy.ndarray
        Recursive accuracy after each iteration.
    """

    solver: str
    iterations: int
    accuracy: float
    tol: float
    converged: bool
    interrupted: bool
    seconds: float
    setup_seconds: float
    preconditioner: str
    engine: str
    n_equations: int
    memory_bytes: int = 0
    reliability: str | None = None
    history: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @classmethod
    def from_result(cls, result: PCGResult, reliability: str | None = None) -> SolverInfo:
        """From a :class:`PCGResult`."""
        return cls(
            solver="pcg", iterations=int(result.iterations), accuracy=float(result.accuracy),
            tol=float(result.tol), converged=bool(result.converged), interrupted=bool(result.interrupted),
            seconds=float(result.seconds + result.setup_seconds), setup_seconds=float(result.setup_seconds),
            preconditioner=result.preconditioner, engine=result.engine, n_equations=int(result.n_equations),
            memory_bytes=int(result.memory_bytes), reliability=reliability, history=result.history,
        )

    def summary_items(self) -> list[tuple[str, Any]]:
        """``(label, value)`` facts for the report."""
        status = "yes" if self.converged else ("NO (interrupted)" if self.interrupted else "NO")
        return [
            ("Solver", f"PCG ({self.preconditioner} preconditioner)"),
            ("PCG iterations", self.iterations),
            ("PCG accuracy", f"{self.accuracy:.3e} (tol {self.tol:.0e})"),
            ("PCG converged", status),
            ("PCG seconds", self.seconds),
        ]

    def summary_notes(self) -> list[str]:
        """Footnotes for the report."""
        notes = [(
            "Solved by PCG (solver='pcg'): standard errors, tests, PEV, exact reliabilities and the "
            "log-likelihood (AIC, BIC) need the inverse of the coefficient matrix and are not computed "
            "(NaN). Accuracy is ||b - Cx||^2 / ||b||^2."
        )]
        if self.reliability:
            notes.append(f"random_effects()['reliability_approx']: {self.reliability}.")
        if not self.converged:
            why = "was stopped early" if self.interrupted else "did not converge"
            notes.append(f"PCG {why}: accuracy {self.accuracy:.3e} > tol {self.tol:.0e}; the solutions "
                         "are an intermediate iterate (pass the results as warm_start to continue).")
        return notes


# --------------------------------------------------------------------------------------
# a sparse design from factor codes (until design.py builds sparse X)
# --------------------------------------------------------------------------------------


def _codes(values: Any, levels: pd.Index | None = None) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of labels and the level index (sorted labels unless ``levels`` is given).

    Labels are compared as normalised strings (``12``, ``"12"`` and ``12.0`` are one
    label); exact string matches are looked up directly, so string IDs cost one hash
    lookup per record.
    """
    from .labels import normalize_labels

    ser = pd.Series(values)
    if ser.isna().any():
        raise DataError("factor columns contain missing values")
    if levels is not None:
        index = pd.Index(levels)
        if pd.api.types.is_integer_dtype(ser.dtype):
            pos = index.get_indexer(normalize_labels(ser.drop_duplicates()))
            lookup = pd.Series(pos, index=ser.drop_duplicates().to_numpy())
            pos = lookup.reindex(ser.to_numpy()).to_numpy()
        else:
            pos = index.get_indexer(ser.to_numpy(dtype=object))
            miss = pos < 0
            if miss.any():  # not literally equal: try the normalised label
                odd = ser[miss]
                uniq = odd.drop_duplicates()
                found = pd.Series(index.get_indexer(normalize_labels(uniq, what="levels")), index=uniq.to_numpy())
                pos[miss] = found.reindex(odd.to_numpy()).to_numpy()
        pos = np.asarray(pos, dtype=np.int64)
        if (pos < 0).any():
            missing = pd.unique(ser[pos < 0].to_numpy())
            raise CovarianceError(
                f"{len(missing)} level(s) are not in the structure (pedigree or matrix labels): "
                f"{list(missing[:10])}"
            )
        return pos, pd.Index(index, dtype=object)
    codes, uniques = pd.factorize(ser, sort=False)
    labs = normalize_labels(pd.Index(uniques), what="levels")
    if pd.api.types.is_integer_dtype(ser.dtype) or pd.api.types.is_float_dtype(ser.dtype):
        order = np.argsort(np.asarray(uniques, dtype=float), kind="stable")
    else:
        order = np.argsort(np.asarray(labs, dtype=object), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[codes].astype(np.int64), pd.Index(np.asarray(labs, dtype=object)[order], dtype=object)


def design_from_codes(
    data: pd.DataFrame,
    response: str,
    *,
    fixed: Sequence[str] = (),
    covariates: Sequence[str] = (),
    random: dict[str, pd.Index | None] | None = None,
    weights: str | None = None,
) -> Any:
    """A :class:`~mixedblup.design.Design` with a *sparse* X, built from factor codes.

    The formula-free path for large data (``y ~ 0 + f1 + f2 + x + (1|g1) + (1|g2)``):
    the first factor gets all its levels, later factors drop their first level,
    covariates enter as they are, and an intercept is added when there is no factor.
    Levels are sorted labels (as formulaic names them: ``"f1[level]"``).  No rank
    check beyond that coding is made.

    Parameters
    ----------
    data : pandas.DataFrame
    response : str
    fixed : sequence of str
        Categorical fixed effects (e.g. ``["herd_year"]``).
    covariates : sequence of str
        Numeric fixed covariates.
    random : dict
        Grouping column -> levels of its structure (e.g. ``pedigree.ids``) or ``None``
        (observed levels); each gives an intercept-only term ``(1 | column)``.
    weights : str, optional
        Column of precision weights.

    Returns
    -------
    Design
    """
    from .design import Design, TermDesign
    from .formula import RandomTerm

    random = dict(random or {})
    y = data[response].to_numpy(dtype=float)
    n = len(y)
    if not np.isfinite(y).all():
        raise DataError(f"response {response!r} has missing or non-finite values")
    blocks: list[sp.csr_matrix] = []
    names: list[str] = []
    if not fixed:
        blocks.append(sp.csr_matrix(np.ones((n, 1))))
        names.append("(Intercept)")
    for i, col in enumerate(fixed):
        codes, labs = _codes(data[col].to_numpy())
        start = 0 if i == 0 else 1
        m = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, len(labs)))[:, start:]
        blocks.append(m)
        names.extend(f"{col}[{lab}]" for lab in labs[start:])
    for col in covariates:
        blocks.append(sp.csr_matrix(data[col].to_numpy(dtype=float).reshape(n, 1)))
        names.append(col)
    X = _csr(sp.hstack(blocks, format="csr"))
    terms = []
    for col, levels in random.items():
        codes, labs = _codes(data[col].to_numpy(), levels)
        Z = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, len(labs)))
        n_obs = int(np.count_nonzero(np.bincount(codes, minlength=len(labs))))
        terms.append(TermDesign(col, RandomTerm("1", (col,)), ("(Intercept)",), labs, Z, n_obs, None))
    w = None if weights is None else data[weights].to_numpy(dtype=float)
    return Design(y, X, tuple(names), np.ones(len(names), dtype=bool), tuple(terms), data.index,
                  pd.Index([]), response, None, w)
