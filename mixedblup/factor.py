"""Factorising the symmetric positive-definite coefficient matrix of the MME.

One interface, :class:`Factor` (``solve``, ``logdet`` and selected blocks of the
inverse), over several back ends:

* ``"dense"``   -- LAPACK Cholesky of the dense matrix (small systems);
* ``"schur"``   -- a diagonal block (a large random term with independent levels, e.g.
  the biggest factor of a crossed design) is eliminated exactly and the Schur
  complement onto the remaining equations is factorised densely or sparsely
  (the block structure MixedModels.jl exploits);
* ``"cholmod"`` -- CHOLMOD through scikit-sparse, if installed (optional accelerator);
* ``"ldl"``     -- a sparse ``L D L'`` compiled with numba (:mod:`mixedblup.selinv`) against a
  symbolic analysis (approximate-minimum-degree ordering, elimination tree, pattern of
  ``L``) done once per sparsity pattern; its selected inversion gives the diagonal
  blocks of ``C^-1`` (PEV) and the traces REML derivatives need (the default for large
  sparse systems without CHOLMOD);
* ``"splu"``    -- scipy's SuperLU in symmetric mode (always available).

``factorize(C, "auto", eliminate=...)`` picks among them by structure and size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._blas import blas_threads, small_kernel_threads
from .errors import EstimationError

__all__ = ["Factor", "factorize", "BACKENDS", "DENSE_MAX"]

#: Systems (or Schur complements) up to this order are factorised densely by default.
DENSE_MAX = 2500

#: Largest Schur complement that is still factorised densely after an elimination.
SCHUR_DENSE_MAX = 6000

BACKENDS = ("auto", "dense", "schur", "ldl", "splu", "cholmod")

_SINGULAR = (
    "the mixed model equations are singular (not positive definite); a fixed effect may be "
    "confounded with a random term, or a variance ratio is extreme"
)


def _cholmod() -> Any | None:
    try:  # optional accelerator
        from sksparse import cholmod  # type: ignore[import-not-found]
    except Exception:  # pragma: no cover - depends on the environment
        return None
    return cholmod


def _units(n: int, cols: np.ndarray) -> np.ndarray:
    unit = np.zeros((n, len(cols)))
    unit[cols, np.arange(len(cols))] = 1.0
    return unit


class Factor:
    """A factorisation of a symmetric positive-definite matrix ``C``.

    Build one with :func:`factorize`.  Subclasses implement ``solve`` and may
    override the inverse-block helpers with faster versions.

    Attributes
    ----------
    backend : str
        Name of the back end.
    n : int
        Order of ``C``.
    """

    backend = "abstract"

    def __init__(self, n: int, logdet: float) -> None:
        self.n = n
        self._logdet = logdet

    def solve(self, rhs: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Return ``C^-1 rhs`` (``rhs`` a vector or a matrix)."""
        raise NotImplementedError

    def logdet(self) -> float:
        """``log|C|``."""
        return self._logdet

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        """``C^-1[rows][:, cols]``, by solving for unit vectors in chunks."""
        cols = np.asarray(cols, dtype=np.int64)
        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), len(cols)))
        for start in range(0, len(cols), chunk):
            c = cols[start: start + chunk]
            out[:, start: start + len(c)] = self.solve(_units(self.n, c))[rows]
        return out

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Diagonal blocks of ``C^-1`` for a partition into consecutive blocks.

        Parameters
        ----------
        starts, sizes : numpy.ndarray
            For every index ``i`` of ``C``: the first index and the size of the block
            that contains ``i``.

        Returns
        -------
        numpy.ndarray
            ``out[i, m] = C^-1[starts[i] + m, i]`` for ``m < sizes[i]`` (NaN beyond).
        """
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        for first in range(0, self.n, chunk):
            c = np.arange(first, min(first + chunk, self.n))
            sol = self.solve(_units(self.n, c))
            _gather(out, sol, c, starts, sizes)
        return out


def _gather(out: np.ndarray, sol: np.ndarray, cols: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> None:
    """Copy ``sol[starts[c] + m, j]`` (``sol[:, j]`` is column ``cols[j]``) into ``out[c, m]``."""
    for m in range(out.shape[1]):
        ok = m < sizes[cols]
        j = np.nonzero(ok)[0]
        out[cols[j], m] = sol[starts[cols[j]] + m, j]


class DenseFactor(Factor):
    """LAPACK Cholesky factor of a dense matrix."""

    backend = "dense"

    def __init__(self, C: np.ndarray) -> None:
        try:
            with blas_threads(small_kernel_threads(len(C))):
                low = sla.cholesky(C, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise EstimationError(_SINGULAR) from None
        diag = np.diag(low)
        if not (diag > 0).all() or not np.isfinite(diag).all():
            raise EstimationError(_SINGULAR)
        super().__init__(len(C), 2.0 * float(np.log(diag).sum()))
        self._low = low
        self._inverse: np.ndarray | None = None

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        with blas_threads(small_kernel_threads(self.n)):
            return sla.cho_solve((self._low, True), rhs, check_finite=False)

    def inverse(self) -> np.ndarray:
        """The full inverse (computed once)."""
        if self._inverse is None:
            with blas_threads(small_kernel_threads(self.n)):
                self._inverse = sla.cho_solve((self._low, True), np.eye(self.n), check_finite=False)
        return self._inverse

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        inv = self.inverse()
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        return inv[np.ix_(rows, np.asarray(cols))]

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        _gather(out, self.inverse(), np.arange(self.n), starts, sizes)
        return out


class SparseLUFactor(Factor):
    """SuperLU in symmetric mode (no pivoting off the diagonal): ``log|C| = sum log U_ii``."""

    backend = "splu"

    def __init__(self, C: sp.csc_matrix) -> None:
        try:
            lu = spla.splu(C, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError:
            raise EstimationError(_SINGULAR) from None
        du = lu.U.diagonal()
        if (du <= 0).any() or not np.isfinite(du).all():
            raise EstimationError(_SINGULAR)
        super().__init__(C.shape[0], float(np.log(du).sum()))
        self._lu = lu

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._lu.solve(rhs if rhs.ndim == 1 else np.asfortranarray(rhs))


class CholmodFactor(Factor):
    """CHOLMOD supernodal Cholesky (scikit-sparse)."""

    backend = "cholmod"

    def __init__(self, C: sp.csc_matrix) -> None:
        cholmod = _cholmod()
        if cholmod is None:
            raise ValueError("backend='cholmod' needs scikit-sparse (pip install scikit-sparse)")
        try:
            f = cholmod.cholesky(C)
        except Exception:  # CholmodNotPositiveDefiniteError
            raise EstimationError(_SINGULAR) from None
        super().__init__(C.shape[0], float(f.logdet()))
        self._f = f

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._f(rhs)


class SchurFactor(Factor):
    """Exact elimination of a diagonal block, then a factor of the Schur complement.

    With ``C`` permuted to ``[[D, B'], [B, E]]`` (``D`` diagonal):
    ``S = E - B D^-1 B'``, ``log|C| = sum log D + log|S|`` and
    ``C^-1 = [[D^-1 + W' S^-1 W, -W' S^-1], [-S^-1 W, S^-1]]`` with ``W = B D^-1``.
    """

    backend = "schur"

    def __init__(self, C: sp.csc_matrix, eliminate: np.ndarray, inner: str = "auto") -> None:
        n = C.shape[0]
        elim = np.asarray(eliminate, dtype=np.int64)
        mask = np.zeros(n, dtype=bool)
        mask[elim] = True
        rest = np.nonzero(~mask)[0]
        C = sp.csc_matrix(C)
        d = C.diagonal()[elim]
        if (d <= 0).any():
            raise EstimationError(_SINGULAR)
        B = C[rest][:, elim].tocsr()
        W = (B @ sp.diags(1.0 / d)).tocsr()
        E = C[rest][:, rest]
        S = E - W @ B.T
        self._elim, self._rest, self._d, self._W = elim, rest, d, W
        if inner == "auto":
            inner = "dense" if len(rest) <= SCHUR_DENSE_MAX else ("cholmod" if _cholmod() else "ldl")
        self._inner = _build(S.toarray() if inner == "dense" else sp.csc_matrix(S), inner)
        super().__init__(n, float(np.log(d).sum()) + self._inner.logdet())

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        r1 = rhs[self._elim]
        r2 = rhs[self._rest]
        d = self._d if rhs.ndim == 1 else self._d[:, None]
        x2 = self._inner.solve(r2 - self._W @ r1)
        x1 = r1 / d - self._W.T @ x2
        out = np.empty_like(rhs, dtype=float)
        out[self._elim] = x1
        out[self._rest] = x2
        return out

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        elim, rest = self._elim, self._rest
        if (sizes[elim] != 1).any():
            return super().block_diagonal(starts, sizes, chunk)
        # eliminated singletons: 1/d + w_j' S^-1 w_j
        diag = 1.0 / self._d
        Wt = self._W.tocsc()
        for first in range(0, len(elim), chunk):
            j = np.arange(first, min(first + chunk, len(elim)))
            Wj = Wt[:, j].toarray()
            diag[j] += np.einsum("ij,ij->j", Wj, self._inner.solve(Wj))
        out[elim, 0] = diag
        # blocks inside the rest: blocks of S^-1 (positions mapped into the rest)
        pos = np.full(self.n, -1)
        pos[rest] = np.arange(len(rest))
        inner = self._inner.block_diagonal(pos[starts[rest]], sizes[rest], chunk)
        out[rest, : inner.shape[1]] = inner
        return out

    def inverse_columns(self, cols: np.ndarray, rows: np.ndarray | None = None, chunk: int = 256) -> np.ndarray:
        pos = np.full(self.n, -1)
        pos[self._rest] = np.arange(len(self._rest))
        cols = np.asarray(cols, dtype=np.int64)
        rows_arr = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        if (pos[cols] >= 0).all() and (pos[rows_arr] >= 0).all():
            return self._inner.inverse_columns(pos[cols], pos[rows_arr], chunk)
        return super().inverse_columns(cols, rows, chunk)


class SparseLDLFactor(Factor):
    """Numba ``L D L'`` against a cached symbolic analysis, with selected inversion."""

    backend = "ldl"

    def __init__(self, C: sp.csc_matrix, symbolic: Any = None) -> None:
        from .selinv import LDLFactor

        C = sp.csc_matrix(C)
        sym = symbolic if symbolic is not None else symbolic_for(C)
        try:
            f = LDLFactor(C, sym)
        except ValueError:  # pattern outside the given analysis: analyse this one
            sym = symbolic_for(C)
            f = LDLFactor(C, sym)
        if not f.ok:
            raise EstimationError(_SINGULAR)
        super().__init__(C.shape[0], f.logdet())
        self._f = f

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self._f.solve(rhs)

    def inverse_entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``C^-1[rows[m], cols[m]]`` for pairs on the pattern of ``L + L'`` (NaN elsewhere)."""
        return self._f.inverse_entries(rows, cols)

    def block_diagonal(self, starts: np.ndarray, sizes: np.ndarray, chunk: int = 256) -> np.ndarray:
        width = int(sizes.max()) if len(sizes) else 0
        out = np.full((self.n, width), np.nan)
        idx = np.arange(self.n)
        for m in range(width):
            ok = m < sizes
            i = idx[ok]
            out[i, m] = self._f.inverse_entries(starts[i] + m, i)
        missing = np.zeros(self.n, dtype=bool)
        for m in range(width):
            missing |= (m < sizes) & np.isnan(out[:, m])
        cols = np.nonzero(missing)[0]
        for first in range(0, len(cols), chunk):  # pairs off the pattern (rare): solves
            c = cols[first: first + chunk]
            _gather(out, self.solve(_units(self.n, c)), c, starts, sizes)
        return out


_SYMBOLIC_CACHE: dict[tuple, Any] = {}


def symbolic_for(C: sp.spmatrix) -> Any:
    """Symbolic analysis of ``C``'s pattern, cached by the pattern (a few most recent)."""
    from .selinv import symbolic

    A = sp.csc_matrix(C)
    A.sort_indices()
    key = (A.shape[0], A.nnz, hash(A.indptr.tobytes()), hash(A.indices.tobytes()))
    sym = _SYMBOLIC_CACHE.get(key)
    if sym is None:
        sym = symbolic(A)
        if len(_SYMBOLIC_CACHE) >= 4:
            _SYMBOLIC_CACHE.pop(next(iter(_SYMBOLIC_CACHE)))
        _SYMBOLIC_CACHE[key] = sym
    return sym


def _build(C: sp.spmatrix | np.ndarray, backend: str, symbolic: Any = None) -> Factor:
    if backend == "dense":
        return DenseFactor(C.toarray() if sp.issparse(C) else np.asarray(C))
    if backend == "cholmod":
        return CholmodFactor(sp.csc_matrix(C))
    if backend == "ldl":
        return SparseLDLFactor(sp.csc_matrix(C), symbolic)
    return SparseLUFactor(sp.csc_matrix(C))


def factorize(C: sp.spmatrix | np.ndarray, backend: str = "auto", eliminate: np.ndarray | None = None,
              symbolic: Any = None) -> Factor:
    """Factorise a symmetric positive-definite matrix.

    Parameters
    ----------
    C : scipy.sparse matrix or numpy.ndarray
        The coefficient matrix.
    backend : {"auto", "dense", "schur", "ldl", "splu", "cholmod"}
        ``"auto"``: eliminate ``eliminate`` when given and worthwhile, otherwise dense
        for small systems, CHOLMOD when installed, else ``"ldl"``.
    eliminate : numpy.ndarray, optional
        Indices whose block of ``C`` is diagonal (a random term with independent
        levels and one coefficient); used by the ``"schur"`` back end.
    symbolic : selinv.Symbolic or callable, optional
        A symbolic analysis of a pattern containing ``C``'s (or a function returning
        one), for the ``"ldl"`` back end; default: analysed and cached by pattern.

    Returns
    -------
    Factor

    Raises
    ------
    EstimationError
        If ``C`` is not (numerically) positive definite.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    n = C.shape[0]
    has_block = eliminate is not None and len(eliminate) > 0
    if backend == "auto":
        if has_block and len(eliminate) >= 64 and n - len(eliminate) <= DENSE_MAX:
            backend = "schur"
        elif n <= DENSE_MAX:
            backend = "dense"
        else:
            backend = "cholmod" if _cholmod() is not None else "ldl"
    if backend == "schur":
        if not has_block:
            backend = "dense" if n <= DENSE_MAX else "ldl"
        else:
            return SchurFactor(sp.csc_matrix(C), np.asarray(eliminate))
    if backend == "ldl" and callable(symbolic):
        symbolic = symbolic()
    return _build(C, backend, symbolic)
